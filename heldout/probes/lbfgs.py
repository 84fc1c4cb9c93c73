"""Logistic regression for many sites at once: preconditioned L-BFGS, exact line search.

Every site (layer) is an independent L2-regularized logistic regression on
standardized features. :func:`logistic_lbfgs` solves a group of them together, each
site with its own curvature history and its own step, so sites do not slow each other
down. One iteration costs exactly two passes over a site's activations: ``X p`` for the
new direction and ``Xᵀ r`` for the gradient. The line search runs on the cached logits
``z = X w`` and ``X p`` (``O(n)`` per trial, no further pass), and the problem is
preconditioned by the Hessian at zero (:func:`preconditioner`), so a fit takes few
iterations.

The passes are matrix-vector products, so their speed is memory bandwidth.
:func:`fit_logistic_batched` therefore keeps them where the data is fastest: on CUDA
every site in one group; on CPU, groups of sites whose activations fit in the
last-level cache (:data:`CPU_GROUP_BYTES`), with the products done by numpy's BLAS
(``benchmarks/probe_fit.py`` measures the effect of both) on one thread
(:data:`one_blas_thread`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits
from torch import Tensor

from heldout.probes.base import default_device

PRECONDITION_MAX_D = 2048
"""Up to this width the fit is preconditioned (see :func:`preconditioner`): the d x d
covariance and its Cholesky factor cost far less than the iterations they save on the
ill-conditioned covariances of real activations. Wider, they no longer pay."""

PRECONDITION_ROWS = 2048
"""This many evenly spaced rows (or 4 x d, if more) estimate the preconditioner's
covariance: it only sets the solver's path, not its optimum."""

CPU_GROUP_BYTES = 12 * 2**20
"""On CPU, sites are fitted in groups of at most this many bytes of activations (at
least one site each), so that a group stays in the last-level cache across its two
passes per iteration. On the 2-core AMD EPYC (32 MiB L3) of our CI, a one-thread
matrix-vector product over a 10 MiB site takes 0.2-0.4 ms inside the solver and about
1 ms once a group of 8 such sites must come from memory: the 8-layer benchmark sweep
takes 0.17 s in groups of one site and 0.25-0.28 s in one group."""

def one_blas_thread() -> threadpool_limits:
    """A context in which numpy's BLAS uses one thread. Each product here takes a few
    hundred microseconds, less than BLAS threads need to start and meet: on our 2-core
    CI machine the 8-layer benchmark sweep took 1.5 s with 2 BLAS threads (scikit-learn's
    loop 3.4 s) and 0.18 s with one (scikit-learn's 0.35 s)."""
    return threadpool_limits(limits=1, user_api="blas")


INTERCEPT_SCALE = 2.0
"""The intercept is solved for as ``b = 2 v_b``: its curvature at zero is 1/4, the same
scale as the whitened features' (:func:`preconditioner`)."""


class Passes(Protocol):
    """The two products the solver needs, for the sites listed in ``active``; rows of
    the other (converged) sites are left zero and cost nothing."""

    def project(self, V: Tensor, active: list[int]) -> Tensor:
        """``X_s @ V[s]`` for each active site ``s``: (n_sites, n)."""

    def backproject(self, R: Tensor, active: list[int]) -> Tensor:
        """``R[s] @ X_s`` for each active site ``s``: (n_sites, d)."""


def matvec(X: np.ndarray | Tensor, v: Tensor, out: Tensor) -> None:
    """``out = X @ v``. A numpy ``X`` (the CPU path) goes through numpy's BLAS
    (OpenBLAS), which on our AMD CI machine is 1.7x (one thread) to 3x (two) faster
    than torch's MKL build for tall, skinny float32 products. A tensor ``X`` stays in
    torch, on its device."""
    if isinstance(X, np.ndarray):
        np.dot(X, v.numpy(), out=out.numpy())
    else:
        torch.mv(X, v, out=out)


def rmatvec(r: Tensor, X: np.ndarray | Tensor, out: Tensor) -> None:
    """``out = r @ X`` (see :func:`matvec`)."""
    if isinstance(X, np.ndarray):
        np.dot(r.numpy(), X, out=out.numpy())
    else:
        torch.mv(X.T, r, out=out)


class StackedSites:
    """Activations of every site in memory: ``X`` (n_sites, n, d) float32."""

    def __init__(self, X: Tensor) -> None:
        self.n_sites, self.n, self.d = X.shape
        self.X = X.numpy() if X.device.type == "cpu" else X
        self.device = X.device

    def project(self, V: Tensor, active: list[int]) -> Tensor:
        out = torch.zeros(self.n_sites, self.n, device=self.device)
        for s in active:
            matvec(self.X[s], V[s], out[s])
        return out

    def backproject(self, R: Tensor, active: list[int]) -> Tensor:
        out = torch.zeros(self.n_sites, self.d, device=self.device)
        for s in active:
            rmatvec(R[s], self.X[s], out[s])
        return out


class StreamedSite:
    """One site streamed from ``chunks()`` (``(X chunk, y chunk)`` pairs), never whole
    in memory: each product is one pass over the chunks."""

    def __init__(self, chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
                 n: int, d: int, device: torch.device) -> None:
        self.chunks, self.n, self.d, self.device = chunks, n, d, device

    def _blocks(self) -> Iterator[tuple[int, np.ndarray | Tensor]]:
        start = 0
        for X, _ in self.chunks():
            X = np.asarray(X, dtype=np.float32)
            yield start, X if self.device.type == "cpu" else torch.as_tensor(X, device=self.device)
            start += len(X)

    def project(self, V: Tensor, active: list[int]) -> Tensor:
        out = torch.zeros(1, self.n, device=self.device)
        for start, X in self._blocks():
            matvec(X, V[0], out[0, start:start + len(X)])
        return out

    def backproject(self, R: Tensor, active: list[int]) -> Tensor:
        out, part = torch.zeros(1, self.d, device=self.device), torch.zeros(
            self.d, device=self.device)
        for start, X in self._blocks():
            rmatvec(R[0, start:start + len(X)], X, part)
            out[0] += part
        return out


def preconditioner(cov: Tensor, n: float, C: float) -> Tensor:
    """Lower Cholesky factor L of the loss Hessian at w = 0, ``cov/4 + I/(C n)``.

    cov : (n_sites, d, d) covariance of the standardized features. The solver runs
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


def logistic_lbfgs(data: Passes, sign: Tensor, mean: Tensor, scale: Tensor,
                   L: Tensor | None, *, C: float, max_iter: int, tol: float,
                   history: int = 10) -> tuple[Tensor, Tensor, np.ndarray]:
    """Fit one logistic regression per site of ``data`` (see the module docstring).

    sign : (n,) labels as ±1; mean, scale : (n_sites, d) standardization (folded into
    the products, so no standardized copy of X is made); L : (n_sites, d, d) from
    :func:`preconditioner`, or None. The objective is scikit-learn's,
    ``mean log-loss + ||w||² / (2 C n)`` on standardized features with a free
    intercept, and a site stops as scikit-learn's lbfgs does: when no component of
    its gradient (standardized weights and intercept) exceeds ``tol``; a site still
    above it after ``max_iter`` iterations gives a ``ConvergenceWarning``.
    Returns standardized weights (n_sites, d), intercepts (n_sites,) and the number
    of iterations of each site.
    """
    n_sites, d = mean.shape
    n, dev = sign.shape[0], sign.device
    lam = 1.0 / (C * n)
    coef, neg_sign, inv_scale = -sign / n, -sign, 1.0 / scale
    L_T = None if L is None else L.transpose(1, 2)
    U, b = torch.zeros(n_sites, d, device=dev), torch.zeros(n_sites, device=dev)
    margin = torch.zeros(n_sites, n, device=dev)  # -sign * logits, kept up to date
    memory = _History(n_sites, history, d + 1, dev)

    def gradient(sig: Tensor, active: list[int]) -> tuple[Tensor, Tensor]:
        """Largest gradient component, in the original problem, and the gradient in
        the solver's variables ``(v, b / INTERCEPT_SCALE)``; ``sig = σ(margin)``."""
        R = coef * sig  # d loss / d logits
        total = R.sum(1)
        G_u = data.backproject(R, active).sub_(mean * total[:, None]).mul_(inv_scale)
        G_u.add_(U, alpha=lam)
        G_v = G_u if L is None else torch.linalg.solve_triangular(
            L, G_u[:, :, None], upper=False)[:, :, 0]
        largest = torch.maximum(G_u.abs().amax(1), total.abs())
        return largest, torch.cat([G_v, INTERCEPT_SCALE * total[:, None]], 1)

    sig = torch.full((n_sites, n), 0.5, device=dev)  # σ(margin) at the current point
    largest, G = gradient(sig, list(range(n_sites)))
    n_iter = np.zeros(n_sites, dtype=np.int64)
    for _ in range(max_iter):
        active = torch.nonzero(largest > tol)[:, 0].tolist()
        if not active:
            break
        n_iter[active] += 1
        P = memory.times(G).neg_()
        slope = torch.linalg.vecdot(G, P)
        if bool((slope >= 0).any()):  # not a descent direction: steepest descent
            P = torch.where((slope >= 0)[:, None], -G, P)
        if len(active) < n_sites:  # converged sites stay where they are
            P[largest <= tol] = 0.0
        slope = torch.linalg.vecdot(G, P)
        P_u = P[:, :d] if L_T is None else torch.linalg.solve_triangular(
            L_T, P[:, :d, None], upper=True)[:, :, 0]
        p_b = INTERCEPT_SCALE * P[:, d]
        raw = P_u * inv_scale
        move = data.project(raw, active).add_(
            (p_b - torch.linalg.vecdot(mean, raw))[:, None]).mul_(neg_sign)
        lam_pp = lam * torch.linalg.vecdot(P_u, P_u)
        # first trial: the Newton step along the line, from its curvature at t = 0
        curvature = torch.linalg.vecdot(sig * (1 - sig), move * move) / n + lam_pp
        first = -slope / curvature.clamp_min(1e-30)  # 0 for a converged site: it stays
        t, sig = _line_search(margin, move, lam * torch.linalg.vecdot(U, P_u), lam_pp, slope,
                              first)
        U.addcmul_(t[:, None], P_u)
        b.addcmul_(t, p_b)
        margin.addcmul_(t[:, None], move)
        old = G
        largest_new, G = gradient(sig, active)
        if len(active) < n_sites:
            done = largest <= tol
            G[done], largest_new[done] = old[done], largest[done]
        largest = largest_new
        memory.add(t[:, None] * P, G - old)
    stuck = largest > tol
    if bool(stuck.any()):
        warnings.warn(ConvergenceWarning(
            f"the logistic fit stopped at max_iter={max_iter} before converging on "
            f"{int(stuck.sum())} of {n_sites} site(s) (largest gradient component "
            f"{float(largest.max()):.1e} > tol={tol:g}); fix: raise max_iter or tol"),
            stacklevel=2)
    return U, b, n_iter


class _History:
    """L-BFGS curvature pairs of every site, oldest first, applied in the compact form
    of Byrd, Nocedal and Schnabel (1994): a handful of batched matrix products per
    iteration instead of the two-loop recursion's 4 x history small operations. A
    rejected pair (``s·y`` not positive) is stored as zeros, which the form ignores."""

    def __init__(self, n_sites: int, size: int, n_params: int, device: torch.device) -> None:
        self.S = torch.zeros(n_sites, size, n_params, device=device)
        self.Y = torch.zeros_like(self.S)
        self.gamma = torch.ones(n_sites, device=device)

    def add(self, s: Tensor, y: Tensor) -> None:
        sy, yy = (s * y).sum(1), (y * y).sum(1)
        ok = (sy > 1e-10 * yy.clamp_min(1e-30))[:, None]
        self.S = torch.cat([self.S[:, 1:], torch.where(ok, s, 0.0)[:, None]], 1)
        self.Y = torch.cat([self.Y[:, 1:], torch.where(ok, y, 0.0)[:, None]], 1)
        self.gamma = torch.where(ok[:, 0], sy / yy.clamp_min(1e-30), self.gamma)

    def times(self, g: Tensor) -> Tensor:
        """The inverse-Hessian approximation applied to ``g`` (n_sites, n_params)."""
        S, Y, gamma = self.S, self.Y, self.gamma[:, None]
        SY = S @ Y.transpose(1, 2)
        empty = torch.diag_embed((S.abs().sum(2) == 0).to(g.dtype))
        R = SY.triu() + empty  # a unit row for an empty slot keeps R invertible
        a, c = (S @ g[:, :, None])[:, :, 0], (Y @ g[:, :, None])[:, :, 0]
        p = torch.linalg.solve_triangular(R, a[:, :, None], upper=True)
        inner = (torch.diag_embed(SY.diagonal(dim1=1, dim2=2)) + gamma[:, :, None]
                 * (Y @ Y.transpose(1, 2))) @ p - gamma[:, :, None] * c[:, :, None]
        q = torch.linalg.solve_triangular(R.transpose(1, 2), inner, upper=False)
        return gamma * g + (S.transpose(1, 2) @ q)[:, :, 0] - gamma * (
            Y.transpose(1, 2) @ p)[:, :, 0]


def _line_search(margin: Tensor, move: Tensor, lam_up: Tensor, lam_pp: Tensor,
                 slope: Tensor, first: Tensor, max_steps: int = 12) -> tuple[Tensor, Tensor]:
    """Steps ``t`` (n_sites,) along each site's direction, and ``σ(margin)`` there.

    Along a line the objective is convex, with derivative
    ``φ'(t) = mean(σ(margin + t move) move) + lam (u·p + t p·p)``; safeguarded Newton
    steps from t = ``first`` (kept inside the bracket where φ' changes sign, else
    bisection) stop once ``|φ'(t)| <= 0.1 |φ'(0)|``: a near-exact line search on
    cached margins, with no pass over the activations.
    """
    n = margin.shape[1]
    bound = 0.1 * slope.abs()
    t = first
    lo, hi = torch.zeros_like(t), torch.full_like(t, float("inf"))
    done = torch.zeros_like(t, dtype=torch.bool)
    for _ in range(max_steps):
        sig = torch.sigmoid(torch.addcmul(margin, t[:, None], move))
        d1 = torch.linalg.vecdot(sig, move) / n + lam_up + t * lam_pp
        done = d1.abs() <= bound
        if bool(done.all()):
            return t, sig
        lo, hi = torch.where(d1 < 0, t, lo), torch.where(d1 > 0, t, hi)
        d2 = torch.linalg.vecdot(sig * (1 - sig), move * move) / n + lam_pp
        newton = t - d1 / d2.clamp_min(1e-30)
        fallback = torch.where(torch.isinf(hi), 4 * t, (lo + hi) / 2)
        inside = (newton > lo) & (newton < hi)
        t = torch.where(done, t, torch.where(inside, newton, fallback))
    # out of steps: the bracket's lower end is a sure decrease wherever one was found
    t = torch.where(done | (lo == 0), t, lo)
    return t, torch.sigmoid(torch.addcmul(margin, t[:, None], move))


def _moments(X: np.ndarray | Tensor, scratch: np.ndarray | Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation (as StandardScaler's) of one site's X (n, d), a
    numpy array on CPU or a tensor on its device, in one pass.

    The data are shifted by their first row before summing, so ``E[x²] - E[x]²`` does
    not cancel even when a feature's mean dwarfs its spread; column sums are BLAS
    products (:func:`rmatvec`) over blocks of rows copied into ``scratch`` (k, d),
    with no full copy of X.
    """
    n, d = X.shape
    dev = X.device if isinstance(X, Tensor) else torch.device("cpu")
    block = min(n, len(scratch))
    weights = torch.full((block,), 1.0 / n, device=dev)
    subtract = np.subtract if isinstance(X, np.ndarray) else torch.sub
    first = X[0].copy() if isinstance(X, np.ndarray) else X[0].clone()
    shift, shift_sq, part = (torch.zeros(d, device=dev) for _ in range(3))
    for start in range(0, n, block):
        rows = X[start:start + block]
        centered = scratch[:len(rows)]
        subtract(rows, first, out=centered)
        rmatvec(weights[:len(rows)], centered, part)
        shift += part
        centered *= centered
        rmatvec(weights[:len(rows)], centered, part)
        shift_sq += part
    mean = torch.as_tensor(first, device=dev) + shift
    scale = (shift_sq - shift * shift).clamp_min(0).sqrt()
    return mean, torch.where(scale < 1e-12, torch.ones_like(scale), scale)


def _site_groups(n_sites: int, site_bytes: int, device: torch.device) -> list[slice]:
    if device.type != "cpu":
        return [slice(0, n_sites)]
    size = max(1, CPU_GROUP_BYTES // max(site_bytes, 1))
    return [slice(start, min(start + size, n_sites)) for start in range(0, n_sites, size)]


def fit_logistic_batched(X: np.ndarray, y: np.ndarray, *, C: float = 1.0, max_iter: int = 100,
                         tol: float = 1e-4, device: str | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit one logistic regression per site.

    X : array of shape (n_sites, n_samples, d_model); y : array of shape (n_samples,).
    Returns standardized-space weights ``W`` (n_sites, d_model), intercepts ``b``
    (n_sites,), ``mean`` and ``scale`` (n_sites, d_model), and each site's iteration
    count (n_sites,).
    """
    with one_blas_thread():
        return _fit_stack(np.asarray(X, dtype=np.float32), y, C, max_iter, tol,
                          default_device(device))


def _fit_stack(X: np.ndarray, y: np.ndarray, C: float, max_iter: int, tol: float,
               dev: torch.device
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    Xt = torch.as_tensor(X if X.flags.writeable else X.copy(), device=dev)
    n_sites, n, d = Xt.shape
    sign = torch.as_tensor(2.0 * np.asarray(y) - 1.0, dtype=torch.float32, device=dev)
    # evenly spaced rows for the preconditioner's covariance, at a fractional spacing: an
    # integer stride can alias with a period in the rows (every k-th token of each
    # example) and sample only some positions
    rows = torch.linspace(0, n - 1, min(n, max(PRECONDITION_ROWS, 4 * d)), device=dev).long()
    # one scratch block for the moments and the preconditioner's rows: on our CI machine a
    # fresh 2 MiB array per site cost more (page faults) than the arithmetic on it
    scratch: np.ndarray | Tensor = (np.empty((len(rows), d), np.float32) if dev.type == "cpu"
                                    else torch.empty(len(rows), d, device=dev))
    out: list[list[np.ndarray]] = [[], [], [], [], []]
    for group in _site_groups(n_sites, n * d * 4, dev):
        data = StackedSites(Xt[group])
        mean, scale = (torch.stack(parts) for parts in zip(*(
            _moments(site, scratch) for site in data.X)))
        L = None
        if d <= PRECONDITION_MAX_D:
            cov = _sample_covariance(data.X, rows, mean, scratch) / (
                scale[:, :, None] * scale[:, None, :])
            L = preconditioner(cov, n, C)
        U, b, n_iter = logistic_lbfgs(data, sign, mean, scale, L, C=C,
                                      max_iter=max_iter, tol=tol)
        for parts, value in zip(out, (U, b, mean, scale)):
            parts.append(value.cpu().numpy())
        out[4].append(n_iter)
    W, b_all, means, scales, iters = (np.concatenate(parts) for parts in out)
    return W, b_all, means, scales, iters


def _sample_covariance(X: np.ndarray | Tensor, rows: Tensor, mean: Tensor,
                       scratch: np.ndarray | Tensor) -> Tensor:
    """Covariance of each site's ``rows`` about its ``mean``, (sites, d, d), with the
    centered rows in ``scratch`` (len(rows), d). On CPU the Gram product runs in
    numpy's BLAS (see :func:`matvec`)."""
    if isinstance(X, np.ndarray):
        grams = []
        for site, site_mean in zip(X, mean.numpy()):
            np.subtract(np.take(site, rows.numpy(), axis=0, out=scratch), site_mean, out=scratch)
            grams.append(scratch.T @ scratch)
        return torch.from_numpy(np.stack(grams) / len(rows))
    centered = X[:, rows] - mean[:, None, :]
    return torch.bmm(centered.transpose(1, 2), centered) / len(rows)
