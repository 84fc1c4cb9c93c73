"""Logistic regression for many sites at once: preconditioned L-BFGS, exact line search.

Every site (layer) is an independent L2-regularized logistic regression on
standardized features. :func:`logistic_lbfgs` solves a group of them together, each
site with its own curvature history and its own step, so sites do not slow each other
down. One iteration costs exactly two passes over a site's activations: ``X p`` for the
new direction and ``Xᵀ r`` for the gradient. The line search runs on the cached logits
``z = X w`` and ``X p`` (``O(n)`` per trial, no further pass), and the problem is
preconditioned by the Hessian at zero (:func:`preconditioner`), so a fit takes few
iterations.

The solver is written once, against the array API that numpy (2.1 or later) and torch
share, and runs on whichever library holds its inputs: torch tensors on CUDA, numpy
arrays on CPU. Between its two passes an iteration makes about a hundred small
operations on vectors of d or n_sites numbers, where numpy's dispatch (about 0.5 us an
operation) is much cheaper than torch's (2-3 us). On our 2-core CI machine the 8-layer
benchmark sweep takes 0.10-0.11 s on numpy arrays and 0.19 s on torch CPU tensors
(``benchmarks/probe_fit.py`` prints both); on CPU, torch is used only for its sigmoid.

The passes are matrix-vector products (:func:`matvec`, :func:`rmatvec`), so their speed
is memory bandwidth; :mod:`heldout.probes.batched` feeds the solver from memory,
``LogisticProbe.fit_store`` from chunks on disk (:class:`StreamedSite`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import torch
from scipy.linalg import get_lapack_funcs
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits


def one_blas_thread() -> threadpool_limits:
    """A context in which numpy's BLAS uses one thread. Each product here takes a few
    hundred microseconds, less than BLAS threads need to start and meet: on our 2-core
    CI machine the 8-layer benchmark sweep took 0.43 s with 2 BLAS threads and 0.10 s
    with one (scikit-learn's loop of fits: 3.5 s with 2, 0.35 s with one)."""
    return threadpool_limits(limits=1, user_api="blas")


INTERCEPT_SCALE = 2.0
"""The intercept is solved for as ``b = 2 v_b``: its curvature at zero is 1/4, the same
scale as the whitened features' (:func:`preconditioner`)."""

Array = Any
"""A numpy array (CPU) or a torch tensor (any device): the solver's arrays all come
from one of the two libraries, the one that holds its inputs (:func:`namespace`)."""


def namespace(x: Array) -> ModuleType:
    """numpy for a numpy array, torch for a tensor: the functions the solver calls
    (``where``, ``linalg.vecdot``, ``concat``, ``linalg.inv``, ...) have the same names and
    arguments in both."""
    return np if isinstance(x, np.ndarray) else torch


def at_least(x: Array, floor: float) -> Array:
    """``max(x, floor)`` elementwise (``np.clip`` is 2.5x as slow as ``np.maximum``, and
    ``torch.maximum`` takes no Python number)."""
    return np.maximum(x, floor) if isinstance(x, np.ndarray) else x.clamp_min(floor)


def sigmoid(z: Array) -> Array:
    """σ(z); numpy arrays go through torch's kernel without a copy (numpy has no
    sigmoid, and scipy's ``expit`` takes 7x as long on float32)."""
    if isinstance(z, np.ndarray):
        return torch.sigmoid(torch.from_numpy(z)).numpy()
    return torch.sigmoid(z)


class Passes(Protocol):
    """The two products the solver needs, for the sites listed in ``active``; rows of
    the other (converged) sites are left zero and cost nothing."""

    def project(self, V: Array, active: list[int]) -> Array:
        """``X_s @ V[s]`` for each active site ``s``: (n_sites, n)."""

    def backproject(self, R: Array, active: list[int]) -> Array:
        """``R[s] @ X_s`` for each active site ``s``: (n_sites, d)."""


def matvec(X: Array, v: Array, out: Array) -> None:
    """``out = X @ v``: numpy's BLAS (OpenBLAS) for numpy arrays, which on our AMD CI
    machine is 1.7x (one thread) to 3x (two) faster than torch's MKL build for tall,
    skinny float32 products; ``torch.mv`` for tensors, on their device."""
    if isinstance(X, np.ndarray):
        np.dot(X, v, out=out)
    else:
        torch.mv(X, v, out=out)


def rmatvec(r: Array, X: Array, out: Array) -> None:
    """``out = r @ X`` (see :func:`matvec`)."""
    if isinstance(X, np.ndarray):
        np.dot(r, X, out=out)
    else:
        torch.mv(X.T, r, out=out)


def zeros(like: Array, *shape: int) -> Array:
    """Zeros of ``shape`` in the library, dtype and device of ``like``."""
    xp = namespace(like)
    return xp.zeros(shape, dtype=like.dtype, device=like.device)


class StackedSites:
    """Activations of every site in memory: ``X`` (n_sites, n, d) float32, a numpy
    array or a tensor."""

    def __init__(self, X: Array) -> None:
        self.X = X
        self.n_sites, self.n, self.d = X.shape

    def project(self, V: Array, active: list[int]) -> Array:
        out = zeros(V, self.n_sites, self.n)
        for s in active:
            matvec(self.X[s], V[s], out[s])
        return out

    def backproject(self, R: Array, active: list[int]) -> Array:
        out = zeros(R, self.n_sites, self.d)
        for s in active:
            rmatvec(R[s], self.X[s], out[s])
        return out


class StreamedSite:
    """One site streamed from ``chunks()`` (``(X chunk, y chunk)`` pairs), never whole
    in memory: each product is one pass over the chunks. The chunks stay numpy on
    CPU and are moved to ``device`` otherwise."""

    def __init__(self, chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
                 n: int, d: int, device: torch.device) -> None:
        self.chunks, self.n, self.d, self.device = chunks, n, d, device

    def _blocks(self) -> Iterator[tuple[int, Array]]:
        start = 0
        for X, _ in self.chunks():
            X = np.asarray(X, dtype=np.float32)
            yield start, X if self.device.type == "cpu" else torch.as_tensor(X, device=self.device)
            start += len(X)

    def project(self, V: Array, active: list[int]) -> Array:
        out = zeros(V, 1, self.n)
        for start, X in self._blocks():
            matvec(X, V[0], out[0, start:start + len(X)])
        return out

    def backproject(self, R: Array, active: list[int]) -> Array:
        out, part = zeros(R, 1, self.d), zeros(R, self.d)
        for start, X in self._blocks():
            rmatvec(R[0, start:start + len(X)], X, part)
            out[0] += part
        return out


def preconditioner(cov: Array, n: float, C: float) -> Array:
    """``K = L⁻ᵀ`` for the lower Cholesky factor L of the loss Hessian at w = 0,
    ``cov/4 + I/(C n)``, in cov's library. cov's memory is reused for the Hessian:
    it is overwritten.

    cov : (n_sites, d, d) covariance of the standardized features. The solver runs on
    ``v = Lᵀ w`` (so ``w = K v``), where the problem starts out perfectly conditioned;
    the optimum is the same, only fewer iterations are needed. K is formed once, so
    that each iteration maps between the two with a matrix product; on CPU by LAPACK's
    triangular inverse, 1.6x as fast here as torch's triangular solve against I.
    """
    xp = namespace(cov)
    n_sites, d, _ = cov.shape
    H = cov
    H *= 0.25
    H.reshape(n_sites, d * d)[:, ::d + 1] += 1.0 / (C * n)  # the diagonal, in place
    ridge = 1e-5 * xp.linalg.diagonal(H).mean(-1)  # if H is numerically singular
    if xp is torch:
        eye = torch.eye(d, dtype=H.dtype, device=H.device)
        L, info = torch.linalg.cholesky_ex(H)
        if bool((info != 0).any()):
            L = torch.linalg.cholesky(H + ridge[:, None, None] * eye)
        return torch.linalg.solve_triangular(L.mT, eye.expand_as(L), upper=True)
    potrf, trtri = get_lapack_funcs(("potrf", "trtri"), (H,))
    K = np.empty_like(H)
    for site in range(n_sites):
        L, info = potrf(H[site], lower=True, clean=True)
        if info != 0:
            L, _ = potrf(H[site] + ridge[site] * np.eye(d, dtype=H.dtype), lower=True,
                         clean=True)
        K[site] = trtri(L, lower=True)[0].T
    return K


def logistic_lbfgs(data: Passes, sign: Array, mean: Array, scale: Array, K: Array | None,
                   signed_mean: Array, *, C: float, max_iter: int, tol: float,
                   history: int = 10) -> tuple[Array, Array, np.ndarray]:
    """Fit one logistic regression per site of ``data`` (see the module docstring).

    sign : (n,) labels as ±1; mean, scale : (n_sites, d) standardization (folded into
    the products, so no standardized copy of X is made); K : (n_sites, d, d) from
    :func:`preconditioner`, or None; signed_mean : (n_sites, d) ``mean(sign * X)``,
    which gives the gradient at w = 0 without a pass over X; all from one library,
    which the solver then runs on. The objective is scikit-learn's,
    ``mean log-loss + ||w||² / (2 C n)`` on standardized features with a free
    intercept, and a site stops as scikit-learn's lbfgs does: when no component of its
    gradient (standardized weights and intercept) exceeds ``tol``; a site still above
    it after ``max_iter`` iterations gives a ``ConvergenceWarning``. Returns
    standardized weights (n_sites, d), intercepts (n_sites,) and the number of
    iterations of each site.
    """
    xp = namespace(sign)
    n_sites, d = mean.shape
    n = sign.shape[0]
    lam = 1.0 / (C * n)
    coef, neg_sign, inv_scale = -sign / n, -sign, 1.0 / scale
    U, b = zeros(sign, n_sites, d), zeros(sign, n_sites)
    margin = zeros(sign, n_sites, n)  # -sign * logits, kept up to date
    memory = _History(n_sites, history, d + 1, like=sign)

    def gradient(sig: Array, active: list[int], XR: Array | None = None
                 ) -> tuple[Array, Array]:
        """Largest gradient component, in the original problem, and the gradient in
        the solver's variables ``(v, b / INTERCEPT_SCALE)``; ``sig = σ(margin)``, and
        ``XR = R @ X`` if already known."""
        R = coef * sig  # d loss / d logits
        total = R.sum(1)
        XR = data.backproject(R, active) if XR is None else XR
        G_u = (XR - mean * total[:, None]) * inv_scale + lam * U
        G_v = G_u if K is None else (K.mT @ G_u[:, :, None])[:, :, 0]
        largest = xp.maximum(xp.amax(xp.abs(G_u), axis=1), xp.abs(total))
        return largest, xp.concat([G_v, INTERCEPT_SCALE * total[:, None]], axis=1)

    sig = xp.full((n_sites, n), 0.5, dtype=sign.dtype, device=sign.device)  # σ(margin)
    largest, G = gradient(sig, list(range(n_sites)), XR=-signed_mean / 2)
    n_iter = np.zeros(n_sites, dtype=np.int64)
    for _ in range(max_iter):
        running = largest > tol
        active = [s for s, run in enumerate(running.tolist()) if run]
        if not active:
            break
        n_iter[active] += 1
        P = -memory.times(G)
        slope = xp.linalg.vecdot(G, P)
        uphill = slope >= 0
        if bool(uphill.any()):  # not a descent direction: steepest descent
            P = xp.where(uphill[:, None], -G, P)
        if len(active) < n_sites:  # converged sites stay where they are
            P[~running] = 0.0
        if bool(uphill.any()) or len(active) < n_sites:
            slope = xp.linalg.vecdot(G, P)
        P_u = P[:, :d] if K is None else (K @ P[:, :d, None])[:, :, 0]
        p_b = INTERCEPT_SCALE * P[:, d]
        raw = P_u * inv_scale
        move = data.project(raw, active)
        move += (p_b - xp.linalg.vecdot(mean, raw))[:, None]
        move *= neg_sign
        move_sq = move * move
        lam_pp = lam * xp.linalg.vecdot(P_u, P_u)
        # first trial: the Newton step along the line, from its curvature at t = 0
        curvature = xp.linalg.vecdot(sig * (1 - sig), move_sq) / n + lam_pp
        first = -slope / at_least(curvature, 1e-30)  # 0 for a converged site: it stays
        t, sig = _line_search(margin, move, move_sq, lam * xp.linalg.vecdot(U, P_u), lam_pp,
                              slope, first)
        U += t[:, None] * P_u
        b += t * p_b
        margin += t[:, None] * move
        old = G
        largest_new, G = gradient(sig, active)
        if len(active) < n_sites:
            G[~running], largest_new[~running] = old[~running], largest[~running]
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
    rejected pair (``s·y`` not positive) is stored as zeros, which the form ignores.

    ``SY[:, 0]`` holds the steps s and ``SY[:, 1]`` the gradient changes y, so one
    product gives both ``S g`` and ``Y g``; the small matrices the form needs (``R⁻¹``
    and the middle block) are built once per new pair, not once per use."""

    def __init__(self, n_sites: int, size: int, n_params: int, like: Array) -> None:
        xp = namespace(like)
        self.SY = xp.zeros((n_sites, 2, size, n_params), dtype=like.dtype, device=like.device)
        self.gamma = xp.ones((n_sites, 1), dtype=like.dtype, device=like.device)
        self.eye = xp.eye(size, dtype=like.dtype, device=like.device)
        # R = triu(Sᵀ Y) with a unit row for an empty slot (which keeps it invertible)
        self.R_inv = self.eye * xp.ones((n_sites, 1, 1), dtype=like.dtype, device=like.device)
        self.middle = xp.zeros_like(self.R_inv)

    def add(self, s: Array, y: Array) -> None:
        xp = namespace(s)
        n_sites, _, size, n_params = self.SY.shape
        sy, yy = xp.linalg.vecdot(s, y), at_least(xp.linalg.vecdot(y, y), 1e-30)
        ok = sy > 1e-10 * yy
        SY = xp.empty_like(self.SY)
        SY[:, :, :-1] = self.SY[:, :, 1:]
        SY[:, 0, -1], SY[:, 1, -1] = s, y
        if not bool(ok.all()):
            SY[:, :, -1] = xp.where(ok[:, None, None], SY[:, :, -1], 0.0)
        self.SY = SY
        self.gamma = xp.where(ok[:, None], (sy / yy)[:, None], self.gamma)
        flat = SY.reshape(n_sites, 2 * size, n_params)
        S_Y = flat[:, :size] @ flat[:, size:].mT
        # R gains a last column, so R⁻¹ does too: its leading block is the inverse of R's
        # leading block, which is the old R⁻¹ without its first row and column
        delta = xp.where(ok, sy, 1.0)[:, None]
        R_inv = xp.zeros_like(self.R_inv)
        R_inv[:, :-1, :-1] = self.R_inv[:, 1:, 1:]
        R_inv[:, :-1, -1] = -(R_inv[:, :-1, :-1] @ S_Y[:, :-1, -1:])[:, :, 0] / delta
        R_inv[:, -1, -1] = 1.0 / delta[:, 0]
        self.R_inv = R_inv
        Y_Y = flat[:, size:] @ flat[:, size:].mT
        self.middle = (self.eye * xp.linalg.diagonal(S_Y)[:, :, None]
                       + self.gamma[:, :, None] * Y_Y)

    def times(self, g: Array) -> Array:
        """The inverse-Hessian approximation applied to ``g`` (n_sites, n_params)."""
        xp = namespace(g)
        n_sites, _, size, n_params = self.SY.shape
        flat, gamma = self.SY.reshape(n_sites, 2 * size, n_params), self.gamma
        both = flat @ g[:, :, None]
        p = self.R_inv @ both[:, :size]
        q = self.R_inv.mT @ (self.middle @ p - gamma[:, :, None] * both[:, size:])
        coef = xp.concat([q, -gamma[:, :, None] * p], axis=1)
        return gamma * g + (flat.mT @ coef)[:, :, 0]


def _line_search(margin: Array, move: Array, move_sq: Array, lam_up: Array, lam_pp: Array,
                 slope: Array, first: Array, max_steps: int = 12) -> tuple[Array, Array]:
    """Steps ``t`` (n_sites,) along each site's direction, and ``σ(margin)`` there.

    Along a line the objective is convex, with derivative
    ``φ'(t) = mean(σ(margin + t move) move) + lam (u·p + t p·p)``; safeguarded Newton
    steps from t = ``first`` (kept inside the bracket where φ' changes sign, else
    bisection) stop once ``|φ'(t)| <= 0.1 |φ'(0)|``: a near-exact line search on
    cached margins, with no pass over the activations. ``move_sq = move²``.
    """
    xp = namespace(margin)
    n = margin.shape[1]
    bound = 0.1 * xp.abs(slope)
    t = first
    for step in range(max_steps):
        sig = sigmoid(margin + t[:, None] * move)
        d1 = xp.linalg.vecdot(sig, move) / n + lam_up + t * lam_pp
        done = xp.abs(d1) <= bound
        if bool(done.all()):
            return t, sig
        if step == 0:  # most searches end at the first trial: no bracket needed
            lo, hi = xp.zeros_like(t), xp.full_like(t, float("inf"))
        lo, hi = xp.where(d1 < 0, t, lo), xp.where(d1 > 0, t, hi)
        d2 = xp.linalg.vecdot(sig * (1 - sig), move_sq) / n + lam_pp
        newton = t - d1 / at_least(d2, 1e-30)
        fallback = xp.where(xp.isinf(hi), 4 * t, (lo + hi) / 2)
        inside = (newton > lo) & (newton < hi)
        t = xp.where(done, t, xp.where(inside, newton, fallback))
    # out of steps: the bracket's lower end is a sure decrease wherever one was found
    t = xp.where(done | (lo == 0), t, lo)
    return t, sigmoid(margin + t[:, None] * move)
