from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from heldout.analysis.plots import plot_roc_curves, plot_score_histograms, roc_points
from heldout.analysis.report import Section, write_report


def test_roc_points_recover_a_planted_curve() -> None:
    # Thresholds 3, 2.5, 2, 1, 0.5 (descending) pass positives 1, 1, 2, 3, 3 of 3 and
    # negatives 0, 1, 1, 1, 2 of 2; the curve starts at (0, 0).
    fpr, tpr = roc_points(np.array([3.0, 2.0, 1.0]), np.array([2.5, 0.5]))
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    # A tie between a positive and a negative is one point, not a staircase.
    fpr, tpr = roc_points(np.array([1.0, 1.0]), np.array([1.0, 0.0]))
    np.testing.assert_allclose(fpr, [0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 1, 1])


def test_roc_points_integrate_to_sklearn_auroc() -> None:
    rng = np.random.default_rng(0)
    pos = np.round(rng.normal(1.0, 1.0, 300), 1)  # rounding plants ties
    neg = np.round(rng.normal(0.0, 1.0, 400), 1)
    fpr, tpr = roc_points(pos, neg)
    area = float(np.trapezoid(tpr, fpr))
    expected = roc_auc_score(np.r_[np.ones(300), np.zeros(400)], np.r_[pos, neg])
    assert abs(area - expected) < 1e-12
    assert fpr[-1] == tpr[-1] == 1.0


def test_report_writes_markdown_html_and_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(2, 1, 50), rng.normal(0, 1, 50)
    roc = plot_roc_curves({"logistic": (pos, neg)}, tmp_path / "roc.png")
    hist = plot_score_histograms({"misbehaving": pos, "control": neg}, tmp_path / "hist.png",
                                 threshold=1.5)
    for png in (roc, hist):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.DataFrame({"site": ["resid_post:1"], "auroc": [0.987654]})
    md, html = write_report(tmp_path, "Demo", [Section("Probes", "Text.", [table], [roc, hist])],
                            summary="One line.")
    text = md.read_text()
    assert "| resid_post:1 | 0.988 |" in text and "![roc](roc.png)" in text
    assert '<img src="hist.png"' in html.read_text()


def test_report_lists_and_missing_values(tmp_path: Path) -> None:
    table = pd.DataFrame({"quantity": ["cross-model", "recall"], "base": [None, 0.5]})
    md, html = write_report(tmp_path, "R", [Section("Verdict", "Meaning.\n\n- one\n- two <b>",
                                                    [table])])
    page = html.read_text()
    assert "<ul><li>one</li><li>two &lt;b&gt;</li></ul>" in page
    assert "<p>Meaning.</p>" in page and "NaN" not in page and "<td>-</td>" in page
    assert "| cross-model | - |" in md.read_text()
