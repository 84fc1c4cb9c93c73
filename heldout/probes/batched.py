"""The in-memory batched logistic fit: standardization, preconditioner and cache groups
around the solver of :mod:`heldout.probes.lbfgs`.

:func:`fit_logistic_batched` takes every site's activations at once. Per site it takes
the moments in one pass (which also give the solver's first gradient) and the
preconditioner's covariance from a sample of rows. The solver's passes are
matrix-vector products, so their speed is memory bandwidth, and the fit keeps them
where the data is fastest: on CUDA every site in one group; on CPU, groups of sites
whose activations fit in the last-level cache (:data:`CPU_GROUP_BYTES`), on numpy
arrays, with the products done by numpy's BLAS on one thread
(:func:`~heldout.probes.lbfgs.one_blas_thread`).
"""

from __future__ import annotations

import numpy as np
import torch

from heldout.probes.base import default_device
from heldout.probes.lbfgs import (
    Array,
    StackedSites,
    at_least,
    logistic_lbfgs,
    namespace,
    one_blas_thread,
    preconditioner,
    rmatvec,
    zeros,
)

PRECONDITION_MAX_D = 2048
"""Up to this width the fit is preconditioned (see :func:`~heldout.probes.lbfgs.preconditioner`): the d x d
covariance and its Cholesky factor cost far less than the iterations they save on the
ill-conditioned covariances of real activations. Wider, they no longer pay."""

PRECONDITION_ROWS = 2048
"""This many evenly spaced rows (or 4 x d, if more) estimate the preconditioner's
covariance: it only sets the solver's path, not its optimum."""

CPU_GROUP_BYTES = 12 * 2**20
"""On CPU, sites are fitted in groups of at most this many bytes of activations (at
least one site each), so that a group stays in the last-level cache across its two
passes per iteration. On the 2-core AMD EPYC (32 MiB L3) of our CI, the 8-layer
benchmark sweep (10 MiB a site) takes 0.10 s in groups of one site, 0.13 s in groups of
two and 0.21 s in one group."""


def _moments(X: Array, sign: Array, scratch: Array) -> tuple[Array, Array, Array]:
    """Mean, standard deviation (as StandardScaler's) and signed mean ``mean(sign * X)``
    of one site's X (n, d), in X's library, in one pass.

    The data are shifted by their first row before summing, so ``E[x²] - E[x]²`` does
    not cancel even when a feature's mean dwarfs its spread; column sums are BLAS
    products (:func:`~heldout.probes.lbfgs.rmatvec`) over blocks of rows copied into ``scratch`` (k, d),
    with no full copy of X. The signed sum costs one more product on a block already
    in cache, where the solver's first gradient would be another pass over X.
    """
    xp = namespace(X)
    n, d = X.shape
    block = min(n, len(scratch))
    weights, signed = xp.full((block,), 1.0 / n, dtype=X.dtype, device=X.device), sign / n
    first = xp.asarray(X[0], copy=True)
    shift, shift_sq, signed_shift, part = (zeros(X, d) for _ in range(4))
    for start in range(0, n, block):
        rows = X[start:start + block]
        centered = scratch[:len(rows)]
        xp.subtract(rows, first, out=centered)
        rmatvec(weights[:len(rows)], centered, part)
        shift += part
        rmatvec(signed[start:start + block], centered, part)
        signed_shift += part
        centered *= centered
        rmatvec(weights[:len(rows)], centered, part)
        shift_sq += part
    scale = xp.sqrt(at_least(shift_sq - shift * shift, 0.0))
    return (first + shift, xp.where(scale < 1e-12, 1.0, scale),
            signed_shift + first * signed.sum())


def _sample_covariance(X: Array, rows: np.ndarray, mean: Array, scratch: Array) -> Array:
    """Covariance of each site's ``rows`` about its ``mean``, (sites, d, d), with the
    centered rows in ``scratch`` (len(rows), d); on CPU the Gram product runs in
    numpy's BLAS (see :func:`~heldout.probes.lbfgs.matvec`)."""
    if isinstance(X, np.ndarray):
        grams = []
        for site, site_mean in zip(X, mean):
            np.subtract(np.take(site, rows, axis=0, out=scratch), site_mean, out=scratch)
            grams.append(scratch.T @ scratch)
        cov = np.stack(grams)
        cov /= len(rows)
        return cov
    centered = X[:, torch.as_tensor(rows, device=X.device)] - mean[:, None, :]
    return centered.mT @ centered / len(rows)


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
    dev = default_device(device)
    X = np.asarray(X, dtype=np.float32)
    sign = 2.0 * np.asarray(y, dtype=np.float32) - 1.0
    with one_blas_thread():
        if dev.type == "cpu":
            return _fit_stack(X, sign, C, max_iter, tol, dev)
        return _fit_stack(torch.as_tensor(X if X.flags.writeable else X.copy(), device=dev),
                          torch.as_tensor(sign, device=dev), C, max_iter, tol, dev)


def _fit_stack(X: Array, sign: Array, C: float, max_iter: int, tol: float, dev: torch.device
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`fit_logistic_batched` on X (n_sites, n, d) and sign (n,) from one library."""
    xp = namespace(X)
    n_sites, n, d = X.shape
    # evenly spaced rows for the preconditioner's covariance, at a fractional spacing: an
    # integer stride can alias with a period in the rows (every k-th token of each
    # example) and sample only some positions
    rows = np.linspace(0, n - 1, min(n, max(PRECONDITION_ROWS, 4 * d))).astype(np.int64)
    # one scratch block for the moments and the preconditioner's rows: on our CI machine a
    # fresh 2 MiB array per site cost more (page faults) than the arithmetic on it
    scratch = xp.empty((len(rows), d), dtype=X.dtype, device=X.device)
    out: list[list[np.ndarray]] = [[], [], [], [], []]
    for group in _site_groups(n_sites, n * d * 4, dev):
        data = StackedSites(X[group])
        mean, scale, signed_mean = (xp.stack(parts) for parts in zip(*(
            _moments(site, sign, scratch) for site in data.X)))
        K = None
        if d <= PRECONDITION_MAX_D:
            cov = _sample_covariance(data.X, rows, mean, scratch)
            cov /= scale[:, :, None]
            cov /= scale[:, None, :]
            K = preconditioner(cov, n, C)
        U, b, n_iter = logistic_lbfgs(data, sign, mean, scale, K, signed_mean, C=C,
                                      max_iter=max_iter, tol=tol)
        for parts, value in zip(out, (U, b, mean, scale)):
            parts.append(value if xp is np else value.cpu().numpy())
        out[4].append(n_iter)
    W, b_all, means, scales, iters = (np.concatenate(parts) for parts in out)
    return W, b_all, means, scales, iters
