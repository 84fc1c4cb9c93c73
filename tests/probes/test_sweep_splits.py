"""A split with one label only is refused before any fitting, by a message that names
the split (not "y has only one class", which blames the data as a whole)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from heldout.activations.sites import HookSite
from heldout.activations.store import write_store
from heldout.cli import main
from heldout.errors import DataError
from heldout.probes import sweep as sweep_module
from heldout.probes.sweep import sweep


def _store(path: Path, labels: np.ndarray, splits: list[str] | None):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(len(labels), 4)).astype(np.float32)
    return write_store(path, {HookSite("resid_post", 0): X}, labels, splits=splits)


@pytest.fixture()
def one_class_test(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The README tour's old bug: labels alternate, test = every 4th row -> all label 0."""
    n = 24
    labels = np.arange(n) % 2
    splits = ["test" if i % 4 == 0 else "train" for i in range(n)]
    return _store(tmp_path / "store", labels, splits)


def _no_fitting(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a probe was fitted before the split check")

    monkeypatch.setattr(sweep_module, "fit_logistic_batched", refuse)
    monkeypatch.setattr(sweep_module, "make_probe", lambda name, params=None: None)


def test_sweep_names_the_one_label_test_split_before_fitting(
        one_class_test, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    _no_fitting(monkeypatch)
    with pytest.raises(DataError) as info:
        sweep(one_class_test, probes=["logistic", "mlp"])
    err = info.value
    assert err.cause == ("the store's 'test' split has only label 0 (n=6): AUROC and "
                         "recall need both labels")
    assert "--test-split" in err.fix and "stratified" in err.fix


def test_sweep_names_the_one_label_train_split(tmp_path: Path) -> None:
    labels = np.array([1, 1, 1, 1, 0, 1, 0, 1])
    splits = ["train"] * 4 + ["test"] * 4
    with pytest.raises(DataError, match=r"'train' split has only label 1 \(n=4\): a probe "
                                        r"needs both labels to fit"):
        sweep(_store(tmp_path / "s", labels, splits))


def test_sweep_on_a_store_with_one_label_blames_the_store(tmp_path: Path) -> None:
    store = _store(tmp_path / "s", np.zeros(12, int), ["train"] * 8 + ["test"] * 4)
    with pytest.raises(DataError, match=r"the store has only one class, label 0 \(n=12\)"):
        sweep(store)


def test_sweep_without_split_column_names_the_seeded_split(tmp_path: Path) -> None:
    # one positive row: the seeded 30% stratified split leaves it in train
    store = _store(tmp_path / "s", np.array([0] * 9 + [1]), None)
    with pytest.raises(DataError, match="seeded 'test' split has only label 0") as info:
        sweep(store)
    assert "at least 2 rows of each label" in info.value.fix


def test_cli_sweep_and_fit_name_the_split_and_write_nothing(
        one_class_test, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "sweep"
    assert main(["sweep", "--store", str(one_class_test.path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "heldout sweep: error: the store's 'test' split has only label 0 (n=6)" in err
    assert "fix: " in err and not out.exists()
    probe = tmp_path / "p.safetensors"
    assert main(["fit", "--store", str(one_class_test.path), "--site", "resid_post:0",
                 "--split", "test", "--out", str(probe)]) == 2
    err = capsys.readouterr().err
    assert "the store's 'test' split has only label 0 (n=6): a probe needs both" in err
    assert "--split" in err and not probe.exists()


def test_a_store_whose_splits_hold_both_labels_sweeps(tmp_path: Path) -> None:
    n = 24
    labels = np.arange(n) % 2
    splits = ["test" if i % 4 in (0, 1) else "train" for i in range(n)]
    result = sweep(_store(tmp_path / "s", labels, splits), probes=["logistic", "diffmeans"],
                   n_resamples=10)
    assert list(result.table.probe) == ["logistic", "diffmeans"]
    assert (result.table.n_test == 12).all()
