"""MLP and per-token probes solve planted cases that linear (mean-pooled) probes cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heldout.analysis.metrics import auroc
from heldout.errors import DataError, ProbeError
from heldout.probes import AttentionProbe, LogisticProbe, MLPProbe, TokenLinearProbe, pad_tokens
from heldout.probes.base import TokenTorchScorer, TorchScorer
from tests.probes.conftest import planted_tokens, planted_xor


def test_mlp_solves_xor_where_linear_fails() -> None:
    X, y = planted_xor(1000, seed=0)
    X_test, y_test = planted_xor(1000, seed=1)
    linear = LogisticProbe().fit(X, y)
    mlp = MLPProbe(hidden=16, lr=0.03, batch_size=128).fit(X, y)
    assert auroc(y_test, linear.decision_function(X_test)) < 0.6
    assert auroc(y_test, mlp.decision_function(X_test)) > 0.95
    assert mlp.n_epochs_ <= mlp.max_epochs


@pytest.fixture(scope="module")
def token_data():  # type: ignore[no-untyped-def]
    return planted_tokens(600, seed=0), planted_tokens(400, seed=1)


def test_attention_finds_the_key_token(token_data) -> None:  # type: ignore[no-untyped-def]
    (X, y), (X_test, y_test) = token_data
    attn = AttentionProbe().fit(X, y)
    assert auroc(y_test, attn.decision_function(X_test)) > 0.97
    # the same signal is invisible to a linear probe on mean-pooled tokens
    pooled = LogisticProbe().fit(np.nanmean(X, 1), y)
    assert auroc(y_test, pooled.decision_function(np.nanmean(X_test, 1))) < 0.6
    assert auroc(y_test, TokenLinearProbe("mean").fit(X, y).decision_function(X_test)) < 0.6


def test_token_max_catches_a_single_token_signal() -> None:
    """One token among up to 8 carries the signal: max aggregation beats mean."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(800, 8, 6)).astype(np.float32)
    y = rng.integers(0, 2, 800)
    X[np.flatnonzero(y), rng.integers(0, 4, int(y.sum())), 0] += 4.0
    X[:400, 6:] = np.nan
    tr, te = slice(0, 600), slice(600, None)
    aucs = {agg: auroc(y[te], TokenLinearProbe(agg).fit(X[tr], y[tr]).decision_function(X[te]))
            for agg in ("mean", "max")}
    assert aucs["max"] > 0.97 and aucs["max"] > aucs["mean"] + 0.03


@pytest.mark.parametrize("probe", [AttentionProbe(max_epochs=20), TokenLinearProbe("mean"),
                                   TokenLinearProbe("max")], ids=repr)
def test_token_torch_logits_use_the_mask(probe, token_data) -> None:  # type: ignore[no-untyped-def]
    (X, y), (X_test, _) = token_data
    probe.fit(X[:200], y[:200])
    assert isinstance(probe, TokenTorchScorer)
    mask = ~np.isnan(X_test[:10]).all(2)
    acts = torch.tensor(np.nan_to_num(X_test[:10]) + 5.0 * ~mask[..., None],  # junk at padding
                        dtype=torch.float64, requires_grad=True)
    logits = probe.torch_logits(acts, torch.tensor(mask))
    np.testing.assert_allclose(logits.detach().numpy(), probe.decision_function(X_test[:10]),
                               rtol=1e-4, atol=1e-4)
    logits.sum().backward()
    assert acts.grad is not None and float(acts.grad[torch.tensor(~mask)].abs().sum()) == 0.0
    with pytest.raises(ProbeError, match="mask"):
        probe.torch_logits(acts, torch.tensor(mask)[:, :3])


def test_mlp_torch_logits() -> None:
    X, y = planted_xor(300)
    mlp = MLPProbe(max_epochs=5).fit(X, y)
    assert isinstance(mlp, TorchScorer)
    acts = torch.tensor(X[:5], requires_grad=True)
    out = mlp.torch_logits(acts)
    np.testing.assert_allclose(out.detach().numpy(), mlp.decision_function(X[:5]), atol=1e-5)
    out.sum().backward()
    assert acts.grad is not None and all(p.grad is None for p in mlp.params_.values())


def test_pad_tokens_and_empty_rows() -> None:
    values = np.arange(12, dtype=np.float32).reshape(6, 2)
    padded = pad_tokens(values, np.array([0, 1, 4, 6]))
    assert padded.shape == (3, 3, 2)
    np.testing.assert_array_equal(padded[1], values[1:4])
    assert np.isnan(padded[0, 1:]).all()
    np.testing.assert_array_equal(pad_tokens(values, np.array([0, 1, 4, 6]), 2)[1], values[2:4])
    with pytest.raises(DataError, match="at least one token"):
        pad_tokens(values, np.array([0, 0, 6]))
    X = np.full((2, 3, 2), np.nan, dtype=np.float32)
    X[0, 0] = 1.0
    with pytest.raises(DataError, match="no tokens"):
        TokenLinearProbe().fit(X, np.array([0, 1]))
