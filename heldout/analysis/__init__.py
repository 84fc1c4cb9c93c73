"""Analysis of probe scores: metrics (and, from other modules, verdicts, plots, reports)."""

from __future__ import annotations

from heldout.analysis.metrics import (
    ConfidenceInterval,
    accuracy,
    auroc,
    bootstrap_ci,
    brier_score,
    expected_calibration_error,
    recall_at_fpr,
    threshold_at_fpr,
)

__all__ = ["ConfidenceInterval", "accuracy", "auroc", "bootstrap_ci", "brier_score",
           "expected_calibration_error", "recall_at_fpr", "threshold_at_fpr"]
