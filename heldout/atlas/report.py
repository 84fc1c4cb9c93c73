"""The atlas report: per arm, the verdicts over seeds, every monitored metric with a
bootstrap CI, training curves, cost; and, next to the results, the published findings
they speak to and whether this organism reproduced each (computed, never hard-coded).

Confidence intervals: proportions (misbehavior rate, recalls) are resampled example by
example within each seed (a stratified percentile bootstrap over the pooled 0/1
outcomes, strata = seeds); other quantities (KL, AUROC) are resampled over seeds, so
with one seed their interval is a point. Reads only the run folders' JSON records
(``evals.jsonl``, ``summary.json``): analysis never touches a model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from heldout.atlas.findings import (
    ArmResult,
    Estimate,
    arm_metrics,
    collect,
    findings,
    fmt_estimate,
    forced_recall,
    mean_or_none,
    outcome_distribution,
    probe_key,
)
from heldout.atlas.grid import GridSpec
from heldout.atlas.runner import RunSummary


def _curves(a: ArmResult, control: ArmResult) -> Any:
    """Misbehavior rate and trained-against / held-out / retrained recall over steps
    (mean over seeds; the control's misbehavior rate and trained-against recall
    dashed)."""
    from heldout.analysis.style import integer_axis, legend_outside, new_figure

    def lines(arm: ArmResult) -> dict[str, tuple[list[int], list[float]]]:
        acc: dict[str, dict[int, list[float]]] = {}
        for recs in arm.records.values():
            for rec in recs:
                step = rec.step
                keys = {probe_key(rec, n) for n in a.against}
                vals = {
                    "misbehavior rate": rec.misbehavior_rate,
                    "trained-against recall (forced)": forced_recall(rec, a.against),
                    "held-out recall (forced)": forced_recall(rec, a.held_out),
                    "retrained recall (fixed set)": mean_or_none(
                        [rec.retrained[k].recall_cur for k in keys if k in rec.retrained]),
                }
                for k, v in vals.items():
                    if v is not None:
                        acc.setdefault(k, {}).setdefault(step, []).append(float(v))
        return {k: (sorted(d), [float(np.mean(d[s])) for s in sorted(d)])
                for k, d in acc.items()}

    fig, axes = new_figure(8.4, 3.6)
    ax = axes[0, 0]
    colors = {"misbehavior rate": "black", "trained-against recall (forced)": "#d62728",
              "held-out recall (forced)": "#1f77b4", "retrained recall (fixed set)": "#2ca02c"}
    for k, (xs, ys) in lines(a).items():
        ax.plot(xs, ys, marker=".", color=colors[k], label=k)
    if a is not control:
        ctl = lines(control)
        for k in ("misbehavior rate", "trained-against recall (forced)"):
            if k in ctl:
                ax.plot(*ctl[k], ls="--", color=colors[k], alpha=0.6, label=f"{k}, control")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("training step")
    integer_axis(ax.xaxis)
    ax.grid(alpha=0.3)
    ax.set_title(f"{a.arm.name} (mean over {len(a.runs)} seed(s))", fontsize=9)
    legend_outside(ax, fontsize=7)
    return fig


def _overview(results: list[ArmResult], metrics: dict[str, dict[str, Estimate]]) -> Any:
    from heldout.analysis.style import PALETTE, legend_outside, new_figure

    names = [a.arm.name for a in results]
    shown = ["misbehavior rate", "trained-against recall, forced", "held-out recall, forced",
             "retrained probe recall, forced"]
    fig, axes = new_figure(max(7.5, 1.0 * len(names) + 3.0), 4.2)
    ax = axes[0, 0]
    width = 0.8 / len(shown)
    for j, key in enumerate(shown):
        est = [metrics[n][key] for n in names]
        xs = np.arange(len(names)) + (j - len(shown) / 2 + 0.5) * width
        vals = [e.value if e.value is not None else 0.0 for e in est]
        err = np.array([[max(0.0, (e.value or 0) - (e.low if e.low is not None else e.value or 0)),
                         max(0.0, (e.high if e.high is not None else e.value or 0) - (e.value or 0))]
                        for e in est]).T
        ax.bar(xs, vals, width, yerr=err, capsize=2, label=key, color=PALETTE[j])
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    legend_outside(ax, fontsize=7)
    ax.set_title("final evaluation, pooled over seeds (95% bootstrap CI)", fontsize=9)
    return fig


# ------------------------------------------------------------------ report


def write_atlas_report(out: str | os.PathLike[str], spec: GridSpec,
                       summaries: list[RunSummary]) -> Path:
    """Write ``report.md`` + ``report.html`` + ``figures/*.png`` into ``out``; returns
    the Markdown path."""
    import pandas as pd

    from heldout.analysis.report import Plot, Section, glossary_section, write_report

    root = Path(out)
    results = collect(root, spec, summaries)
    control = next(a for a in results if a.arm.control)
    metrics = {a.arm.name: arm_metrics(a, spec.bootstrap) for a in results}
    found = findings(results, {p.name: p.aggregation for p in spec.probes})
    speaks: dict[str, list[str]] = {}
    for i, f in enumerate(found, 1):
        for name in f.arms:
            speaks.setdefault(name, []).append(f"F{i} ({f.reproduced})")

    rows = []
    for a in results:
        m = metrics[a.arm.name]
        rows.append({
            "arm": a.arm.name, "mode": a.arm.mode, "λ": f"{a.arm.weight:g}",
            "β": f"{a.arm.kl_weight:g}",
            "detector": a.arm.detector if a.arm.mode != "gradient" else "-",
            "against": ", ".join(a.arm.against) or "-", "verdicts": outcome_distribution(a),
            "misbehavior": m["misbehavior rate"].text(),
            "against recall (forced)": m["trained-against recall, forced"].text(),
            "held-out recall (forced)": m["held-out recall, forced"].text(),
            "retrained recall": m["retrained probe recall, forced"].text(),
            "findings": ", ".join(speaks.get(a.arm.name, [])) or "-",
            "cost (s)": f"{sum(r.seconds for r in a.runs):.1f}"})
    table = pd.DataFrame(rows)
    finding_table = pd.DataFrame([{"": f"F{i}", "published finding": f.claim,
                                   "source": f.source, "this organism": f.evidence,
                                   "reproduced": f.reproduced}
                                  for i, f in enumerate(found, 1)])
    total = sum(r.seconds for r in summaries)
    sections = [
        Section("Findings", "Each published finding next to what this atlas measured. "
                "'reproduced' is computed from the runs below with the rules stated in "
                "each row (verdicts: heldout.analysis.verdict, against the control arm "
                "of the same seed).", tables=[finding_table]),
        Section("Results by arm", "Final evaluation, pooled over seeds; 95% bootstrap CIs "
                "(proportions resampled per example within seeds). Recall at the base "
                "model's 1%-FPR threshold. 'retrained recall': a probe of the same kind "
                "refitted on the final model. Cost: wall-clock seconds over all seeds "
                f"(whole grid: {total:.0f} s).",
                tables=[table], figures=[Plot(
                    _overview(results, metrics),
                    "Each arm's final misbehavior rate and recalls (forced set), pooled "
                    "over seeds, with 95% intervals. An arm that hides its lies shows a "
                    "high misbehavior bar and a low trained-against bar; a held-out bar "
                    "that stays high means the lie is still visible elsewhere.",
                    "overview")]),
    ]
    for a in results:
        m = metrics[a.arm.name]
        detail = pd.DataFrame([{"metric": k, "estimate [95% CI]": v.text()}
                               for k, v in m.items()])
        seeds = pd.DataFrame([{"seed": r.seed, "verdict": r.verdict["outcome"],
                               "seconds": f"{r.seconds:.1f}",
                               "what happened": r.verdict.get("story", "") or "-",
                               "notes": "; ".join(r.verdict.get("notes", ())) or "-"}
                              for r in a.runs])
        text = (f"{a.arm.description or a.arm.mode}. Mode {a.arm.mode}, λ={a.arm.weight}, "
                f"β={a.arm.kl_weight}, trained against: {', '.join(a.arm.against) or 'none'}; "
                f"held out: {', '.join(a.held_out)}. Verdicts over seeds: {outcome_distribution(a)}. "
                f"Cost: {sum(r.seconds for r in a.runs):.1f} s "
                f"({fmt_estimate(mean_or_none([r.seconds for r in a.runs]))} s per seed).")
        if speaks.get(a.arm.name):
            text += f"\n\nSpeaks to: {', '.join(speaks[a.arm.name])} (see Findings)."
        figs = [Plot(_curves(a, control),
                     f"{a.arm.name}: misbehavior rate and recalls over training steps (mean "
                     "over seeds)" + ("" if a is control else
                                      "; dashed lines are the no-penalty control arm") +
                     ". Watch whether the trained-against recall falls while misbehavior "
                     "stays.",
                     f"curves-{a.arm.name}")] if a.runs else []
        sections.append(Section(f"Arm: {a.arm.name}", text, tables=[detail, seeds],
                                figures=figs))
    reproduced = sum(f.reproduced == "yes" for f in found)
    tested = sum(f.reproduced != "not tested" for f in found)
    summary = (f"{len(spec.arms)} arms × {len(spec.seeds)} seed(s), {spec.steps} steps each, "
               f"on the built-in organism. The organism reproduced {reproduced} of "
               f"{tested} tested findings.")
    md, _ = write_report(root, "heldout atlas: training against probes",
                         sections + [glossary_section()], summary)
    (root / "findings.json").write_text(json.dumps(
        [f.__dict__ for f in found], indent=2) + "\n", encoding="utf-8")
    return md
