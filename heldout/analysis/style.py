"""One look for every figure: a fixed colour per probe kind and per monitor, integer
step and layer ticks, legends outside the data, and saving.

Figures are built as ``matplotlib.figure.Figure`` objects, never through ``pyplot``:
importing or calling heldout does not switch matplotlib's backend (a Jupyter session
keeps its inline backend and shows returned figures), and no figure is left open in
pyplot's global registry.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#ad494a", "#637939", "#e7969c",
           "#6b6ecf", "#843c39", "#7b4173", "#3182bd", "#31a354", "#fd8d3c")
"""20 distinguishable colours; monitors beyond 20 repeat them with another line style."""

PROBE_KIND_COLORS = {"logistic": PALETTE[0], "diffmeans": PALETTE[1], "lda": PALETTE[2],
                     "mlp": PALETTE[3], "attention": PALETTE[4], "token_mean": PALETTE[5],
                     "token_max": PALETTE[6], "multimax": PALETTE[7],
                     "rolling_attention": PALETTE[8]}
"""The colour of each probe kind, the same in every figure that compares kinds."""

STYLES = ("-", "-.", ":")


def kind_color(kind: str) -> str:
    """The fixed colour of a probe kind (grey for kinds without one)."""
    return PROBE_KIND_COLORS.get(kind, "#555555")


class MonitorColors:
    """A fixed colour (and, past 20 monitors, a line style) per monitor name.

    Assigned in sorted name order from every name the report will draw, so one monitor
    has one colour in all of a report's figures whatever subset a figure shows.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.order = sorted(set(names))

    def color(self, name: str) -> str:
        if name not in self.order:
            self.order = sorted({*self.order, name})
        return PALETTE[self.order.index(name) % len(PALETTE)]

    def style(self, name: str) -> str:
        self.color(name)
        return STYLES[(self.order.index(name) // len(PALETTE)) % len(STYLES)]


@functools.cache
def _figure_class() -> Any:
    from matplotlib.figure import Figure

    class ShownFigure(Figure):  # type: ignore[misc]
        """A Figure that Jupyter shows as PNG when a cell returns it: without pyplot
        nothing registers matplotlib's own display hook."""

        def _repr_png_(self) -> bytes:
            import io

            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=90)
            return buffer.getvalue()

    return ShownFigure


def new_figure(width: float, height: float, rows: int = 1, cols: int = 1) -> tuple[Any, Any]:
    """(figure, axes array of shape (rows, cols)), without pyplot."""
    fig = _figure_class()(figsize=(width, height), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def integer_axis(axis: Any) -> None:
    """Ticks at whole numbers only (steps, layers)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def legend_outside(ax: Any, **kwargs: Any) -> None:
    """The legend to the right of the axes, where it cannot cover a curve."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  borderaxespad=0.0, fontsize=kwargs.pop("fontsize", 8), frameon=False,
                  **kwargs)


def file_stem(text: str, sep: str = "_") -> str:
    """``text`` as a file name: runs of characters other than letters, digits, ``_``,
    ``.`` and ``-`` become ``sep``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", sep, text).strip(sep)


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write ``fig`` as PNG (parents created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


__all__ = ["PALETTE", "PROBE_KIND_COLORS", "MonitorColors", "file_stem", "integer_axis",
           "kind_color",
           "legend_outside", "new_figure", "save_figure"]
