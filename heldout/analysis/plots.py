"""Plots people would rather look at than read: ROC curves and score histograms.

Every function returns a ``matplotlib.figure.Figure`` (shown inline in Jupyter; saved by
the report writer or :func:`heldout.analysis.style.save_figure`). Per-layer sweep plots
live with the sweep (heldout.probes.sweep); the transfer plot is here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from heldout.analysis.style import (
    MonitorColors,
    integer_axis,
    kind_color,
    legend_outside,
    new_figure,
)


def roc_points(scores_pos: np.ndarray, scores_neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) over every distinct threshold.

    scores_pos : array of shape (n_pos,), scores of misbehaving examples;
    scores_neg : array of shape (n_neg,), scores of benign examples. Both outputs
    have shape (n_distinct_scores + 1,) and start at (0, 0) (``sklearn.metrics.roc_curve``
    with every threshold kept).
    """
    from sklearn.metrics import roc_curve

    pos = np.asarray(scores_pos, float).ravel()
    neg = np.asarray(scores_neg, float).ravel()
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    fpr, tpr, _ = roc_curve(y, np.concatenate([pos, neg]), drop_intermediate=False)
    return fpr, tpr


def plot_roc_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], *,
                    title: str = "ROC curves", mark_fpr: float = 0.01) -> Any:
    """curves : {label: (scores of misbehaving examples, scores of benign examples)};
    a label starting with a probe kind (``"logistic @ resid_post:2"``) gets that kind's
    fixed colour.

    Drawn twice: linear axes, and a log FPR axis where the 1% FPR operating point that
    monitors actually use is visible. Returns the figure.
    """
    fig, axes = new_figure(11, 4.2, 1, 2)
    axes = axes[0]
    for label, (pos, neg) in curves.items():
        fpr, tpr = roc_points(pos, neg)
        color = kind_color(label.split(" ")[0])
        for ax in axes:
            ax.plot(fpr, tpr, label=label, drawstyle="steps-post", color=color)
    for ax, scale in zip(axes, ("linear", "log")):
        ax.set_xscale(scale)
        ax.axvline(mark_fpr, color="grey", ls=":", lw=1)
        ax.set_xlabel("false-positive rate on benign control" +
                      (" (log)" if scale == "log" else ""))
        ax.set_ylabel("recall of misbehavior")
        ax.grid(alpha=0.3)
    axes[1].set_xlim(left=1e-3)
    axes[1].annotate(f"{mark_fpr:.0%} FPR", (mark_fpr, 0.02), fontsize=8, color="grey")
    axes[0].plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    legend_outside(axes[1])
    fig.suptitle(title)
    return fig


def plot_score_histograms(groups: Mapping[str, np.ndarray], *,
                          threshold: float | None = None,
                          title: str = "Probe scores") -> Any:
    """groups : {label: scores}, e.g. honest / misbehaving / control; one histogram each
    on shared bins, with the calibrated threshold as a vertical line. Returns the figure."""
    values = [np.asarray(v, float) for v in groups.values()]
    lo = min(float(v.min()) for v in values if v.size)
    hi = max(float(v.max()) for v in values if v.size)
    bins = np.linspace(lo, hi, 41)
    fig, axes = new_figure(8, 4)
    ax = axes[0, 0]
    for label, scores in groups.items():
        ax.hist(scores, bins=bins, alpha=0.5, label=f"{label} (n={len(scores)})", density=True)
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1, label="threshold @1% control FPR")
    ax.set_xlabel("probe logit")
    ax.set_ylabel("density")
    ax.set_title(title)
    legend_outside(ax)
    return fig


def plot_transfer(table: Any, *, fpr: float = 0.01) -> Any:
    """AUROC against layer with 95% CI bands, one line per (probe, test set) of a
    :func:`heldout.probes.transfer.transfer` table: colour per test set, line style
    per probe; the in-distribution line (the train store's own test split) in black.
    Returns the figure."""
    fig, axes = new_figure(8, 4.2)
    ax = axes[0, 0]
    colors = MonitorColors(table.loc[~table["in_distribution"], "test"].astype(str))
    styles = dict(zip(sorted(table["probe"].unique()), ("-", "--", ":", "-.") * 4))
    keys = ["probe", "test"] + (["kind"] if table["kind"].nunique() > 1 else [])
    for key, group in table.groupby(keys, sort=True):
        probe, test, *kind = key
        group = group.sort_values("layer")
        color = "black" if bool(group["in_distribution"].iloc[0]) else colors.color(str(test))
        label = f"{probe} on {test}" + (f" ({kind[0]})" if kind else "")
        ax.plot(group["layer"], group["auroc"], marker="o", ls=styles[probe], color=color,
                label=label)
        ax.fill_between(group["layer"], group["auroc_low"], group["auroc_high"], alpha=0.1,
                        color=color)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("layer")
    ax.set_ylabel("AUROC (no threshold)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    integer_axis(ax.xaxis)
    ax.set_title(f"Transfer (thresholds for recall/accuracy at {fpr:.0%} FPR: see the table)",
                 fontsize=9)
    legend_outside(ax)
    return fig
