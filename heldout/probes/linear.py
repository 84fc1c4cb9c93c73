"""Linear probes: logistic regression, difference of means, shrinkage LDA.

All three end as one direction in raw activation space: ``coef_ : array of shape
(d_model,)`` and ``intercept_ : float``, logit ``= X @ coef_ + intercept_`` (any
standardization is folded into ``coef_``). ``coef_`` is 1-D, unlike sklearn's
``(1, n_features)``, because a probe direction is a vector in the residual stream.

Each can fit in memory (``fit``) or stream a store larger than memory
(``fit_store``): diff-of-means and LDA from sufficient statistics (class means and a
covariance, two passes), logistic with full-batch L-BFGS whose every iteration is
two passes over the chunks (:mod:`heldout.probes.lbfgs`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from heldout.errors import DataError, ProbeError
from heldout.probes.base import BaseProbe, check_finite, check_labels, default_device
from heldout.probes.batched import PRECONDITION_MAX_D, fit_logistic_batched
from heldout.probes.lbfgs import (
    StreamedSite,
    logistic_lbfgs,
    one_blas_thread,
    preconditioner,
)

__all__ = [
    "PRECONDITION_MAX_D", "Chunks", "DiffMeansProbe", "LDAProbe", "LinearProbe", "LogisticProbe",
    "fit_logistic_batched", "logistic_lbfgs", "store_chunks",
]  # the solver names live in heldout.probes.lbfgs and .batched and stay importable here

Chunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
"""A re-iterable source of ``(X chunk (rows, d_model), y chunk (rows,))`` pairs."""


class LinearProbe(BaseProbe):
    """A probe whose logit is affine in the activations (see the module docstring)."""

    def _decision(self, X: np.ndarray) -> np.ndarray:
        return X @ self.coef_ + self.intercept_

    def torch_logits(self, acts: Tensor) -> Tensor:
        """Logits of ``acts : Float[Tensor, "*batch d_model"]`` → ``Float[Tensor, "*batch"]``,
        differentiable in ``acts``; computed on ``acts``' device and dtype."""
        self._check_fitted()
        if acts.shape[-1] != self.n_features_in_:
            raise ProbeError(f"acts has {acts.shape[-1]} features, but {type(self).__name__}"
                             f" is expecting {self.n_features_in_} features as input",
                             fix="score activations from the site the probe was fitted on")
        w = torch.as_tensor(self.coef_, dtype=acts.dtype, device=acts.device)
        return acts @ w + float(self.intercept_)

    @property
    def direction(self) -> np.ndarray:
        """Unit vector along ``coef_``, shape (d_model,)."""
        self._check_fitted()
        return np.asarray(self.coef_ / np.linalg.norm(self.coef_))

    def fit_store(self, store: Any, site: Any, rows: Sequence[int] | np.ndarray | None = None,
                  chunk_rows: int = 4096) -> LinearProbe:
        """Fit by streaming ``store.iter_chunks(site, chunk_rows)``; memory stays at a
        few chunks plus O(d_model²) for LDA. ``rows`` restricts to those row indices."""
        n_rows = int(store.n_rows)
        if n_rows == 0:
            raise DataError("the store is empty", fix="cache activations first")
        mask = None
        if rows is not None:
            mask = np.zeros(n_rows, dtype=bool)
            mask[np.asarray(rows, dtype=np.int64)] = True
        check_labels(store.labels if mask is None else store.labels[mask])
        self.n_features_in_ = int(store.d_model)
        for attr in ("threshold_", "meta_"):  # a refit invalidates both
            self.__dict__.pop(attr, None)
        self._fit_chunks(store_chunks(store, site, mask, chunk_rows))
        self.classes_ = np.array([0, 1])
        return self

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self._fit_chunks(lambda: [(X, y)])

    def _fit_chunks(self, chunks: Chunks) -> None:
        raise NotImplementedError

    def _state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors = {"coef": torch.as_tensor(self.coef_), "intercept":
                   torch.tensor([self.intercept_], dtype=torch.float64)}
        for name in ("mean_", "scale_"):
            if hasattr(self, name):
                tensors[name[:-1]] = torch.as_tensor(getattr(self, name))
        return tensors, {}

    def _set_state(self, tensors: dict[str, Tensor], extras: dict[str, Any]) -> None:
        self.coef_ = tensors["coef"].numpy()
        self.intercept_ = float(tensors["intercept"][0])
        for name in ("mean", "scale"):
            if name in tensors:
                setattr(self, name + "_", tensors[name].numpy())
        self.n_features_in_ = int(self.coef_.shape[0])
        self.classes_ = np.array([0, 1])


def store_chunks(store: Any, site: Any, mask: np.ndarray | None, chunk_rows: int) -> Chunks:
    """Re-iterable chunks of ``site`` from ``store``, keeping rows where ``mask``."""
    def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        start = 0
        for X, y in store.iter_chunks(site, chunk_rows):
            stop = start + len(X)
            if mask is not None:
                keep = mask[start:stop]
                X, y = X[keep], y[keep]
            if len(X):
                check_finite(X, f"store rows {start}-{stop - 1} at site {site}")
                # a private, writable copy: torch will not wrap a read-only memmap
                yield np.array(X, dtype=np.float32), np.asarray(y)
            start = stop
    return gen


class _Moments:
    """Per-class counts, means and per-feature within-class std, from one pass (and
    the labels in chunk order)."""

    def __init__(self, chunks: Chunks, gram: bool = False) -> None:
        n = np.zeros(2)
        s = ss = np.zeros((2, 0))
        self.gram = None
        ref = np.zeros(0, dtype=np.float32)
        labels = []
        for X, y in chunks():
            labels.append(np.asarray(y))
            # per-chunk sums in float32 BLAS, accumulated in float64, of data shifted by
            # the first chunk's mean (so E[x²] - E[x]² does not cancel catastrophically
            # on features whose mean dwarfs their spread); no float64 chunk copies
            if s.shape[1] == 0:
                s, ss = np.zeros((2, X.shape[1])), np.zeros((2, X.shape[1]))
                ref = np.asarray(X, dtype=np.float32).mean(0)
            X = np.asarray(X, dtype=np.float32) - ref
            if gram:
                g = (X.T @ X).astype(np.float64)
                self.gram = g if self.gram is None else self.gram + g
            pos = (y == 1).astype(np.float32)
            sq = X * X
            n[1] += pos.sum()
            n[0] += len(y) - pos.sum()
            s[1] += pos @ X
            s[0] += X.sum(0, dtype=np.float64) - pos @ X
            ss[1] += pos @ sq
            ss[0] += sq.sum(0, dtype=np.float64) - pos @ sq
        if (n == 0).any():
            raise DataError("the data has only one class; a probe needs both",
                            fix="include both misbehavior (1) and benign (0) examples")
        self.n = n
        self.labels = np.concatenate(labels)  # in chunk order, for the logistic fit
        shifted = s.sum(0) / n.sum()
        if self.gram is not None:  # total covariance (divided by n)
            self.cov = self.gram / n.sum() - np.outer(shifted, shifted)
        within = (ss - s**2 / n[:, None]).sum(0) / max(n.sum() - 2, 1)
        self.means = ref + s / n[:, None]
        self.mean = ref + shifted
        self.total_std = np.sqrt(np.maximum(ss.sum(0) / n.sum() - shifted**2, 0.0))
        self.total_std[self.total_std < 1e-12] = 1.0
        # within-class variance, pooled: sum of per-class sums of squares about each mean
        self.std = np.sqrt(np.maximum(within, 0.0))
        self.std[self.std < 1e-12] = 1.0  # constant features carry no signal


class DiffMeansProbe(LinearProbe):
    """Difference of class means: direction ``mean(X | y=1) - mean(X | y=0)``.

    The logit is the Gaussian log-likelihood ratio along that direction, with the
    projections' pooled within-class variance and the class prior, so that
    ``predict_proba`` is roughly calibrated; the direction is the plain mean difference.

    Fitted: ``coef_`` (d_model,), ``intercept_``, ``means_`` (2, d_model).
    """

    kind = "diffmeans"

    def _fit_chunks(self, chunks: Chunks) -> None:
        m = _Moments(chunks)
        diff = m.means[1] - m.means[0]
        norm = np.linalg.norm(diff)
        u = diff / norm if norm > 0 else diff
        mid = (m.means[0] + m.means[1]) / 2
        sq, count = 0.0, 0.0
        for X, y in chunks():  # second pass: projection variance about the class means
            proj = np.asarray(X, dtype=np.float64) @ u
            sq += float(((proj - (m.means[y] @ u)) ** 2).sum())
            count += len(proj)
        var = max(sq / max(count - 2, 1), 1e-12)
        self.means_ = m.means
        self.coef_ = u * (norm / var)
        self.intercept_ = float(-self.coef_ @ mid + np.log(m.n[1] / m.n[0]))


class LDAProbe(LinearProbe):
    """Linear discriminant analysis with a shrunk within-class covariance.

    ``coef_ = Σ⁻¹ (μ₁ - μ₀)`` where Σ is the pooled within-class covariance of the
    standardized features shrunk toward a scaled identity, ``Σ = (1-α) S + α (tr S/d) I``.
    ``shrinkage="auto"`` picks α by Ledoit-Wolf (the same estimate as
    ``sklearn.covariance.ledoit_wolf_shrinkage`` on class-centered, standardized data);
    a float in [0, 1] fixes it.

    Fitted: ``coef_``, ``intercept_``, ``shrinkage_`` (α used), ``means_`` (2, d_model).
    """

    kind = "lda"

    def __init__(self, shrinkage: float | str = "auto") -> None:
        self.shrinkage = shrinkage

    def _fit_chunks(self, chunks: Chunks) -> None:
        if not (self.shrinkage == "auto" or (isinstance(self.shrinkage, (int, float))
                                             and 0 <= self.shrinkage <= 1)):
            raise ProbeError(f"shrinkage must be 'auto' or a number in [0, 1], got "
                             f"{self.shrinkage!r}", fix="use shrinkage='auto'")
        m = _Moments(chunks)
        d = m.means.shape[1]
        scatter = np.zeros((d, d))
        fourth = 0.0
        for X, y in chunks():  # second pass: centered, standardized scatter
            Z = (np.asarray(X, dtype=np.float64) - m.means[y]) / m.std
            scatter += Z.T @ Z
            fourth += float(((Z * Z).sum(1) ** 2).sum())
        n = m.n.sum()
        S = scatter / n
        mu = np.trace(S) / d
        if self.shrinkage == "auto":
            alpha = _ledoit_wolf(S, fourth, n)
        else:
            alpha = float(self.shrinkage)
        cov = (1 - alpha) * S + alpha * mu * np.eye(d)
        delta = (m.means[1] - m.means[0]) / m.std
        w = np.linalg.lstsq(cov, delta, rcond=None)[0]
        self.shrinkage_ = float(alpha)
        self.means_ = m.means
        self.coef_ = w / m.std
        mid = (m.means[0] + m.means[1]) / 2
        self.intercept_ = float(-self.coef_ @ mid + np.log(m.n[1] / m.n[0]))


def _ledoit_wolf(S: np.ndarray, fourth: float, n: float) -> float:
    """Ledoit-Wolf shrinkage from the empirical covariance ``S`` of centered data and
    ``fourth = Σ_k ||x_k||⁴``, following sklearn's ``ledoit_wolf_shrinkage``."""
    d = S.shape[0]
    if d == 1:
        return 0.0
    trace = np.diag(S)
    mu = trace.sum() / d
    delta_ = float((S**2).sum())
    beta = (fourth / n - delta_) / (d * n)
    delta = (delta_ - 2 * mu * trace.sum() + d * mu**2) / d
    beta = min(beta, delta)
    return 0.0 if beta == 0 else float(beta / delta)


class LogisticProbe(LinearProbe):
    """L2-regularized logistic regression on standardized features, fitted with
    full-batch L-BFGS (:mod:`heldout.probes.lbfgs`): in torch on GPU when available,
    on numpy arrays on CPU, where that is about twice as fast.

    The objective is scikit-learn's: ``mean log-loss + ||w||² / (2 C n)`` with an
    unpenalized intercept, so ``C`` means what it means in ``LogisticRegression``.
    Features are standardized inside the probe (``mean_``, ``scale_``) and the
    result folded back, so ``coef_`` acts on raw activations.

    Parameters: ``C`` inverse regularization; ``max_iter`` L-BFGS iterations;
    ``tol`` stop when every gradient component is below it; ``device`` torch
    device for the fit (None: CUDA if available).
    Fitted: ``coef_``, ``intercept_``, ``mean_``, ``scale_``, ``n_iter_``.
    """

    kind = "logistic"

    def __init__(self, C: float = 1.0, max_iter: int = 100, tol: float = 1e-4,
                 device: str | None = None) -> None:
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.device = device

    def _check_params(self) -> None:
        if not (isinstance(self.C, (int, float)) and self.C > 0):
            raise ProbeError(f"C must be a positive number, got {self.C!r}", fix="use C=1.0")
        if not (isinstance(self.max_iter, int) and self.max_iter > 0):
            raise ProbeError(f"max_iter must be a positive integer, got {self.max_iter!r}",
                             fix="use max_iter=100")

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self._check_params()
        W, b, mean, scale, n_iter = fit_logistic_batched(
            X[None], y, C=self.C, max_iter=self.max_iter, tol=self.tol, device=self.device)
        self._set_solution(W[0], float(b[0]), mean[0], scale[0], int(n_iter[0]))

    def _fit_chunks(self, chunks: Chunks) -> None:
        self._check_params()
        d = self.n_features_in_
        m = _Moments(chunks, gram=d <= PRECONDITION_MAX_D)
        dev = default_device(self.device)

        def solver_array(a: np.ndarray) -> Any:  # numpy on CPU, else a tensor on dev
            a = np.asarray(a, dtype=np.float32)
            return a if dev.type == "cpu" else torch.as_tensor(a, device=dev)

        # the standardization as StandardScaler computes it
        mean, scale = solver_array(m.mean[None]), solver_array(m.total_std[None])
        K = None
        if m.gram is not None:
            K = preconditioner(solver_array(m.cov[None] / np.outer(m.total_std, m.total_std)),
                               m.n.sum(), self.C)
        sign = solver_array(2.0 * m.labels - 1.0)
        signed_mean = solver_array((m.n[1] * m.means[1] - m.n[0] * m.means[0])[None] / m.n.sum())
        with one_blas_thread():
            U, b, n_iter = logistic_lbfgs(StreamedSite(chunks, len(sign), d, dev), sign, mean,
                                          scale, K, signed_mean, C=self.C,
                                          max_iter=self.max_iter, tol=self.tol)
        U = U if isinstance(U, np.ndarray) else U.cpu().numpy()
        self._set_solution(U[0], float(b[0]), m.mean, m.total_std, int(n_iter[0]))

    def _set_solution(self, w: np.ndarray, b: float, mean: np.ndarray, scale: np.ndarray,
                      n_iter: int) -> None:
        self.mean_ = np.asarray(mean, dtype=np.float64)
        self.scale_ = np.asarray(scale, dtype=np.float64)
        self.coef_ = np.asarray(w, dtype=np.float64) / self.scale_
        self.intercept_ = float(b - self.coef_ @ self.mean_)
        self.n_iter_ = int(n_iter)

    @classmethod
    def from_solution(cls, params: dict[str, Any], w: np.ndarray, b: float, mean: np.ndarray,
                      scale: np.ndarray, n_iter: int) -> LogisticProbe:
        """A fitted probe from a solution found elsewhere (the batched sweep fit)."""
        probe = cls(**params)
        probe._set_solution(w, b, mean, scale, n_iter)
        probe.n_features_in_ = int(len(w))
        probe.classes_ = np.array([0, 1])
        return probe
