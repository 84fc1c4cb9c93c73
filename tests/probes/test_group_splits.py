"""Paired datasets: seeded splits keep each group on one side (a leaky split scores
below chance), and `heldout fit` sets its threshold on negatives it never fitted on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from heldout.activations.sites import HookSite
from heldout.activations.store import write_store
from heldout.analysis.metrics import threshold_at_fpr
from heldout.cli import main
from heldout.errors import DataError
from heldout.probes import load_probe
from heldout.probes.splits import calibration_holdout, seeded_split
from heldout.probes.sweep import make_probe, sweep
from tests.probes.conftest import bayes_auroc

SITE = HookSite("resid_post", 0)


def planted_pairs(n_pairs: int, d: int = 32, shift: float = 0.5, offset: float = 3.0,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Each pair (one row label 1, one label 0) shares a large offset orthogonal to the
    signal direction e0, like the true and false statement about one city. The best
    AUROC is bayes_auroc(shift)."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(size=(n_pairs, d)) * offset
    offsets[:, 0] = 0
    pair = np.repeat(np.arange(n_pairs), 2)
    y = np.tile([1, 0], n_pairs)
    X = offsets[pair] + rng.normal(size=(2 * n_pairs, d))
    X[:, 0] += (2 * y - 1) * shift
    return X.astype(np.float32), y, [f"city{i}" for i in pair]


def test_seeded_split_keeps_groups_whole_and_stratifies() -> None:
    _, y, groups = planted_pairs(100)
    train, test = seeded_split(y, groups, seed=3, test_fraction=0.3)
    g = np.array(groups)
    assert not set(g[train]) & set(g[test])
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(200))
    assert (y[test] == 1).sum() == (y[test] == 0).sum() == 30


def test_group_aware_sweep_recovers_the_signal_a_leaky_split_inverts(tmp_path: Path) -> None:
    X, y, groups = planted_pairs(150)
    grouped = write_store(tmp_path / "g", {SITE: X}, y, groups=groups)
    leaky = write_store(tmp_path / "n", {SITE: X}, y)  # same rows, no groups
    kw = dict(probes=["logistic", "diffmeans"], n_resamples=20, seed=0)
    good = sweep(grouped, **kw).table.set_index("probe").auroc  # type: ignore[arg-type]
    bad = sweep(leaky, **kw).table.set_index("probe").auroc  # type: ignore[arg-type]
    assert abs(good["logistic"] - bayes_auroc(0.5)) < 0.08  # 0.76
    assert good["diffmeans"] > 0.6
    assert bad["diffmeans"] < 0.45  # below chance: the pair's other half was trained on


def test_too_few_groups_are_refused_before_fitting(tmp_path: Path) -> None:
    X, y, _ = planted_pairs(20)
    conditions = ["pressure" if i < 20 else "control" for i in range(40)]
    y = np.array([1] * 20 + [0] * 20)  # each condition has one label
    store = write_store(tmp_path / "s", {SITE: X}, y, groups=conditions)
    with pytest.raises(DataError, match=r"2 group\(s\) are too few .* the seeded "
                                        r"'test' side would hold no rows") as info:
        sweep(store, probes=["diffmeans"])
    assert "--group-by city" in str(info.value)


def test_calibration_holdout_never_shares_a_group_with_fitted_rows() -> None:
    _, y, groups = planted_pairs(100)
    rows = np.arange(0, 160)
    fit, held = calibration_holdout(y, groups, rows, seed=1, fraction=0.25)
    g = np.array(groups)
    assert (y[held] == 0).all() and len(held) == 20
    assert not set(g[held]) & set(g[fit]) and set(fit) | set(held) <= set(rows)


def test_fit_threshold_from_held_out_negatives_keeps_its_fpr(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """d=256 from 1,200 rows: the probe overfits, so its own training negatives score
    far lower than unseen ones; a threshold set on them lets ~9% of new negatives through."""
    rng = np.random.default_rng(0)
    n_train, n_test, d = 1200, 3000, 256
    y = rng.integers(0, 2, n_train + n_test)
    X = rng.normal(size=(n_train + n_test, d)).astype(np.float32)
    X[:, 0] += (2 * y - 1) * 0.5
    splits = ["train"] * n_train + ["test"] * n_test
    store = write_store(tmp_path / "s", {SITE: X}, y, splits=splits)
    out = tmp_path / "p.safetensors"
    assert main(["fit", "--store", str(store.path), "--site", "resid_post:0",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "negatives of split 'train' (not trained on)" in said
    probe = load_probe(out)
    assert "held-out negatives of split 'train' (not trained on)" in probe.meta_.calibration
    test_neg = X[n_train:][y[n_train:] == 0]
    assert 0.002 < (probe.decision_function(test_neg) > probe.threshold_).mean() < 0.03

    old = make_probe("logistic").fit(X[:n_train], y[:n_train])  # the old way, for contrast
    t = threshold_at_fpr(old.decision_function(X[:n_train][y[:n_train] == 0]), 0.01)
    assert (old.decision_function(test_neg) > t).mean() > 0.05
