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


def test_report_saves_figures_with_captions(tmp_path: Path) -> None:
    from heldout.analysis.report import Plot
    from heldout.analysis.style import save_figure

    rng = np.random.default_rng(1)
    pos, neg = rng.normal(2, 1, 50), rng.normal(0, 1, 50)
    roc = plot_roc_curves({"logistic": (pos, neg)})
    hist = save_figure(plot_score_histograms({"misbehaving": pos, "control": neg},
                                             threshold=1.5), tmp_path / "hist.png")
    table = pd.DataFrame({"site": ["resid_post:1"], "auroc": [0.987654], "n": [400.0]})
    md, html = write_report(tmp_path, "Demo", [Section("Probes", "Text.", [table], [
        Plot(roc, "Look at 1% FPR.", "roc"), Plot(hist, "Scores.")])], summary="One line.")
    assert (tmp_path / "figures" / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    # counts print as integers, other floats with three decimals
    assert "| resid_post:1 | 0.988 | 400 |" in text
    assert "![Look at 1% FPR.](figures/roc.png)" in text
    page = html.read_text()
    assert '<img src="hist.png" alt="Scores.">' in page and "<figcaption>Look at 1% FPR." in page
    assert "<td>400</td>" in page and "400.000" not in page


def test_plots_do_not_switch_the_matplotlib_backend() -> None:
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import numpy as np; "
            "from heldout.analysis.plots import plot_roc_curves; "
            "from heldout.analysis.curves import run_figures; import heldout.demo; "
            "fig = plot_roc_curves({'logistic': (np.ones(3), np.zeros(3))}); "
            "import matplotlib.pyplot as plt; from matplotlib.figure import Figure; "
            "print(matplotlib.get_backend(), isinstance(fig, Figure), "
            "fig._repr_png_()[:4] == b'\\x89PNG', len(plt.get_fignums()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    # the backend is untouched, pyplot holds no figure, and Jupyter can show it as PNG
    assert out == ["svg", "True", "True", "0"]


def test_report_lists_and_missing_values(tmp_path: Path) -> None:
    table = pd.DataFrame({"quantity": ["cross-model", "recall"], "base": [None, 0.5]})
    md, html = write_report(tmp_path, "R", [Section("Verdict", "Meaning.\n\n- one\n- two <b>",
                                                    [table])])
    page = html.read_text()
    assert "<ul><li>one</li><li>two &lt;b&gt;</li></ul>" in page
    assert "<p>Meaning.</p>" in page and "NaN" not in page and "<td>-</td>" in page
    assert "| cross-model | - |" in md.read_text()
