"""Detection metrics: AUROC, recall at a fixed false-positive rate, accuracy,
calibration (ECE, Brier), and bootstrap confidence intervals.

Each metric that scikit-learn also has returns the same number (ties included); the
tests check this. Conventions: label 1 = misbehavior; a higher score = more suspect.

Thresholds at a false-positive rate follow deception-probe practice: the threshold is
fixed on a *control* set of benign examples, then recall is measured on misbehaving
ones. :func:`threshold_at_fpr` returns the smallest control score ``t`` such that the
fraction of control scores strictly above ``t`` is at most ``fpr``; a score fires when
it is strictly above ``t``. Ties at ``t`` therefore never fire, so the realized
control FPR is ≤ ``fpr`` however scores tie. With fewer than ``1/fpr`` control scores
no control score may fire, and the threshold is the largest control score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from heldout.errors import ConfigError, DataError


def _scores(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).ravel()
    if arr.size == 0:
        raise DataError(f"{what} is empty", fix=f"pass at least one {what} value")
    if not np.isfinite(arr).all():
        raise DataError(f"{what} contains NaN or inf", fix="check the probe's inputs")
    return arr


def _binary(y: Any, n: int) -> np.ndarray:
    y_arr = np.asarray(y).ravel()
    if len(y_arr) != n:
        raise DataError(f"y has {len(y_arr)} labels for {n} scores", fix="pass one label per score")
    if not set(np.unique(y_arr).tolist()) <= {0, 1}:
        raise DataError("labels must be 0/1", fix="map labels to 1 = misbehavior, 0 = benign")
    return y_arr.astype(np.int64)


def auroc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve; ties count one half (= ``roc_auc_score``).

    y_true : array of shape (n,) of 0/1; scores : array of shape (n,).
    """
    s = _scores(scores, "scores")
    y = _binary(y_true, len(s))
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataError("AUROC needs both classes, but y has only one",
                        fix="evaluate on data with misbehavior and benign examples")
    ranks = rankdata(s)  # average ranks: Mann-Whitney U with ties counted 1/2
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _check_fpr(fpr: float) -> float:
    if not 0 <= fpr < 1:
        raise ConfigError(f"fpr must be in [0, 1), got {fpr}", fix="use e.g. fpr=0.01")
    return float(fpr)


def threshold_at_fpr(control_scores: Any, fpr: float = 0.01) -> float:
    """Smallest control score ``t`` with ``mean(control > t) <= fpr`` (see module doc).

    control_scores : array of shape (n_control,) from benign examples.
    """
    c = np.sort(_scores(control_scores, "control scores"))
    k = int(np.floor(_check_fpr(fpr) * len(c) + 1e-9))  # control scores allowed above t
    return float(c[len(c) - 1 - min(k, len(c) - 1)])


def recall_at_fpr(scores_pos: Any, control_scores: Any, fpr: float = 0.01) -> float:
    """Fraction of ``scores_pos`` (misbehaving examples) strictly above
    ``threshold_at_fpr(control_scores, fpr)``."""
    pos = _scores(scores_pos, "positive scores")
    return float((pos > threshold_at_fpr(control_scores, fpr)).mean())


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of predictions equal to the labels (= ``accuracy_score``)."""
    y_pred_arr = np.asarray(y_pred).ravel()
    y = np.asarray(y_true).ravel()
    if len(y) != len(y_pred_arr) or len(y) == 0:
        raise DataError(f"got {len(y)} labels and {len(y_pred_arr)} predictions",
                        fix="pass one prediction per label")
    return float((y == y_pred_arr).mean())


def brier_score(y_true: Any, prob: Any) -> float:
    """Mean squared error of P(misbehavior) (= ``brier_score_loss``)."""
    p = _scores(prob, "probabilities")
    y = _binary(y_true, len(p))
    return float(((p - y) ** 2).mean())


def expected_calibration_error(y_true: Any, prob: Any, n_bins: int = 10) -> float:
    """ECE with ``n_bins`` equal-width bins on [0, 1]: ``Σ_b (n_b/n) |acc_b - conf_b|``.

    Bins are assigned exactly as ``sklearn.calibration.calibration_curve(strategy=
    "uniform")`` assigns them, so ECE equals the count-weighted gap of its curve.
    """
    p = _scores(prob, "probabilities")
    y = _binary(y_true, len(p))
    if (p < 0).any() or (p > 1).any():
        raise DataError("probabilities must lie in [0, 1]", fix="pass predict_proba(X)[:, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], p)
    conf = np.bincount(ids, weights=p, minlength=n_bins)
    hits = np.bincount(ids, weights=y, minlength=n_bins)
    return float(np.abs(hits - conf).sum() / len(p))


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with a percentile bootstrap interval."""

    estimate: float
    """The metric on the full data."""
    low: float
    """Lower bound (the ``(1-confidence)/2`` quantile of the bootstrap replicates)."""
    high: float
    """Upper bound."""
    confidence: float
    """Nominal coverage, e.g. 0.95."""


def bootstrap_ci(metric: Callable[..., float], *arrays: Any, n_resamples: int = 1000,
                 confidence: float = 0.95, strata: Any = None, independent: bool = False,
                 seed: int = 0) -> ConfidenceInterval:
    """Percentile bootstrap interval of ``metric(*arrays)``.

    By default the arrays are rows of one table (same length) and are resampled
    together; ``strata`` (e.g. the labels) resamples within each stratum, so AUROC
    never sees a one-class replicate. ``independent=True`` resamples each array on its
    own, for metrics over separate samples such as ``recall_at_fpr(pos, control)``.
    """
    if not arrays:
        raise ConfigError("bootstrap_ci needs at least one array", fix="pass the metric's inputs")
    if not 0 < confidence < 1 or n_resamples < 1:
        raise ConfigError(f"need 0 < confidence < 1 and n_resamples >= 1, got {confidence}, "
                          f"{n_resamples}", fix="use confidence=0.95, n_resamples=1000")
    arrs = [np.asarray(a) for a in arrays]
    rng = np.random.default_rng(seed)
    if not independent and len({len(a) for a in arrs}) != 1:
        raise DataError("arrays differ in length", fix="pass independent=True to resample "
                        "each array on its own")
    groups: list[np.ndarray] = [np.arange(len(arrs[0]))]
    if strata is not None and not independent:
        s = np.asarray(strata)
        groups = [np.flatnonzero(s == v) for v in np.unique(s)]
    reps = np.empty(n_resamples)
    for r in range(n_resamples):
        if independent:
            sample = [a[rng.integers(0, len(a), len(a))] for a in arrs]
        else:
            idx = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
            sample = [a[idx] for a in arrs]
        reps[r] = metric(*sample)
    tail = (1 - confidence) / 2
    low, high = np.quantile(reps, [tail, 1 - tail])
    return ConfidenceInterval(float(metric(*arrs)), float(low), float(high), confidence)


__all__ = ["ConfidenceInterval", "accuracy", "auroc", "bootstrap_ci", "brier_score",
           "expected_calibration_error", "recall_at_fpr", "threshold_at_fpr"]
