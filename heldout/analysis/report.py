"""Reports as Markdown and HTML side by side, with PNG figures and tables.

A report is a list of sections; each has a heading, a paragraph of text, optional
tables (pandas DataFrames) and optional figures (PNG paths, stored relative to the
report folder so the folder can be moved or zipped).
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Section:
    """One part of a report."""

    heading: str
    text: str = ""
    """Markdown-ish text: paragraphs separated by blank lines; kept verbatim in .md."""
    tables: list[Any] = field(default_factory=list)
    """pandas DataFrames, rendered as Markdown and HTML tables."""
    figures: list[Path] = field(default_factory=list)
    """PNG files inside the report folder."""


def _table_md(frame: Any) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = [("-" if v != v else f"{v:.3f}") if isinstance(v, float)
                 else "-" if v is None else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    for sec in sections:
        md += [f"## {sec.heading}", "", sec.text, ""]
        body.append(f"<h2>{html.escape(sec.heading)}</h2>")
        body += [_paragraph_html(p) for p in sec.text.split("\n\n") if p.strip()]
        for table in sec.tables:
            md += [_table_md(table), ""]
            body.append(table.to_html(index=False, float_format=lambda v: f"{v:.3f}",
                                      na_rep="-", border=0, classes="t"))
        for fig in sec.figures:
            rel = os.path.relpath(fig, out)
            md += [f"![{Path(rel).stem}]({rel})", ""]
            body.append(f'<figure><img src="{html.escape(rel)}" alt="{html.escape(rel)}">'
                        f"<figcaption>{html.escape(Path(rel).stem)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table.t{border-collapse:collapse;margin:1em 0}"
             "table.t td,table.t th{border-bottom:1px solid #ddd;padding:3px 10px;text-align:right}"
             "table.t td:first-child,table.t th:first-child{text-align:left}"
             "img{max-width:100%}figcaption{color:#666;font-size:90%}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>")
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text("\n".join(md), encoding="utf-8")
    html_path.write_text(page, encoding="utf-8")
    return md_path, html_path
