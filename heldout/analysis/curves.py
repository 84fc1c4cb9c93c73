"""Plots of every monitored curve of a fine-tuning run over steps (matplotlib, Agg).

Reads a run folder's evaluation records (``evals.jsonl``, through
:func:`heldout.analysis.records.read_records`) and ``steps.jsonl``, and writes PNGs under
``<run>/plots``: ``behaviour.png`` (misbehavior rate, task accuracy, KL, ...), one
``probe-<name>.png`` per activation probe and one ``text-<name>.png`` per text monitor
(recall at both thresholds and AUROC, one line per data set: own outputs, fixed, forced,
cross-model), ``retrained.png``, ``pca90.png``, ``losses.png``. A control run, when
given, is drawn dashed in the same axes.
Analysis never touches a model: only the JSON records are read.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from heldout.analysis.records import EvalRecord, read_records

Series = dict[tuple[str, ...], list[tuple[int, float]]]


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def flatten(record: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], float]:
    """Numeric leaves of a nested record, keyed by their path (a tuple of keys)."""
    out: dict[tuple[str, ...], float] = {}
    for key, value in record.items():
        path = prefix + (str(key),)
        if isinstance(value, dict):
            out.update(flatten(value, path))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[path] = float(value)
    return out


def _paths(record: EvalRecord) -> dict[tuple[str, ...], float]:
    """Numeric leaves of an evaluation record; a monitor's curves are keyed
    ``(kind, name, ...)`` (kind ``probe`` or ``text``)."""
    data = record.to_dict()
    monitors = data.pop("monitors")
    out = flatten(data)
    for name, entry in monitors.items():
        out.update(flatten(entry, (record.monitors[name].kind, name)))
    return out


def series(records: Sequence[EvalRecord | dict[str, Any]],
           skip: tuple[str, ...] = ("step", "seconds", "forward_calls", "pca90_base")
           ) -> Series:
    """Every numeric curve over steps: ``{path: [(step, value), ...]}``.

    records : evaluation records, or plain step records (``steps.jsonl`` lines)."""
    out: Series = defaultdict(list)
    for record in records:
        if isinstance(record, EvalRecord):
            step, leaves = record.step, _paths(record)
        else:
            step, leaves = int(record["step"]), flatten(record)
        for path, value in leaves.items():
            if path[0] not in skip and not path[-1].startswith("threshold"):
                out[path].append((step, value))
    return dict(out)


def _layout(path: tuple[str, ...]) -> tuple[str, str, str]:
    """(figure, panel, line) of a curve."""
    if len(path) == 1:
        return "behaviour", path[0], ""
    if path[0] in ("probe", "text"):  # (kind, name, [set,] metric)
        return f"{path[0]}-{path[1]}", path[-1], "/".join(path[2:-1]) or "all"
    if len(path) == 2:
        return path[0], path[0], path[1]
    if len(path) == 3:
        return path[0], path[2], path[1]
    return f"{path[0]}-{path[1]}", path[-1], "/".join(path[2:-1])


SET_COLORS = {"own": "#1f77b4", "fixed": "#7f7f7f", "forced": "#d62728",
              "cross_model": "#2ca02c", "all": "#000000", "": "#000000"}
"""One colour per data set a monitor is measured on, the same in every run figure."""


UNIT_RANGE = ("recall", "auroc", "accuracy", "misbehavior_rate", "flag_rate")
"""Panels whose metric lives in [0, 1] and is drawn on the whole range."""


def run_figures(run: str | os.PathLike[str], control: str | os.PathLike[str] | None = None
                ) -> dict[str, Any]:
    """One matplotlib figure per group of curves (``behaviour``, ``probe-<name>``,
    ``text-<name>``, ``retrained``, ``pca90``, ``losses``), the control dashed."""
    from heldout.analysis.style import (
        MonitorColors,
        integer_axis,
        new_figure,
    )

    run_dir = Path(run)
    runs = {"run": run_dir} if control is None else {"run": run_dir, "control": Path(control)}
    figures: dict[str, dict[str, dict[tuple[str, str], list[tuple[int, float]]]]] = \
        defaultdict(lambda: defaultdict(dict))
    for which, folder in runs.items():
        for key, points in series(read_records(folder)).items():
            group, panel, line = _layout(key)
            figures[group][panel][(line, which)] = points
        for key, points in series(_read(folder / "steps.jsonl")).items():
            if key[0] in ("loss", "losses"):
                figures["losses"][key[-1]][("", which)] = points
    others = MonitorColors(line for panels in figures.values() for lines in panels.values()
                           for line, _ in lines if line not in SET_COLORS)
    out: dict[str, Any] = {}
    for fig_name, panels in sorted(figures.items()):
        n = len(panels)
        cols = min(n, 3)
        rows = (n + cols - 1) // cols
        fig, axes = new_figure(4.6 * cols + 1.6, 3.0 * rows, rows, cols)
        for ax, (panel, lines) in zip(axes.flat, sorted(panels.items())):
            for (line, which), points in sorted(lines.items()):
                xs, ys = zip(*points)
                color = SET_COLORS.get(line) or others.color(line)
                ax.plot(xs, ys, "--" if which == "control" else "-", marker=".", color=color,
                        label=f"{line} ({which})" if line else which)
            if n > 1:  # a single panel is named by the figure title
                ax.set_title(panel, fontsize=9)
            ax.set_xlabel("training step", fontsize=8)
            integer_axis(ax.xaxis)
            ax.grid(alpha=0.3)
            if any(word in panel for word in UNIT_RANGE):
                ax.set_ylim(-0.03, 1.03)  # a 0.001 wobble must not fill the panel
            elif panel.startswith("n_"):  # counts start at zero: 81 -> 84 is no cliff
                ax.set_ylim(bottom=0)
        handles: dict[str, Any] = {}
        for ax in axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, handle)
        fig.legend(list(handles.values()), list(handles), loc="outside right upper",
                   fontsize=7, frameon=False)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        fig.suptitle(f"{fig_name} (solid = run, dashed = control)" if control is not None
                     else fig_name, fontsize=10)
        out[fig_name] = fig
    return out


def plot_run(run: str | os.PathLike[str], control: str | os.PathLike[str] | None = None,
             out: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write one PNG per group of curves (:func:`run_figures`) under ``out`` (default
    ``<run>/plots``); returns the files written."""
    from heldout.analysis.style import file_stem, save_figure

    out_dir = Path(out) if out is not None else Path(run) / "plots"
    return [save_figure(fig, out_dir / f"{file_stem(name)}.png", dpi=80)
            for name, fig in run_figures(run, control).items()]
