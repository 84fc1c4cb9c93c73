"""The one figure per run a reader looks at first.

Three panels over training steps, the run solid and its no-penalty control dashed:
misbehavior rate (the labeler); recall of every monitor on the model's own misbehavior
(trained-against thick, held-out thin; one fixed colour per monitor); recall of probes
retrained on the current model. The judged step is marked and the verdict is the title.
"""

from __future__ import annotations

import os
from typing import Any

from heldout.analysis.records import EvalRecord, read_records
from heldout.analysis.style import MonitorColors, integer_axis, new_figure


def _points(records: list[EvalRecord], get: Any) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for rec in records:
        value = get(rec)
        if value is not None:
            xs.append(rec.step)
            ys.append(float(value))
    return xs, ys


def _own_recall(name: str, on: str = "own") -> Any:
    def get(rec: EvalRecord) -> float | None:
        mon = rec.monitors.get(name)
        metrics = None if mon is None else getattr(mon, on)
        return None if metrics is None else metrics.recall_base
    return get


def plot_headline(run: Any, control: Any = None, verdict: Any = None,
                  colors: MonitorColors | None = None) -> Any:
    """The headline figure of ``run`` (a run folder or its records) against ``control``.

    verdict : a :class:`~heldout.analysis.verdict.Verdict` (or its dict) to mark;
    colors : share one across a report's figures so a monitor keeps its colour.
    Returns a matplotlib figure.
    """
    recs = read_records(run)
    ctl = read_records(control) if control is not None else []
    names = list(recs[-1].monitors) if recs else []
    colors = colors or MonitorColors(names)
    # a frozen-detector probe was trained against through the base model reading the
    # text: that reading is its line (in the control too), as the verdict judges it
    on_base = {n for n, m in (recs[-1].monitors.items() if recs else ())
               if m.reads == "base"}
    fig, axes = new_figure(14, 4.2, 1, 3)
    ax_rate, ax_mon, ax_re = axes[0]
    for records, ls, which in ((recs, "-", "run"), (ctl, "--", "control")):
        if not records:
            continue
        xs, ys = _points(records, lambda r: r.misbehavior_rate)
        ax_rate.plot(xs, ys, ls, color="black", marker=".", label=which)
        last = records[-1]
        for name, mon in last.monitors.items():
            xs, ys = _points(records, _own_recall(
                name, "cross_model" if name in on_base else "own"))
            thick = mon.role == "train_against"
            role = "trained against" if thick else "held out"
            if name in on_base:
                role += ", base model reads the text"
            # trained-against drawn on top: at 0 it would hide under held-out lines
            ax_mon.plot(xs, ys, ls, color=colors.color(name), lw=2.6 if thick else 1.2,
                        marker="o" if thick else ".", ms=5 if thick else 3,
                        zorder=3 if thick else 2,
                        label=f"{name} ({role})" if which == "run" else None)
        owner = {f"{m.site}/{'mean' if m.selection == 'tokens' else m.selection}": n
                 for n, m in last.monitors.items() if m.kind == "probe"}
        for key in sorted(last.retrained):
            xs, ys = _points(records, lambda r, k=key: r.retrained[k].recall_cur
                             if k in r.retrained else None)
            # the colour of the monitor reading the same site and selection
            ax_re.plot(xs, ys, ls, color=colors.color(owner.get(key, f"retrained {key}")),
                       marker=".", label=f"{key}" if which == "run" else None)
    ax_rate.set_title("misbehavior rate (labeler, own outputs)", fontsize=10)
    ax_mon.set_title("monitor recall on own misbehavior\n(base threshold; thick = trained "
                     "against)", fontsize=10)
    ax_re.set_title("probes retrained on the current model\n(recall)", fontsize=10)
    outcome = None
    if verdict is not None:
        data = verdict if isinstance(verdict, dict) else verdict.to_dict()
        outcome, step = data["outcome"], data["step"]
        for ax in (ax_rate, ax_mon, ax_re):
            ax.axvline(step, color="dimgrey", lw=1.2, ls=":")
        ax_rate.annotate(f"judged: {outcome}", (step, 1.0), ha="right", va="top",
                         fontsize=9, color="dimgrey")
    for ax in (ax_rate, ax_mon, ax_re):
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        integer_axis(ax.xaxis)
    # below the axes, like the other panels: a low misbehavior rate runs along the bottom
    ax_rate.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2,
                   title="solid = run, dashed = control", title_fontsize=7, frameon=False)
    for ax in (ax_mon, ax_re):
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(handles, labels, fontsize=7, loc="upper center", frameon=False,
                      bbox_to_anchor=(0.5, -0.18), ncol=2)
    title = os.fspath(run) if isinstance(run, (str, os.PathLike)) else "run"
    fig.suptitle(f"verdict: {outcome}   ({title})" if outcome else title, fontsize=11)
    return fig


def write_headline(run: str | os.PathLike[str], control: str | os.PathLike[str],
                   verdict: Any) -> Any:
    """Save the headline figure as ``<run>/plots/headline.png``; returns the path."""
    from pathlib import Path

    from heldout.analysis.style import save_figure

    return save_figure(plot_headline(run, control, verdict),
                       Path(run) / "plots" / "headline.png", dpi=100)


__all__ = ["plot_headline", "write_headline"]
