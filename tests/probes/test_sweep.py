"""Sweeps find the planted layer; the CLI fits, sweeps and evaluates; bad input fails
before anything is written."""

from __future__ import annotations

import numpy as np
import pytest

from heldout.activations.sites import HookSite
from heldout.activations.store import write_store
from heldout.cli import main
from heldout.errors import ConfigError, DataError, ProbeError
from heldout.probes import load_probe
from heldout.probes.sweep import sweep
from tests.probes.conftest import planted_linear

SHIFTS = (0.0, 0.3, 0.6, 1.5)  # layer 3 carries the clearest signal


def _store(path, n=600, seed=0, splits=True, labels=None, model="m"):  # type: ignore[no-untyped-def]
    arrays, y = {}, None
    for layer, shift in enumerate(SHIFTS):
        X, y, _ = planted_linear(n, d=8, shift=shift, seed=seed)
        arrays[HookSite("resid_post", layer)] = X
    y = y if labels is None else labels
    split = ["train" if i % 3 else "test" for i in range(n)] if splits else None
    return write_store(path, arrays, y, splits=split, model_fingerprint=model, shard_rows=256)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("stores")
    return {"main": _store(root / "main"),
            "control": _store(root / "control", n=300, seed=5, labels=np.zeros(300, int)),
            "nosplit": _store(root / "nosplit", splits=False),
            "other": _store(root / "other", model="other-model"),
            "root": root}


def test_sweep_finds_the_planted_layer(stores, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = sweep(stores["main"], control=stores["control"], n_resamples=50)
    table = result.table
    assert len(table) == 4 * 3 and result.best_site == HookSite("resid_post", 3)
    by = table.set_index(["layer", "probe"])
    assert by.loc[(0, "logistic"), "auroc"] < 0.62 < by.loc[(3, "logistic"), "auroc"]
    assert (table.auroc_low <= table.auroc).all() and (table.auroc <= table.auroc_high).all()
    assert (table.n_control == 300).all() and (table.fit_seconds >= 0).all()
    assert result.probes["resid_post:3", "lda"].threshold_ == by.loc[(3, "lda"), "threshold"]
    from heldout.analysis.style import save_figure

    png = save_figure(result.plot(), tmp_path / "sweep.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_sweep_without_splits_partitions_by_seed(stores) -> None:  # type: ignore[no-untyped-def]
    a = sweep(stores["nosplit"], probes=["diffmeans"], n_resamples=20, seed=1)
    b = sweep(stores["nosplit"], probes=["diffmeans"], n_resamples=20, seed=1)
    same = a.table.drop(columns="fit_seconds").equals(b.table.drop(columns="fit_seconds"))
    assert same and a.table.n_test.iloc[0] == 180


def test_sweep_rejects_bad_input(stores) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="unknown probe"):
        sweep(stores["main"], probes=["svm"])
    with pytest.raises(ConfigError, match="split 'val'"):
        sweep(stores["main"], test_split="val")
    with pytest.raises(DataError, match="no benign"):
        sweep(stores["main"], control=_store(stores["root"] / "pos", n=30,
                                             labels=np.ones(30, int)))
    with pytest.raises(ConfigError, match="tokens"):
        sweep(stores["main"], probes=["attention"])


def test_cli_fit_sweep_evaluate(stores, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    main_store, control = str(stores["main"].path), str(stores["control"].path)
    probe_path = tmp_path / "probe.safetensors"
    assert main(["fit", "--store", main_store, "--site", "resid_post:3", "--probe", "lda",
                 "--control", control, "--out", str(probe_path)]) == 0
    probe = load_probe(probe_path)
    assert probe.meta_.site == "resid_post:3" and probe.meta_.model_fingerprint == "m"
    assert main(["fit", "--store", main_store, "--site", "resid_post:3",
                 "--out", str(tmp_path / "logistic.safetensors"), "--param", "C=0.5"]) == 0
    assert load_probe(tmp_path / "logistic.safetensors").C == 0.5
    out = tmp_path / "sweep"
    assert main(["sweep", "--store", main_store, "--control", control, "--out", str(out),
                 "--probes", "logistic,diffmeans"]) == 0
    assert (out / "sweep.csv").is_file() and (out / "sweep.png").is_file()
    csv = out / "metrics.csv"
    assert main(["evaluate", "--probe", str(probe_path), "--store", main_store,
                 "--split", "test", "--out", str(csv)]) == 0
    assert "auroc" in capsys.readouterr().out and csv.is_file()


def test_cli_errors_write_nothing(stores, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    probe_path = tmp_path / "p.safetensors"
    assert main(["fit", "--store", str(stores["main"].path), "--site", "resid_post:9",
                 "--out", str(probe_path)]) == 2
    assert "no site resid_post:9" in capsys.readouterr().err
    one_class = _store(tmp_path / "one", n=30, labels=np.zeros(30, int))
    assert main(["fit", "--store", str(one_class.path), "--site", "resid_post:0",
                 "--out", str(probe_path)]) == 2
    assert "one class" in capsys.readouterr().err and not probe_path.exists()
    assert main(["fit", "--store", str(stores["main"].path), "--site", "resid_post:0",
                 "--out", str(probe_path)]) == 0
    # a probe from model "m" on a store from another model: refused unless --any-model
    assert main(["evaluate", "--probe", str(probe_path), "--store",
                 str(stores["other"].path)]) == 2
    assert "model 'm'" in capsys.readouterr().err
    assert main(["evaluate", "--probe", str(probe_path), "--store",
                 str(stores["other"].path), "--any-model"]) == 0
    with pytest.raises(ProbeError, match="site"):
        from heldout.probes import check_probe
        check_probe(load_probe(probe_path), site="resid_post:1")


def test_sweep_on_a_tokens_store(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.probes.conftest import planted_tokens

    X, y = planted_tokens(300, d=6)
    mask = ~np.isnan(X).all(2)
    offsets = np.r_[0, np.cumsum(mask.sum(1))]
    store = write_store(tmp_path / "tok", {HookSite("resid_post", 1): X[mask]}, y,
                        selection="tokens", offsets=offsets)
    result = sweep(store, probes=["attention", "token_max", "logistic"], n_resamples=20)
    by = result.table.set_index("probe")
    assert by.loc["attention", "auroc"] > 0.9 > 0.65 > by.loc["logistic", "auroc"]
    assert result.best_probe == "attention"
