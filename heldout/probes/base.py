"""The probe contract: what every probe in heldout offers, and the shared checks.

A probe is a binary classifier of activations, label 1 = misbehavior. It keeps
scikit-learn's estimator contract (``fit``, ``decision_function``, ``predict_proba``,
``predict``, ``score``, ``get_params``/``set_params``, ``clone``) so it drops into
pipelines and cross-validation, and it also scores torch tensors differentiably,
which is what penalized fine-tuning puts in its loss (:class:`TorchScorer`).

Inputs
------
Pooled probes (one vector per example) take ``X : array of shape (n_samples, d_model)``.
Per-token probes take ``X : array of shape (n_samples, max_tokens, d_model)`` padded
with NaN: a token whose features are all NaN is padding, and every example needs at
least one real token. A padded array is a plain ndarray, so sklearn's indexing,
cloning and cross-validation work unchanged; :func:`pad_tokens` builds it from the
store's ragged ``(values, offsets)`` pair.

Labels must be 0/1 (bool accepted): the positive class always means misbehavior, so
labels such as ``{"honest", "lie"}`` or ``{1, 2}`` are refused instead of guessed.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils import check_array
from sklearn.utils.multiclass import type_of_target
from torch import Tensor

from heldout.errors import DataError, NotFittedError, ProbeError


@runtime_checkable
class TorchScorer(Protocol):
    """Differentiable scoring of pooled activations by a fitted probe.

    ``torch_logits(acts: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch"]``
    returns the probe's logit (same values as ``decision_function``) as a function of
    ``acts``, on ``acts``' device and dtype. Gradients flow into ``acts`` only: the
    probe's parameters are constants, so a loss built on them trains the model, never
    the detector.
    """

    def torch_logits(self, acts: Tensor) -> Tensor: ...


@runtime_checkable
class TokenTorchScorer(Protocol):
    """Differentiable scoring of per-token activations by a fitted per-token probe.

    ``torch_logits(acts: Float[Tensor, "batch pos d_model"],
    mask: Bool[Tensor, "batch pos"]) -> Float[Tensor, "batch"]``: one logit per
    sequence, pooling only over positions where ``mask`` is true (e.g. response
    tokens). Same gradient rules as :class:`TorchScorer`.
    """

    def torch_logits(self, acts: Tensor, mask: Tensor) -> Tensor: ...


def default_device(device: str | None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class ProbeNotFittedError(NotFittedError, SklearnNotFittedError):
    """heldout's NotFittedError that is also scikit-learn's, so sklearn tools that
    catch theirs (``check_is_fitted`` users, ``check_estimator``) recognize it."""


def check_labels(y: Any, n_samples: int | None = None) -> np.ndarray:
    """Return ``y`` as int64 0/1 of shape (n_samples,), or raise DataError."""
    if y is None:
        raise DataError("this probe requires y to be passed, but the target y is None",
                        fix="pass one 0/1 label per example")
    y_arr = np.asarray(y)
    if y_arr.ndim == 2 and y_arr.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected; "
                      "using y[:, 0]", DataConversionWarning, stacklevel=3)
        y_arr = y_arr[:, 0]
    if y_arr.ndim != 1:
        raise DataError(f"y must be 1-D, got shape {y_arr.shape}",
                        fix="pass one 0/1 label per example")
    if n_samples is not None and len(y_arr) != n_samples:
        raise DataError(f"X has {n_samples} samples but y has {len(y_arr)}",
                        fix="pass one label per row of X")
    numeric = y_arr.dtype.kind in "biuf"
    if numeric and y_arr.size and type_of_target(y_arr).startswith("continuous"):
        raise DataError("Unknown label type: continuous values in y",
                        fix="label each example 1 (misbehavior) or 0 (benign)")
    values = np.unique(y_arr)
    if len(values) > 2:
        raise DataError(
            f"y has {len(values)} classes. Only binary classification is supported.",
            fix="label each example 1 (misbehavior) or 0 (benign)")
    if not (numeric and set(values.tolist()) <= {0, 1}):
        shown = ", ".join(repr(v) for v in values.tolist()[:5])
        # "Unknown label type" is sklearn's wording, which its tools look for
        raise DataError(f"labels must be 0/1 (Unknown label type), got values {shown}",
                        fix="map labels to 1 = misbehavior, 0 = benign before fitting")
    if len(values) < 2:
        raise DataError(f"y has only one class ({values.tolist()}); a probe needs both",
                        fix="include both misbehavior (1) and benign (0) examples")
    return y_arr.astype(np.int64)


def check_finite(X: np.ndarray, what: str = "X") -> None:
    """Raise DataError if ``X`` holds NaN or inf."""
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=tuple(range(1, X.ndim))).sum())
        raise DataError(f"{what} contains NaN or inf in {bad} row(s)",
                        fix="drop or recompute those activations (fp16 overflow is "
                            "a common cause)")


class BaseProbe(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Shared behaviour of every probe. Subclasses implement ``_fit``, ``_decision``
    and ``torch_logits``, and ``_state``/``_set_state`` for save/load.

    Fitted attributes common to all probes: ``classes_`` (``[0, 1]``),
    ``n_features_in_`` (d_model), and optionally ``threshold_`` (a decision-function
    threshold calibrated on benign control data, see :meth:`calibrate`).
    """

    kind: ClassVar[str] = ""
    """Registry name used in files and on the command line (``"logistic"``, ...)."""
    token_level: ClassVar[bool] = False
    """True for per-token probes that take (n_samples, max_tokens, d_model) input."""

    # -- validation --------------------------------------------------------------
    def _validate_X(self, X: Any, *, reset: bool) -> np.ndarray:
        ndim = 3 if self.token_level else 2
        try:
            X_arr = check_array(X, dtype=[np.float32, np.float64], ensure_all_finite=False,
                                allow_nd=self.token_level, ensure_2d=True)
        except ValueError as err:
            raise DataError(str(err), fix=f"pass X as a float array with {ndim} "
                            "dimensions (samples first)") from err
        if X_arr.ndim != ndim:
            raise DataError(f"{type(self).__name__} takes a {ndim}-D X, got shape "
                            f"{X_arr.shape}",
                            fix="per-token probes take (n, max_tokens, d) padded with "
                                "NaN; pooled probes take (n, d)")
        if self.token_level:
            check_token_array(X_arr)
        else:
            check_finite(X_arr)
        n_features = X_arr.shape[-1]
        if reset:
            self.n_features_in_ = n_features
        else:
            self._check_fitted()
            if n_features != self.n_features_in_:
                raise ProbeError(
                    f"X has {n_features} features, but {type(self).__name__} is "
                    f"expecting {self.n_features_in_} features as input",
                    fix="score activations from the site and model the probe was "
                        "fitted on")
        return X_arr

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise ProbeNotFittedError(f"this {type(self).__name__} is not fitted yet",
                                      fix="call fit first")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "n_features_in_") and hasattr(self, "classes_")

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        tags.input_tags.allow_nan = False
        return tags

    # -- sklearn API ---------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> BaseProbe:
        """Fit on ``X : array of shape (n_samples, d_model)`` (per-token probes:
        (n_samples, max_tokens, d_model)) and ``y : array of shape (n_samples,)`` of 0/1."""
        X_arr = self._validate_X(X, reset=True)
        y_arr = check_labels(y, X_arr.shape[0])
        for attr in ("threshold_", "meta_"):  # a refit invalidates both
            self.__dict__.pop(attr, None)
        self._fit(X_arr, y_arr)
        self.classes_ = np.array([0, 1])
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits, ``array of shape (n_samples,)``: > 0 leans misbehavior."""
        self._check_fitted()
        return np.asarray(self._decision(self._validate_X(X, reset=False)), dtype=np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """``array of shape (n_samples, 2)``: columns P(benign), P(misbehavior)."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """0/1 labels at logit 0 (use :meth:`flag` for the calibrated threshold)."""
        return (self.decision_function(X) > 0).astype(np.int64)

    def flag(self, X: Any) -> np.ndarray:
        """0/1 flags at the calibrated ``threshold_`` (strictly above fires)."""
        if not hasattr(self, "threshold_"):
            raise ProbeNotFittedError(f"this {type(self).__name__} has no calibrated "
                                      "threshold", fix="call calibrate(control_X, fpr=...) first")
        return (self.decision_function(X) > self.threshold_).astype(np.int64)

    def calibrate(self, control_X: Any, fpr: float = 0.01) -> BaseProbe:
        """Set ``threshold_`` so that at most ``fpr`` of the benign ``control_X`` scores
        strictly above it (see :func:`heldout.analysis.metrics.threshold_at_fpr`)."""
        from heldout.analysis.metrics import threshold_at_fpr

        self.threshold_ = float(threshold_at_fpr(self.decision_function(control_X), fpr))
        return self

    # -- subclass hooks ------------------------------------------------------------
    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _decision(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Fitted state as (tensors, JSON-able extras), for :mod:`heldout.probes.io`."""
        raise NotImplementedError

    def _set_state(self, tensors: dict[str, Tensor], extras: dict[str, Any]) -> None:
        raise NotImplementedError


def check_token_array(X: np.ndarray) -> None:
    """Check a NaN-padded (n, max_tokens, d) array: padding rows are all-NaN, real
    tokens finite, and each example has at least one real token."""
    nan = np.isnan(X)
    pad = nan.all(axis=2)
    partial = nan.any(axis=2) & ~pad
    if partial.any() or np.isinf(X).any():
        raise DataError("X contains NaN or inf inside real tokens",
                        fix="padding tokens must be entirely NaN; recompute the others")
    empty = pad.all(axis=1)
    if empty.any():
        raise DataError(f"{int(empty.sum())} example(s) have no tokens (all padding)",
                        fix="drop examples with no response tokens")


def pad_tokens(values: np.ndarray, offsets: np.ndarray, max_tokens: int | None = None
               ) -> np.ndarray:
    """Ragged per-token activations to the padded layout per-token probes take.

    values : array of shape (n_tokens, d_model); offsets : array of shape (n_rows + 1,)
    (row i is ``values[offsets[i]:offsets[i+1]]``). Returns an array of shape
    (n_rows, max_tokens, d_model), NaN where a row has fewer tokens. With ``max_tokens``
    smaller than the longest row, rows keep their *last* ``max_tokens`` tokens.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    if len(lengths) == 0 or (lengths <= 0).any():
        raise DataError("every row needs at least one token (offsets must increase)",
                        fix="drop examples with no response tokens")
    T = int(lengths.max()) if max_tokens is None else int(max_tokens)
    out = np.full((len(lengths), T, values.shape[1]), np.nan, dtype=np.float32)
    for i, (start, stop) in enumerate(zip(offsets[:-1], offsets[1:])):
        start = max(int(start), int(stop) - T)
        out[i, : stop - start] = values[start:stop]
    return out


def token_mask(X: np.ndarray) -> np.ndarray:
    """Bool array of shape (n_samples, max_tokens): True at real (non-padding) tokens."""
    return ~np.isnan(X).all(axis=2)
