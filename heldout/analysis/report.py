"""Reports as Markdown and HTML side by side, with PNG figures and tables.

A report is a list of sections; each has a heading, a paragraph of text, optional
tables (pandas DataFrames) and optional figures: :class:`Plot` (a matplotlib figure or
a PNG path, with a caption that says what to look at) or a bare PNG path. Figures are
saved under ``figures/`` and referenced relative to the report folder, so the folder
can be moved or zipped.
"""

from __future__ import annotations

import html
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heldout.analysis.style import file_stem, save_figure


@dataclass
class Plot:
    """A figure with its caption."""

    figure: Any
    """A ``matplotlib.figure.Figure`` (saved by the report writer) or a PNG path."""
    caption: str
    """What to look at, in a sentence or two."""
    name: str = ""
    """File stem for a saved figure (default: derived from the caption)."""


@dataclass
class Section:
    """One part of a report."""

    heading: str
    text: str = ""
    """Markdown-ish text: paragraphs separated by blank lines; kept verbatim in .md."""
    tables: list[Any] = field(default_factory=list)
    """pandas DataFrames, rendered as Markdown and HTML tables."""
    figures: list[Plot | Path] = field(default_factory=list)
    """Plots, or PNG files inside the report folder (captioned by their name)."""


def _whole_columns(frame: Any) -> set[Any]:
    """Float columns whose values are all whole numbers: counts, printed as integers
    (``400``, not ``400.000``)."""
    out = set()
    for col in frame.columns:
        values = [v for v in frame[col] if isinstance(v, float) and not math.isnan(v)]
        if values and all(v.is_integer() for v in values):
            out.add(col)
    return out


def _whole_row(row: Any) -> bool:
    """A row of whole numbers with a count among them (``3 / 2 / 3`` components)."""
    values = [v for v in row if isinstance(v, float) and not math.isnan(v)]
    return bool(values) and all(v.is_integer() for v in values) and \
        any(abs(v) > 1 for v in values)


def _cell(value: Any, whole: bool = False) -> str:
    """``-`` for missing values; floats to 3 decimals, or as integers in a column of
    whole numbers; anything else as ``str``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if whole else f"{value:.3f}"
    return str(value)


def _table_md(frame: Any) -> str:
    whole = _whole_columns(frame)
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        row_whole = _whole_row(row)
        cells = [_cell(v, row_whole or c in whole) for v, c in zip(row, frame.columns)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _table_html(frame: Any) -> str:
    whole = _whole_columns(frame)
    def is_text(col: Any) -> bool:
        return not any(isinstance(v, numbers.Number) for v in frame[col])

    left = ' class="txt"'
    head = "".join(f"<th{left if is_text(c) else ''}>{html.escape(str(c))}</th>"
                   for c in frame.columns)
    def td(value: Any, whole_cell: bool) -> str:
        numeric = isinstance(value, numbers.Number) and not isinstance(value, bool)
        css = "" if numeric else ' class="txt"'
        return f"<td{css}>{html.escape(_cell(value, whole_cell))}</td>"

    body = "".join("<tr>" + "".join(td(v, _whole_row(row) or c in whole)
                                    for v, c in zip(row, frame.columns)) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f'<table class="t"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _saved(fig: Plot | Path, out: Path, taken: set[str]) -> tuple[Path, str]:
    """(PNG path, caption) of a section figure, saving matplotlib figures."""
    if not isinstance(fig, Plot):
        return Path(fig), Path(fig).stem
    if isinstance(fig.figure, (str, os.PathLike)):
        return Path(fig.figure), fig.caption
    stem = base = file_stem(fig.name or fig.caption, "-")[:60] or "figure"
    i = 2
    while stem in taken:
        stem, i = f"{base}-{i}", i + 1
    taken.add(stem)
    return save_figure(fig.figure, out / "figures" / f"{stem}.png"), fig.caption


def _paragraph_html(text: str) -> str:
    """A paragraph, or a bulleted list when every line starts with ``- ``."""
    lines = [x for x in text.strip().splitlines() if x.strip()]
    if all(x.startswith("- ") for x in lines):
        return "<ul>" + "".join(f"<li>{html.escape(x[2:])}</li>" for x in lines) + "</ul>"
    return f"<p>{html.escape(text)}</p>"


def write_report(folder: str | Path, title: str, sections: list[Section],
                 summary: str = "") -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``folder``; returns both paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", "", summary, ""]
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(summary)}</p>"]
    taken: set[str] = set()
    for sec in sections:
        md += [f"## {sec.heading}", "", sec.text, ""]
        body.append(f"<h2>{html.escape(sec.heading)}</h2>")
        body += [_paragraph_html(p) for p in sec.text.split("\n\n") if p.strip()]
        for table in sec.tables:
            md += [_table_md(table), ""]
            body.append(_table_html(table))
        for fig in sec.figures:
            path, caption = _saved(fig, out, taken)
            rel = os.path.relpath(path, out)
            md += [f"![{caption}]({rel})", "", f"*{caption}*", ""]
            body.append(f'<figure><img src="{html.escape(rel)}" alt="{html.escape(caption)}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table.t{border-collapse:collapse;margin:1em 0}"
             "table.t td,table.t th{border-bottom:1px solid #ddd;padding:3px 10px;text-align:right}"
             "table.t td:first-child,table.t th:first-child{text-align:left}"
             "img{max-width:100%}figure{margin:1.5em 0}"
             "figcaption{color:#444;font-size:92%;max-width:900px}"
             "table.t th{background:#f4f4f4}table.t td.txt,table.t th.txt{text-align:left}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>")
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text("\n".join(md), encoding="utf-8")
    html_path.write_text(page, encoding="utf-8")
    return md_path, html_path


def glossary_section() -> Section:
    """A section defining every metric name the reports print."""
    import pandas as pd

    from heldout.analysis.explain import glossary_rows
    from heldout.analysis.verdict import THRESHOLDS

    return Section("Glossary", "What each metric and term in this report means.",
                   tables=[pd.DataFrame(glossary_rows(THRESHOLDS))])
