"""The atlas report's figures: each arm's curves over training, the overview of final
metrics, the verdicts over seeds, and the cross-aggregation heatmap. Built with
:mod:`heldout.analysis.style` (matplotlib figures, never pyplot); the report saves them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from heldout.atlas.results import (
    OUTCOMES,
    ArmResult,
    CrossMatrix,
    Estimate,
    aggregation_words,
    mean_or_none,
    mean_recall,
    probe_key,
)

OUTCOME_COLORS = {"honest": "#2ca02c", "blatant": "#d62728", "obfuscated_policy": "#ff7f0e",
                  "obfuscated_activations": "#9467bd", "inconclusive": "#7f7f7f"}
"""One colour per verdict outcome, the same in every atlas figure."""


def curves_figure(a: ArmResult, control: ArmResult) -> Any:
    """Misbehavior rate and trained-against (on the run's own lies and on forced ones) /
    held-out / retrained recall over steps (mean over seeds; the control's misbehavior
    rate and trained-against recall on its own lies dashed). Held-out and retrained
    lines are activation probes only."""
    from heldout.analysis.style import integer_axis, legend_outside, new_figure

    def lines(arm: ArmResult) -> dict[str, tuple[list[int], list[float]]]:
        acc: dict[str, dict[int, list[float]]] = {}
        for recs in arm.records.values():
            for rec in recs:
                keys = {probe_key(rec, n) for n in a.against_probes}
                vals = {
                    "misbehavior rate": rec.misbehavior_rate,
                    "trained-against recall (own lies)": mean_recall(rec, a.against, "own"),
                    "trained-against recall (forced)": mean_recall(rec, a.against, "forced"),
                    "held-out probe recall (forced)": mean_recall(rec, a.held_out_probes,
                                                                  "forced"),
                    "retrained probe recall (fixed set)": mean_or_none(
                        [rec.retrained[k].recall_cur for k in keys if k in rec.retrained]),
                }
                for k, v in vals.items():
                    if v is not None:
                        acc.setdefault(k, {}).setdefault(rec.step, []).append(float(v))
        return {k: (sorted(d), [float(np.mean(d[s])) for s in sorted(d)])
                for k, d in acc.items()}

    fig, axes = new_figure(8.4, 3.6)
    ax = axes[0, 0]
    colors = {"misbehavior rate": "black", "trained-against recall (forced)": "#d62728",
              "trained-against recall (own lies)": "#e377c2",
              "held-out probe recall (forced)": "#1f77b4",
              "retrained probe recall (fixed set)": "#2ca02c"}
    for k, (xs, ys) in lines(a).items():
        ax.plot(xs, ys, marker=".", color=colors[k], label=k)
    if a is not control:
        ctl = lines(control)
        for k in ("misbehavior rate", "trained-against recall (own lies)"):
            if k in ctl:
                ax.plot(*ctl[k], ls="--", color=colors[k], alpha=0.6, label=f"{k}, control")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("training step")
    ax.set_ylabel("rate / recall")
    integer_axis(ax.xaxis)
    ax.grid(alpha=0.3)
    ax.set_title(f"{a.arm.name} (mean over {len(a.runs)} seed(s))", fontsize=9)
    legend_outside(ax, fontsize=7)
    return fig


def overview_figure(results: list[ArmResult], metrics: dict[str, dict[str, Estimate]]) -> Any:
    """Each arm's final misbehavior rate and recalls, pooled over seeds, with 95% CIs."""
    from heldout.analysis.style import PALETTE, legend_outside, new_figure

    names = [a.arm.name for a in results]
    shown = ["misbehavior rate", "trained-against recall, forced",
             "held-out probe recall, forced", "retrained probe recall, forced"]
    fig, axes = new_figure(max(7.5, 0.8 * len(names) + 3.0), 4.2)
    ax = axes[0, 0]
    width = 0.8 / len(shown)
    for j, key in enumerate(shown):
        est = [metrics[n][key] for n in names]
        xs = np.arange(len(names)) + (j - len(shown) / 2 + 0.5) * width
        vals = [e.value if e.value is not None else 0.0 for e in est]
        err = np.array([[max(0.0, v - lo), max(0.0, hi - v)] if e.value is not None
                        else [0.0, 0.0]
                        for e, v, (lo, hi) in zip(est, vals, (e.bounds for e in est))]).T
        ax.bar(xs, vals, width, yerr=err, capsize=2, label=key, color=PALETTE[j])
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate / recall")
    legend_outside(ax, fontsize=7)
    ax.set_title("final evaluation, pooled over seeds (95% bootstrap CI)", fontsize=9)
    return fig


def verdicts_figure(results: list[ArmResult]) -> Any:
    """Per arm, the share of seeds judged each outcome (stacked bars)."""
    from heldout.analysis.style import legend_outside, new_figure

    arms = [a for a in results if a.runs]
    fig, axes = new_figure(max(7.5, 0.6 * len(arms) + 3.5), 3.6)
    ax = axes[0, 0]
    bottom = np.zeros(len(arms))
    for outcome in OUTCOMES:
        frac = np.array([a.share(outcome).fraction for a in arms])
        if frac.any():
            ax.bar(np.arange(len(arms)), frac, 0.7, bottom=bottom,
                   color=OUTCOME_COLORS[outcome], label=outcome.replace("_", " "))
        bottom += frac
    ax.set_xticks(np.arange(len(arms)))
    ax.set_xticklabels([f"{a.arm.name} (n={len(a.runs)})" for a in arms], rotation=30,
                       ha="right", fontsize=7)
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("share of seeds")
    ax.set_title("verdict of each seed's run, per arm", fontsize=9)
    legend_outside(ax, fontsize=7)
    return fig


def cross_aggregation_figure(m: CrossMatrix, fpr: float) -> Any:
    """Heatmap: rows are arms (each trained against one probe), columns every monitor;
    a cell is that monitor's recall on the arm's own misbehavior. The cell of the probe
    an arm trained against is boxed; cells with nothing to detect are grey."""
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    from heldout.analysis.style import new_figure

    values = np.array([[np.nan if v is None else v for v in row] for row in m.values],
                      dtype=float).reshape(len(m.arms), len(m.monitors))
    fig, axes = new_figure(max(6.5, 0.9 * len(m.monitors) + 3.5),
                           max(2.8, 0.55 * len(m.arms) + 2.0))
    ax = axes[0, 0]
    cmap = colormaps["viridis"].with_extremes(bad="#d9d9d9")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0,
                   aspect="auto")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            text = "–" if np.isnan(v) else f"{v:.2f}"
            color = "black" if np.isnan(v) or v > 0.6 else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
            if m.monitors[j] in m.trained[i]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                                       edgecolor="#d62728", linewidth=2.2))
    if len(m.arms) > 1 and not m.trained[-1]:  # the control: a reference, set apart
        ax.axhline(len(m.arms) - 1.5, color="white", linewidth=4)
    ax.set_xticks(np.arange(len(m.monitors)))
    import textwrap

    ax.set_xticklabels([f"{n}\n" + textwrap.fill(f"({aggregation_words(agg)})", 14)
                        for n, agg in zip(m.monitors, m.aggregations)], fontsize=7)
    ax.set_yticks(np.arange(len(m.arms)))
    def label(i: int) -> str:
        head = (f"{m.arms[i]} (vs {', '.join(m.trained[i])})" if m.trained[i]
                else f"{m.arms[i]} (no penalty)")
        rate = m.misbehavior[i] if m.misbehavior else None
        tail = m.verdicts[i] if m.verdicts else ""
        return head + f"\n{tail}" + ("" if rate is None else f"; lies {rate:.2f}")

    ax.set_yticklabels([label(i) for i in range(len(m.arms))], fontsize=7)
    ax.set_xlabel("monitor reading the arm's outputs (how it pools the tokens)")
    ax.set_ylabel("training arm")
    ax.set_title(f"Which monitors still catch each arm's lies: recall on its own "
                 f"misbehavior\n(threshold at {fpr:.0%} false positives on the base model; "
                 "red box = the probe it trained against; grey = no lies to catch)",
                 fontsize=8.5)
    fig.colorbar(im, ax=ax, label="recall (share of lies flagged)", shrink=0.9)
    return fig
