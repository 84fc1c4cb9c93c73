"""Transfer: probes fitted on one store read a planted direction in a store that shares
it and sit at chance on one that does not; mismatched stores are refused up front."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heldout.activations.sites import HookSite
from heldout.activations.store import write_store
from heldout.cli import main
from heldout.errors import DataError, StoreError
from heldout.probes.sweep import sweep
from heldout.probes.transfer import transfer
from tests.probes.conftest import bayes_auroc

D = 12
SHIFT = 1.0


def _store(path: Path, direction: int, n: int = 800, seed: int = 0, d: int = D,
           model: str = "m", labels: np.ndarray | None = None, splits: bool = True):  # type: ignore[no-untyped-def]
    """Layer 1 carries the label along feature ``direction``; layer 0 is noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n) if labels is None else labels
    noise = rng.normal(size=(n, d)).astype(np.float32)
    signal = rng.normal(size=(n, d)).astype(np.float32)
    signal[:, direction] += (2 * y - 1) * SHIFT
    split = ["train" if i % 3 else "test" for i in range(n)] if splits else None
    return write_store(path, {HookSite("resid_post", 0): noise,
                              HookSite("resid_post", 1): signal}, y, splits=split,
                       model_fingerprint=model)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("transfer")
    return {"cities": _store(root / "cities", 0),
            "animals": _store(root / "animals", 0, seed=1, splits=False),
            "other": _store(root / "other", 5, seed=2, splits=False), "root": root}


def test_transfer_reads_a_shared_direction_and_not_another(stores) -> None:  # type: ignore[no-untyped-def]
    result = transfer(stores["cities"], [stores["animals"], stores["other"]],
                      probes=["logistic", "diffmeans"], n_resamples=50)
    t = result.table.set_index(["probe", "test", "layer"])
    for probe in ("logistic", "diffmeans"):
        assert abs(t.loc[(probe, "cities (test split)", 1), "auroc"] - bayes_auroc(SHIFT)) < 0.04
        assert abs(t.loc[(probe, "animals", 1), "auroc"] - bayes_auroc(SHIFT)) < 0.04
        assert abs(t.loc[(probe, "other", 1), "auroc"] - 0.5) < 0.07
        assert abs(t.loc[(probe, "animals", 0), "auroc"] - 0.5) < 0.07
        # the threshold set on the cities' held-out negatives keeps its FPR on animals
        assert t.loc[(probe, "animals", 1), "fpr_at_threshold"] < 0.04
    assert "'test' split" in result.calibration and len(result.table) == 2 * 3 * 2
    # accuracy is the calibrated threshold's, on the named set
    probe = result.probes["resid_post:1", "logistic"]
    X, y = stores["animals"].read("resid_post:1"), stores["animals"].labels
    want = float(((probe.decision_function(X) > probe.threshold_) == y).mean())
    assert t.loc[("logistic", "animals", 1), "accuracy"] == pytest.approx(want)


def test_sweep_accuracy_is_at_the_calibrated_threshold(stores) -> None:  # type: ignore[no-untyped-def]
    result = sweep(stores["cities"], ["resid_post:1"], probes=["diffmeans"], n_resamples=10)
    store, probe = stores["cities"], result.probes["resid_post:1", "diffmeans"]
    test = np.array(store.splits) == "test"
    scores = probe.decision_function(store.read("resid_post:1")[test])
    want = float(((scores > probe.threshold_) == store.labels[test]).mean())
    assert result.table.accuracy.iloc[0] == pytest.approx(want)
    assert 0.6 < want < 0.9  # at 1% FPR most positives fall below the threshold


def test_mismatched_test_stores_are_refused_before_fitting(stores) -> None:  # type: ignore[no-untyped-def]
    root = stores["root"]
    cases = [(_store(root / "model", 0, n=60, model="another"), StoreError, "another model"),
             (_store(root / "wide", 0, n=60, d=D + 1), StoreError, "d_model 13 vs 12"),
             (_store(root / "onelabel", 0, n=60, labels=np.zeros(60, int)), DataError,
              "holds only label 0")]
    for store, error, match in cases:
        with pytest.raises(error, match=match):
            transfer(stores["cities"], [store])


def test_cli_transfer_and_the_sweep_alias(stores, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    args = ["--store", str(stores["cities"].path), "--test-store", str(stores["animals"].path),
            "--sites", "resid_post:0,1", "--probes", "diffmeans"]
    assert main(["transfer", *args, "--out", str(tmp_path / "t")]) == 0
    said = capsys.readouterr().out
    assert "thresholds at 1.0% FPR from the negatives of the 'test' split" in said
    table = pd.read_csv(tmp_path / "t" / "transfer.csv")
    assert set(table.test) == {"animals", "cities (test split)"} and len(table) == 4
    assert (tmp_path / "t" / "transfer.png").stat().st_size > 0
    assert main(["sweep", *args, "--out", str(tmp_path / "s")]) == 0
    again = pd.read_csv(tmp_path / "s" / "transfer.csv")
    pd.testing.assert_frame_equal(table, again)
    bad = ["transfer", "--store", str(stores["cities"].path), "--test-store",
           str(stores["other"].path), "--sites", "resid_post:9", "--out", str(tmp_path / "x")]
    assert main(bad) == 2 and not (tmp_path / "x").exists()
