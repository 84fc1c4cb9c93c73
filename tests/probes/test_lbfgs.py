"""The logistic solver's parts: compact L-BFGS equals the two-loop recursion, the numpy
and torch products agree, the line search finds the minimum along a line, the solver
fits alike on numpy arrays and torch tensors, and cache groups, per-site stopping and
the wide (unpreconditioned) path give the same fits."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch.nn import functional as F

from heldout.probes import batched, lbfgs
from tests.probes.conftest import planted_linear


def two_loop(S: np.ndarray, Y: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Textbook L-BFGS two-loop recursion (Nocedal & Wright, Algorithm 7.4)."""
    q, alphas = g.copy(), []
    for s, y in zip(S[::-1], Y[::-1]):
        alpha = (s @ q) / (s @ y)
        q -= alpha * y
        alphas.append(alpha)
    r = (S[-1] @ Y[-1]) / (Y[-1] @ Y[-1]) * q
    for s, y, alpha in zip(S, Y, alphas[::-1]):
        r += s * (alpha - (y @ r) / (s @ y))
    return r


LIBRARIES = [np.asarray, torch.as_tensor]  # the solver runs on either (numpy on CPU)


@pytest.mark.parametrize("array", LIBRARIES, ids=["numpy", "torch"])
def test_compact_history_equals_two_loop_recursion(array: Any) -> None:
    rng = np.random.default_rng(0)
    d, size = 12, 5
    A = rng.normal(size=(d, d))
    H = A @ A.T + d * np.eye(d)  # a convex quadratic: y = H s has s·y > 0
    S = rng.normal(size=(3, d))
    Y = S @ H
    memory = lbfgs._History(1, size, d, like=array(np.zeros(1)))  # float64
    for s, y in zip(S, Y):  # two empty slots stay in front, as early in a fit
        memory.add(array(s[None]), array(y[None]))
    g = rng.normal(size=d)
    np.testing.assert_allclose(np.asarray(memory.times(array(g[None]))[0]), two_loop(S, Y, g),
                               rtol=1e-10)
    # a pair with s·y <= 0 is rejected: it changes nothing
    memory.add(array(S[0][None]), array(-Y[0][None]))
    np.testing.assert_allclose(np.asarray(memory.times(array(g[None]))[0]), two_loop(S, Y, g),
                               rtol=1e-10)
    # past `size` pairs the oldest drop out (the rejected one holds a slot until then)
    more = rng.normal(size=(4, d))
    for s in more:
        memory.add(array(s[None]), array((s @ H)[None]))
    S, Y = more, more @ H
    np.testing.assert_allclose(np.asarray(memory.times(array(g[None]))[0]), two_loop(S, Y, g),
                               rtol=1e-10)


@pytest.mark.parametrize("array", LIBRARIES, ids=["numpy", "torch"])
def test_preconditioner_whitens_the_hessian_at_zero(array: Any) -> None:
    # K = L⁻ᵀ for H = cov/4 + I/(C n) = L Lᵀ: upper triangular, and Kᵀ H K = I
    rng = np.random.default_rng(5)
    A = rng.normal(size=(2, 40, 6)) * np.array([1.0, 10.0, 0.1, 1.0, 3.0, 0.5])
    cov = np.einsum("sni,snj->sij", A, A) / 40
    H = cov / 4 + np.eye(6) / (2.0 * 100)
    K = np.asarray(lbfgs.preconditioner(array(cov.astype(np.float32)), 100, 2.0), np.float64)
    np.testing.assert_array_equal(np.tril(K, -1), 0.0)
    np.testing.assert_allclose(K.transpose(0, 2, 1) @ H @ K, np.broadcast_to(np.eye(6), H.shape),
                               atol=1e-4)


def test_numpy_and_torch_products_agree() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 20)).astype(np.float32)
    v, r = rng.normal(size=20).astype(np.float32), rng.normal(size=300).astype(np.float32)
    out_np, out_t = np.zeros(300, np.float32), torch.zeros(300)
    lbfgs.matvec(X, v, out_np)
    lbfgs.matvec(torch.as_tensor(X), torch.as_tensor(v), out_t)
    np.testing.assert_allclose(out_np, out_t.numpy(), rtol=1e-5, atol=1e-5)
    back_np, back_t = np.zeros(20, np.float32), torch.zeros(20)
    lbfgs.rmatvec(r, X, back_np)
    lbfgs.rmatvec(torch.as_tensor(r), torch.as_tensor(X), back_t)
    np.testing.assert_allclose(back_np, back_t.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(back_np, X.T.astype(np.float64) @ r, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("array", LIBRARIES, ids=["numpy", "torch"])
def test_line_search_steps_meet_the_strong_wolfe_conditions(array: Any) -> None:
    # φ(t) = mean softplus(-k t) + lam t²/2, minimum where k σ(-k t) = lam t: below a
    # first trial t = 1, beyond it, and (steep k) far below it but with φ'(1) ≈ 0 already
    k, lam_pp = torch.tensor([1.0, 1.0, 100.0]), torch.tensor([1.0, 0.01, 1e-3])
    lam_up, margin = torch.zeros(3), torch.zeros(3, 50)
    move = -k[:, None].expand(3, 50).contiguous()
    t_star = [brentq(lambda t, k=k_, lam=lam_: k * expit(-k * t) - lam * t, 0.0, 1e3)
              for k_, lam_ in zip(k.tolist(), lam_pp.tolist())]
    assert t_star[0] < 1 < t_star[1]

    def phi(t: torch.Tensor) -> torch.Tensor:
        return F.softplus(margin + t[:, None] * move).mean(1) + t * t * lam_pp / 2

    def slope(t: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(margin + t[:, None] * move) * move).mean(1) + t * lam_pp

    zero = torch.zeros(3)
    t, sig = lbfgs._line_search(*(array(a.numpy()) for a in (
        margin, move, move * move, lam_up, lam_pp, slope(zero), torch.ones(3))))
    t, sig = torch.as_tensor(t), torch.as_tensor(sig)
    assert (phi(t) <= phi(zero) + 1e-4 * t * slope(zero)).all()  # sufficient decrease
    assert (slope(t).abs() <= 0.1 * slope(zero).abs()).all()  # curvature
    np.testing.assert_allclose(t[:2].numpy(), t_star[:2], rtol=0.25)  # near the minimum
    assert t[2] == 1.0  # the first trial already satisfies both
    torch.testing.assert_close(sig, torch.sigmoid(margin + t[:, None] * move))


def test_torch_path_fits_as_the_numpy_path() -> None:
    # CUDA runs the solver on torch tensors; the same code on CPU tensors must give the
    # fit that numpy arrays give, site by site, in the same number of iterations
    Xs = np.stack([planted_linear(500, d=24, shift=s, seed=4)[0] for s in (0.3, 2.0)])
    Xs = Xs.astype(np.float32)
    y = planted_linear(500, d=24, seed=4)[1]
    sign = (2.0 * y - 1.0).astype(np.float32)
    cpu = torch.device("cpu")
    on_numpy = batched._fit_stack(Xs, sign, 1.0, 500, 1e-6, cpu)
    on_torch = batched._fit_stack(torch.as_tensor(Xs), torch.as_tensor(sign), 1.0, 500, 1e-6, cpu)
    for a, b in zip(on_numpy[:4], on_torch[:4]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    assert np.abs(on_numpy[4] - on_torch[4]).max() <= 1


def test_cache_groups_do_not_change_the_fit(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    Xs = np.stack([planted_linear(400, shift=s, seed=0)[0] for s in (0.2, 1.0, 3.0)])
    y = planted_linear(400, seed=0)[1]
    together = batched.fit_logistic_batched(Xs, y, tol=1e-6, max_iter=500)
    monkeypatch.setattr(batched, "CPU_GROUP_BYTES", 1)  # every site its own group
    apart = batched.fit_logistic_batched(Xs, y, tol=1e-6, max_iter=500)
    for a, b in zip(together, apart):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # sites stop on their own: an easy site is not dragged along by a hard one
    assert len(set(together[4].tolist())) > 1


def test_unpreconditioned_wide_fit_matches_sklearn(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    X, y, _ = planted_linear(600, d=16, seed=3)
    monkeypatch.setattr(batched, "PRECONDITION_MAX_D", 8)  # 16 features count as wide
    W, b, *_ = batched.fit_logistic_batched(X[None], y, tol=1e-6, max_iter=1000)
    ref = LogisticRegression(tol=1e-8, max_iter=1000).fit(StandardScaler().fit_transform(X), y)
    np.testing.assert_allclose(W[0], ref.coef_[0], atol=2e-3)
    assert b[0] == pytest.approx(ref.intercept_[0], abs=2e-3)


def test_too_few_iterations_warn_and_say_the_fix() -> None:
    Xs = np.stack([planted_linear(400, shift=s, seed=0)[0] for s in (0.2, 3.0)])
    y = planted_linear(400, seed=0)[1]
    with pytest.warns(ConvergenceWarning, match=r"2 site\(s\).*fix: raise max_iter"):
        batched.fit_logistic_batched(Xs, y, tol=1e-8, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converged: silent
        batched.fit_logistic_batched(Xs, y, max_iter=200)


def test_row_order_with_a_period_does_not_slow_the_fit() -> None:
    # token rows come in a period (6 positions per example), each position with its own
    # feature scales; an integer-stride sample of rows for the preconditioner would see
    # only some positions (stride 9 sees positions 0 and 3) and the fit would crawl
    X, y, _ = planted_linear(18000, d=32, seed=0)
    scales = np.exp(np.random.default_rng(1).normal(size=(6, 32)) * 1.5)
    X = (X * np.tile(scales, (3000, 1))).astype(np.float32)
    shuffle = np.random.default_rng(2).permutation(len(y))
    ordered = batched.fit_logistic_batched(X[None], y, max_iter=500)[4][0]
    shuffled = batched.fit_logistic_batched(X[shuffle][None], y[shuffle], max_iter=500)[4][0]
    assert ordered <= shuffled + 3
