"""Metrics equal scikit-learn's (ties included); recall at FPR on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, brier_score_loss, roc_auc_score

from heldout.analysis.metrics import (
    accuracy,
    auroc,
    bootstrap_ci,
    brier_score,
    expected_calibration_error,
    recall_at_fpr,
    threshold_at_fpr,
)
from heldout.errors import ConfigError, DataError


@pytest.fixture()
def tied():  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    scores = np.round(rng.normal(size=500) + y, 1)  # rounding makes many ties
    return y, scores


def test_auroc_equals_sklearn_with_ties(tied) -> None:  # type: ignore[no-untyped-def]
    y, scores = tied
    assert auroc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert auroc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    with pytest.raises(DataError, match="both classes"):
        auroc([1, 1], [0.1, 0.2])


def test_accuracy_brier_ece_equal_sklearn(tied) -> None:  # type: ignore[no-untyped-def]
    y, scores = tied
    prob = 1 / (1 + np.exp(-scores))
    assert accuracy(y, scores > 0.5) == accuracy_score(y, scores > 0.5)
    assert brier_score(y, prob) == pytest.approx(brier_score_loss(y, prob))
    prob_true, prob_pred = calibration_curve(y, prob, n_bins=10, strategy="uniform")
    ids = np.searchsorted(np.linspace(0, 1, 11)[1:-1], prob)
    counts = np.bincount(ids, minlength=10)
    counts = counts[counts > 0]
    expected = float((counts / len(y) * np.abs(prob_true - prob_pred)).sum())
    assert expected_calibration_error(y, prob) == pytest.approx(expected)
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0


def test_threshold_and_recall_by_hand() -> None:
    control = np.arange(1, 201, dtype=float)  # 200 benign scores 1..200
    # 1% of 200 = 2 may lie strictly above: t = 198
    assert threshold_at_fpr(control, 0.01) == 198.0
    assert recall_at_fpr([197, 198, 199, 300], control, 0.01) == 0.5
    # ties at the top: no value has exactly 2 above; smallest t with <= 2 above is 199
    tied = np.r_[np.arange(1, 198, dtype=float), 199, 199, 199]
    assert threshold_at_fpr(tied, 0.01) == 199.0
    assert recall_at_fpr([199, 199.5], tied, 0.01) == 0.5  # ties with t never fire
    # fewer than 1/fpr control scores: no control may fire, so t = max(control)
    assert threshold_at_fpr([0.2, 0.9, 0.4], 0.01) == 0.9
    assert recall_at_fpr([0.9, 0.95], [0.2, 0.9, 0.4], 0.01) == 0.5
    assert threshold_at_fpr([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    with pytest.raises(DataError, match="empty"):
        threshold_at_fpr([], 0.01)
    with pytest.raises(ConfigError):
        threshold_at_fpr([1.0], 1.5)


def test_realized_fpr_never_exceeds_target() -> None:
    rng = np.random.default_rng(0)
    for n in (5, 50, 99, 100, 101, 1000):
        control = np.round(rng.normal(size=n), 1)
        for fpr in (0.01, 0.05, 0.2):
            t = threshold_at_fpr(control, fpr)
            assert (control > t).mean() <= fpr
            assert t in control


def test_bootstrap_ci_covers_and_is_seeded(tied) -> None:  # type: ignore[no-untyped-def]
    y, scores = tied
    ci = bootstrap_ci(auroc, y, scores, strata=y, n_resamples=200, seed=0)
    assert ci.low < ci.estimate < ci.high and ci.high - ci.low < 0.15
    assert ci == bootstrap_ci(auroc, y, scores, strata=y, n_resamples=200, seed=0)
    rec = bootstrap_ci(lambda p, c: recall_at_fpr(p, c, 0.05), scores[y == 1], scores[y == 0],
                       independent=True, n_resamples=100)
    assert 0 <= rec.low <= rec.estimate <= rec.high <= 1
    with pytest.raises(DataError, match="differ in length"):
        bootstrap_ci(auroc, y, scores[:10])
