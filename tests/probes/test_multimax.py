"""MultiMax and rolling-window attention: a signal on one token among many is found and
not diluted by length; padding, save/load and the per-token contract hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone

from heldout.analysis.metrics import auroc
from heldout.errors import DataError, ProbeError
from heldout.probes import (
    MultiMaxProbe,
    RollingAttentionProbe,
    TokenLinearProbe,
    load_probe,
    save_probe,
)
from heldout.probes.base import TokenTorchScorer
from tests.probes.conftest import planted_tokens

FAST = {"lr": 0.03, "max_epochs": 60}


def planted_needle(n: int, T: int = 32, d: int = 8, shift: float = 5.0, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label 1: ONE random real token carries ``shift`` along a fixed direction u; the
    rest is N(0, I) noise. Rows hold T/2..T real tokens, then NaN padding. The best
    score is ``max_t x_t · u``; its mean over tokens is diluted by length.
    Returns X (n, T, d) float32, y (n,), u (d,)."""
    rng = np.random.default_rng(seed)
    u = np.random.default_rng(100).normal(size=d)  # same direction for every seed
    u /= np.linalg.norm(u)
    X = rng.normal(size=(n, T, d)).astype(np.float32)
    y = rng.integers(0, 2, n)
    for i in range(n):
        length = int(rng.integers(T // 2, T + 1))
        if y[i]:
            X[i, rng.integers(0, length)] += shift * u
        X[i, length:] = np.nan
    return X, y, u


@pytest.fixture(scope="module")
def needle():  # type: ignore[no-untyped-def]
    X, y, u = planted_needle(400, seed=0)
    fitted = {cls: cls(**FAST).fit(X, y) for cls in (MultiMaxProbe, RollingAttentionProbe)}
    return X, y, u, fitted


def test_one_token_signal_is_not_diluted(needle) -> None:  # type: ignore[no-untyped-def]
    X, y, u, fitted = needle
    X_test, y_test, _ = planted_needle(400, seed=1)
    X_long, y_long, _ = planted_needle(400, T=256, seed=2)  # 8x longer than in training
    mean = TokenLinearProbe("mean").fit(X, y)
    oracle = auroc(y_long, np.nanmax(X_long @ u, axis=1))
    for probe in fitted.values():
        assert auroc(y_test, probe.decision_function(X_test)) > 0.97
        assert auroc(y_long, probe.decision_function(X_long)) > oracle - 0.02
    assert auroc(y_test, mean.decision_function(X_test)) < 0.85
    assert auroc(y_long, mean.decision_function(X_long)) < 0.7


def test_multimax_heads_find_the_planted_direction(needle) -> None:  # type: ignore[no-untyped-def]
    *_, u, fitted = needle
    probe = fitted[MultiMaxProbe]
    w = probe.params_["w"].numpy() / probe.params_["scale"].numpy()  # in raw units
    cos = w @ u / np.linalg.norm(w, axis=1)
    assert probe.params_["w"].shape == (4, 8) and cos.max() > 0.9


@pytest.mark.parametrize("cls", [MultiMaxProbe, RollingAttentionProbe],
                         ids=lambda c: c.__name__)
def test_torch_logits_match_decision_function(cls, needle) -> None:  # type: ignore[no-untyped-def]
    X, *_, fitted = needle
    probe = fitted[cls]
    assert isinstance(probe, TokenTorchScorer) and probe.token_level
    X = X[:12]
    mask = ~np.isnan(X).all(2)
    acts = torch.tensor(np.nan_to_num(X) + 5.0 * ~mask[..., None],  # junk at padding
                        dtype=torch.float64, requires_grad=True)
    logits = probe.torch_logits(acts, torch.tensor(mask))
    np.testing.assert_allclose(logits.detach().numpy(), probe.decision_function(X),
                               rtol=1e-5, atol=1e-5)
    logits.sum().backward()
    assert acts.grad is not None and float(acts.grad[torch.tensor(mask)].abs().sum()) > 0
    assert float(acts.grad[torch.tensor(~mask)].abs().sum()) == 0.0
    assert all(p.grad is None for p in probe.params_.values())
    # masked positions before the response (a prompt) change nothing either
    shifted = torch.cat([torch.randn(12, 3, 8, dtype=torch.float64), acts.detach()], 1)
    shifted_mask = torch.cat([torch.zeros(12, 3, dtype=torch.bool), torch.tensor(mask)], 1)
    np.testing.assert_allclose(probe.torch_logits(shifted, shifted_mask).numpy(),
                               logits.detach().numpy(), rtol=1e-10, atol=1e-10)
    with pytest.raises(ProbeError, match="mask"):
        probe.torch_logits(acts, torch.tensor(mask)[:, :3])
    with pytest.raises(ProbeError, match="expecting"):
        probe.torch_logits(acts[:, 0], torch.tensor(mask))


@pytest.mark.parametrize("cls", [MultiMaxProbe, RollingAttentionProbe],
                         ids=lambda c: c.__name__)
def test_padding_never_changes_the_score(cls, needle) -> None:  # type: ignore[no-untyped-def]
    X, *_, fitted = needle
    probe = fitted[cls]
    padded = np.concatenate([X[:50], np.full((50, 20, X.shape[2]), np.nan, np.float32)], 1)
    np.testing.assert_allclose(probe.decision_function(padded),
                               probe.decision_function(X[:50]), rtol=1e-12, atol=1e-12)


def test_rolling_window_is_attention_over_the_window() -> None:
    """Rows of at most ``window`` tokens are one window: plain attention pooling."""
    X, y = planted_tokens(120, T=4, d=6, seed=0)
    probe = RollingAttentionProbe(window=4, max_epochs=10).fit(X, y)
    p = {k: v.double().numpy() for k, v in probe.params_.items()}
    expected = []
    for row in X.astype(np.float64):
        z = (row[~np.isnan(row).all(1)] - p["mean"]) / p["scale"]
        a = np.exp(z @ p["q"] - (z @ p["q"]).max())
        expected.append((a / a.sum()) @ (z @ p["w"]) + p["b"][0])
    np.testing.assert_allclose(probe.decision_function(X), expected, rtol=1e-9, atol=1e-9)
    # a window of one token is the per-token read-out, max over tokens
    single = RollingAttentionProbe(window=1)
    single._set_state(probe.params_, {})  # the same weights, as load_probe sets them
    z = (np.nan_to_num(X).astype(np.float64) - p["mean"]) / p["scale"]
    tok = np.where(~np.isnan(X).all(2), z @ p["w"], -np.inf).max(1) + p["b"][0]
    np.testing.assert_allclose(single.decision_function(X), tok, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("probe", [MultiMaxProbe(heads=2, max_epochs=5),
                                   RollingAttentionProbe(window=3, max_epochs=5)],
                         ids=lambda p: type(p).__name__)
def test_save_load_clone_and_calibrate(probe, tmp_path) -> None:  # type: ignore[no-untyped-def]
    X, y = planted_tokens(80, d=6)
    twin = clone(probe)
    assert twin.get_params() == probe.get_params() and not hasattr(twin, "params_")
    probe.fit(X, y).calibrate(X[y == 0], fpr=0.1)
    assert (probe.decision_function(X[y == 0]) > probe.threshold_).mean() <= 0.1
    path = save_probe(probe, tmp_path / "p.safetensors", site="resid_post:2",
                      selection="tokens")
    loaded = load_probe(path)
    assert type(loaded) is type(probe) and loaded.get_params() == probe.get_params()
    np.testing.assert_array_equal(loaded.decision_function(X), probe.decision_function(X))
    assert loaded.threshold_ == probe.threshold_ and loaded.meta_.selection == "tokens"
    assert not hasattr(clone(loaded), "params_")


@pytest.mark.parametrize("cls", [MultiMaxProbe, RollingAttentionProbe],
                         ids=lambda c: c.__name__)
def test_bad_input_and_settings_say_the_fix(cls) -> None:  # type: ignore[no-untyped-def]
    X, y = planted_tokens(60, d=6)
    fitted = cls(max_epochs=2).fit(X, y)
    with pytest.raises(ProbeError, match=f"(?s)X has 4 features, but {cls.__name__}.*fix"):
        fitted.decision_function(X[:, :, :4])
    with pytest.raises(DataError, match="(?s)3-D X.*fix"):
        fitted.decision_function(X[:, 0])
    setting = "heads" if cls is MultiMaxProbe else "window"
    with pytest.raises(ProbeError, match=f"(?s){setting} must be a positive integer.*fix"):
        cls(**{setting: 0}).fit(X, y)
