"""Batched L-BFGS for logistic regression: many independent problems, one solver loop.

:func:`batched_lbfgs` minimizes ``n_sites`` smooth objectives at once (each with its own
curvature history and line search); :func:`fit_logistic_batched` uses it to fit one
L2-regularized logistic regression per site in memory. Up to
:data:`PRECONDITION_MAX_D` features the problem is preconditioned by the Cholesky
factor of the Hessian at zero (:func:`_preconditioner`, :func:`_weights`).
:class:`~heldout.probes.linear.LogisticProbe` uses the same pieces to stream a store.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from heldout.probes.base import default_device


def batched_lbfgs(value_and_grad: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
                  P: Tensor, max_iter: int, tol: float, history: int = 10,
                  grad_scale: Tensor | None = None) -> tuple[Tensor, int]:
    """Minimize ``n_sites`` independent smooth objectives at once with L-BFGS.

    P : (n_sites, n_params) start; ``value_and_grad(P, mask) -> (f (n_sites,),
    g (n_sites, n_params))``, needed only on the sites where ``mask`` is true (the
    others may be left zero: converged sites cost nothing). Every site keeps its own
    curvature history and its own backtracking (Armijo) step, so sites do not slow
    each other down as they would inside one L-BFGS over the concatenated problem.
    A site stops when its largest gradient component is below ``tol``, measured in
    the original weights: with preconditioning ``w = L⁻ᵀ v`` (``grad_scale`` = L,
    (n_sites, n_params - 1, n_params - 1); the last parameter is the intercept), the
    weight gradient is ``L ∇_v``, so the stopping rule is scikit-learn's whatever the
    preconditioner. Returns the solution and the number of iterations run.
    """

    def grad_max(g: Tensor) -> Tensor:
        if grad_scale is None:
            return g.abs().amax(1)
        g_w = torch.bmm(grad_scale, g[:, :-1, None])[:, :, 0]
        return torch.maximum(g_w.abs().amax(1), g[:, -1].abs())

    f, g = value_and_grad(P, torch.ones(P.shape[0], dtype=torch.bool, device=P.device))
    s_hist = torch.zeros(history, *P.shape, dtype=P.dtype, device=P.device)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros(history, P.shape[0], dtype=P.dtype, device=P.device)
    gamma = torch.ones(P.shape[0], dtype=P.dtype, device=P.device)
    it = 0
    for it in range(1, max_iter + 1):
        active = grad_max(g) > tol
        if not bool(active.any()):
            it -= 1
            break
        # two-loop recursion; pairs with rho = 0 (none yet, or rejected) are no-ops
        q, alphas = g.clone(), []
        for k in reversed(range(history)):
            alpha = rho[k] * (s_hist[k] * q).sum(1)
            q -= alpha[:, None] * y_hist[k]
            alphas.append(alpha)
        r = gamma[:, None] * q
        for k, alpha in zip(range(history), reversed(alphas)):
            beta = rho[k] * (y_hist[k] * r).sum(1)
            r += s_hist[k] * (alpha - beta)[:, None]
        direction = torch.where(active[:, None], -r, torch.zeros_like(r))
        slope = (g * direction).sum(1)
        bad = slope >= 0  # not a descent direction: fall back to steepest descent
        direction[bad] = -g[bad] * active[bad, None]
        slope = (g * direction).sum(1)
        step = torch.ones_like(f)
        if it == 1 and grad_scale is None:  # unpreconditioned: a short first step
            step = torch.clamp(1.0 / g.abs().sum(1), max=1.0)
        todo = active.clone()
        P_new, f_new, g_new = P.clone(), f.clone(), g.clone()
        for _ in range(30):
            trial = P + step[:, None] * direction
            f_t, g_t = value_and_grad(trial, todo)
            ok = todo & (f_t <= f + 1e-4 * step * slope)
            P_new[ok], f_new[ok], g_new[ok] = trial[ok], f_t[ok], g_t[ok]
            todo &= ~ok
            if not bool(todo.any()):
                break
            step = torch.where(todo, step * 0.5, step)
        s_k, y_k = P_new - P, g_new - g
        sy = (s_k * y_k).sum(1)
        keep = sy > 1e-10 * (y_k * y_k).sum(1).clamp_min(1e-30)
        s_hist, y_hist, rho = s_hist.roll(-1, 0), y_hist.roll(-1, 0), rho.roll(-1, 0)
        s_hist[-1], y_hist[-1] = s_k, y_k
        rho[-1] = torch.where(keep, 1.0 / sy.clamp_min(1e-30), torch.zeros_like(sy))
        gamma = torch.where(keep, sy / (y_k * y_k).sum(1).clamp_min(1e-30), gamma)
        P, f, g = P_new, f_new, g_new
    return P, it


def fit_logistic_batched(X: np.ndarray, y: np.ndarray, *, C: float = 1.0, max_iter: int = 100,
                         tol: float = 1e-4, device: str | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Fit one logistic regression per site, all at once.

    X : array of shape (n_sites, n_samples, d_model); y : array of shape (n_samples,).
    The sites' objectives are independent, so their sum is minimized by one L-BFGS
    over a (n_sites, d_model) weight tensor: one batched matmul per evaluation
    instead of n_sites separate solver loops. Returns standardized-space weights
    ``W`` (n_sites, d_model), intercepts ``b`` (n_sites,), ``mean`` and ``scale``
    (n_sites, d_model), and the iteration count.
    """
    dev = default_device(device)
    Xt = torch.as_tensor(X if X.flags.writeable else X.copy(), device=dev,
                         dtype=torch.float32)
    n, d = Xt.shape[1], Xt.shape[2]
    mean = Xt.mean(1)
    precondition = d <= PRECONDITION_MAX_D
    # variances about the mean, block by block: exact even when a feature's mean
    # dwarfs its spread, and no full standardized copy of X
    var = torch.zeros(Xt.shape[0], d, device=dev)
    for start in range(0, n, 8192):
        block = Xt[:, start:start + 8192] - mean[:, None, :]
        var += (block * block).sum(1)
    var /= n
    scale = var.sqrt()
    scale = torch.where(scale < 1e-12, torch.ones_like(scale), scale)
    L = None
    if precondition:
        # The preconditioner only sets the solver's path, not its optimum, so its
        # covariance comes from evenly spaced rows: O(rows d^2) instead of O(n d^2).
        rows = torch.linspace(0, n - 1, min(n, max(PRECONDITION_ROWS, 4 * d)),
                              device=dev).long()
        sample = (Xt[:, rows] - mean[:, None, :]) / scale[:, None, :]
        L = _preconditioner(torch.bmm(sample.transpose(1, 2), sample) / len(rows), n, C)
    sign = torch.as_tensor(2.0 * np.asarray(y) - 1.0, dtype=torch.float32, device=dev)

    def value_and_grad(P: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        f, g = torch.zeros(P.shape[0], device=dev), torch.zeros_like(P)
        idx = torch.nonzero(mask)[:, 0]
        Q = P[idx].detach().requires_grad_(True)
        W = _weights(Q[:, :d], None if L is None else L[idx])
        # standardization folded into the weights: z.w = x.(w/scale) - mean.(w/scale)
        raw = W / scale[idx]
        offset = Q[:, d] - (raw * mean[idx]).sum(1)
        # one matrix-vector product per site: much faster on CPU than bmm with a
        # trailing dimension of 1, and converged sites are skipped
        logits = torch.stack([Xt[i] @ raw[j] for j, i in enumerate(idx.tolist())])
        logits = logits + offset[:, None]
        f_q = F.softplus(-sign * logits).mean(1) + (W * W).sum(1) / (2 * C * n)
        (g_q,) = torch.autograd.grad(f_q.sum(), Q)
        f[idx], g[idx] = f_q.detach(), g_q
        return f, g

    P, n_iter = batched_lbfgs(value_and_grad, torch.zeros(Xt.shape[0], d + 1, device=dev),
                              max_iter, tol, grad_scale=L)
    W = _weights(P[:, :d], L)
    return (W.cpu().numpy(), P[:, d].cpu().numpy(), mean.cpu().numpy(), scale.cpu().numpy(),
            n_iter)


PRECONDITION_MAX_D = 2048
"""Up to this width the logistic fit is preconditioned (see :func:`_preconditioner`):
the d x d covariance costs one matrix-matrix pass, which on CPU is far cheaper than
the L-BFGS iterations it saves on the ill-conditioned covariances of real
activations. Wider than this, the O(n d^2) covariance is no longer worth it."""


PRECONDITION_ROWS = 2048
"""At least this many rows (and 4 x d) estimate the preconditioner's covariance."""


def _preconditioner(cov: Tensor, n: float, C: float) -> Tensor:
    """Lower Cholesky factor L of the loss Hessian at w = 0, ``cov/4 + I/(C n)``.

    cov : (n_sites, d, d) covariance of the standardized features. L-BFGS then runs
    on ``v = Lᵀ w``, where the problem starts out perfectly conditioned; the optimum
    is the same, only fewer iterations are needed.
    """
    d = cov.shape[-1]
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    H = cov / 4 + eye / (C * n)
    L, info = torch.linalg.cholesky_ex(H)
    if bool((info != 0).any()):  # numerically singular: add a little ridge
        jitter = 1e-5 * H.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None]
        L = torch.linalg.cholesky(H + jitter * eye)
    return L


def _weights(V: Tensor, L: Tensor | None) -> Tensor:
    """Weights ``w = L⁻ᵀ v`` (n_sites, d) from the preconditioned variables."""
    if L is None:
        return V
    return torch.linalg.solve_triangular(L.transpose(1, 2), V[:, :, None], upper=True)[:, :, 0]
