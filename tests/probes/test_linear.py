"""Linear probes recover a planted direction; logistic matches scikit-learn; the
batched, streamed and in-memory fits agree; torch scoring matches and is differentiable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from heldout.activations.sites import HookSite
from heldout.activations.store import write_store
from heldout.analysis.metrics import auroc
from heldout.errors import DataError, ProbeError
from heldout.probes import DiffMeansProbe, LDAProbe, LogisticProbe, fit_logistic_batched
from tests.probes.conftest import bayes_auroc, planted_linear

LINEAR = [LogisticProbe, DiffMeansProbe, LDAProbe]


@pytest.mark.parametrize("cls", LINEAR)
def test_recovers_planted_direction(cls, linear_data) -> None:  # type: ignore[no-untyped-def]
    X, y, X_test, y_test, u = linear_data
    probe = cls().fit(X, y)
    assert probe.direction @ u > 0.99
    # the AUROC the noise allows: Φ(shift·√2) for unit shift
    assert abs(auroc(y_test, probe.decision_function(X_test)) - bayes_auroc(1.0)) < 0.01
    assert probe.score(X_test, y_test) > 0.8


def test_logistic_matches_sklearn(linear_data) -> None:  # type: ignore[no-untyped-def]
    X, y, X_test, _, _ = linear_data
    for C in (1.0, 0.01):
        probe = LogisticProbe(C=C, tol=1e-6).fit(X, y)
        scaler = StandardScaler().fit(X)
        ref = LogisticRegression(C=C, tol=1e-8).fit(scaler.transform(X), y)
        np.testing.assert_allclose(probe.decision_function(X_test),
                                   ref.decision_function(scaler.transform(X_test)), atol=2e-3)


def test_lda_shrinkage_is_ledoit_wolf() -> None:
    rng = np.random.default_rng(0)
    A = rng.normal(size=(8, 8))
    X = rng.normal(size=(300, 8)) @ A  # correlated features: shrinkage strictly in (0, 1)
    y = rng.integers(0, 2, 300)
    X[y == 1] += 1.0
    probe = LDAProbe().fit(X, y)
    Z = X - np.where(y[:, None] == 1, X[y == 1].mean(0), X[y == 0].mean(0))
    Z /= np.sqrt((Z**2).sum(0) / (len(Z) - 2))
    assert 0 < probe.shrinkage_ < 1
    assert probe.shrinkage_ == pytest.approx(ledoit_wolf_shrinkage(Z, assume_centered=True))
    fixed = LDAProbe(shrinkage=0.0).fit(X, y)
    assert fixed.shrinkage_ == 0.0
    with pytest.raises(ProbeError, match="shrinkage"):
        LDAProbe(shrinkage=2).fit(X, y)


def test_batched_fit_equals_separate_fits() -> None:
    Xs = np.stack([planted_linear(500, shift=s, seed=0)[0] for s in (0.3, 1.0, 2.0)])
    y = planted_linear(500, seed=0)[1]
    W, b, mean, scale, _ = fit_logistic_batched(Xs, y, tol=1e-6, max_iter=500)
    for i in range(3):
        single = LogisticProbe(tol=1e-6, max_iter=500).fit(Xs[i], y)
        np.testing.assert_allclose(W[i] / scale[i], single.coef_, atol=2e-3)


@pytest.mark.parametrize("cls", LINEAR)
def test_fit_store_streams_to_the_same_probe(cls, tmp_path) -> None:  # type: ignore[no-untyped-def]
    X, y, _ = planted_linear(1000, seed=2)
    site = HookSite("resid_post", 1)
    store = write_store(tmp_path / "s", {site: X}, y, shard_rows=300)
    rows = np.arange(0, 1000, 2)
    streamed = cls().fit_store(store, site, rows=rows, chunk_rows=128)
    in_memory = cls().fit(X[rows], y[rows])
    atol = 2e-3 if cls is LogisticProbe else 1e-5  # float32 sums in another order
    np.testing.assert_allclose(streamed.coef_, in_memory.coef_, atol=atol)
    assert streamed.intercept_ == pytest.approx(in_memory.intercept_, abs=atol)


@pytest.mark.parametrize("cls", LINEAR)
def test_large_offsets_do_not_cancel(cls, linear_data) -> None:  # type: ignore[no-untyped-def]
    """Residual streams have features whose mean dwarfs their spread."""
    X, y, X_test, _, u = linear_data
    offset = np.float32(1000.0) * np.random.default_rng(0).normal(size=X.shape[1]).astype(
        np.float32)
    probe = cls().fit(X + offset, y)
    assert probe.direction @ u > 0.99
    np.testing.assert_allclose(probe.decision_function(X_test + offset),
                               cls().fit(X, y).decision_function(X_test), atol=0.05)


def test_fit_store_rejects_bad_stores(tmp_path) -> None:  # type: ignore[no-untyped-def]
    X, y, _ = planted_linear(100, seed=2)
    site = HookSite("resid_post", 0)
    one_class = write_store(tmp_path / "a", {site: X}, np.zeros(100, dtype=int))
    with pytest.raises(DataError, match="one class"):
        LogisticProbe().fit_store(one_class, site)
    X[7, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        DiffMeansProbe().fit_store(write_store(tmp_path / "b", {site: X}, y), site)


@pytest.mark.parametrize("cls", LINEAR)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_logits_match_and_flow_into_acts_only(cls, dtype, linear_data) -> None:  # type: ignore[no-untyped-def]
    X, y, X_test, _, _ = linear_data
    probe = cls().fit(X, y)
    acts = torch.tensor(X_test[:12].reshape(3, 4, -1), dtype=dtype, requires_grad=True)
    logits = probe.torch_logits(acts)
    assert logits.shape == (3, 4) and logits.dtype == dtype
    np.testing.assert_allclose(logits.detach().numpy().ravel(),
                               probe.decision_function(X_test[:12]), rtol=1e-4, atol=1e-4)
    logits.sum().backward()
    np.testing.assert_allclose(acts.grad[0, 0].numpy(), probe.coef_, rtol=1e-5)
    with pytest.raises(ProbeError, match="expecting 16 features"):
        probe.torch_logits(acts[..., :3])
