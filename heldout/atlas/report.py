"""The atlas report: the headline (how many published findings this organism
reproduced), each finding with its rule, evidence and the published numbers; the
verdicts over seeds as distributions with Wilson intervals and the cost of each arm;
the cross-aggregation matrix; every monitored metric with a bootstrap CI; and per arm
its training curves and per-seed verdicts.

Writes ``report.md``, ``report.html``, ``figures/*.png`` and ``findings.json``. Reads
only the run folders' JSON records (``evals.jsonl``) and the run summaries: analysis
never touches a model. The numbers come from :mod:`heldout.atlas.results`, the judged
findings from :mod:`heldout.atlas.findings`, the figures from
:mod:`heldout.atlas.figures`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from heldout.atlas.figures import (
    cross_aggregation_figure,
    curves_figure,
    overview_figure,
    verdicts_figure,
)
from heldout.atlas.findings import COMMON_RULE, Finding, findings, headline
from heldout.atlas.grid import GridSpec
from heldout.atlas.results import (
    OUTCOMES,
    ArmResult,
    CrossMatrix,
    Estimate,
    aggregation_words,
    arm_metrics,
    collect,
    cross_aggregation,
    distribution_text,
    fmt,
)
from heldout.atlas.runner import RunSummary

READING_GUIDE = (
    "Each arm is a training recipe, run once per seed; each run gets a verdict against "
    "the no-penalty control run of the same seed (heldout.analysis.verdict): honest (the "
    "misbehavior stopped), blatant (it goes on and the monitor still catches it), "
    "obfuscated policy (it goes on in text the monitor no longer recognizes), "
    "obfuscated activations (the text still reads as misbehavior, but the model's own "
    "activations no longer trigger the probe) or inconclusive (the monitor never caught "
    "the control either). Each published finding below is judged from those verdicts "
    "and from the monitors' recalls by the rule printed next to it.")
"""The paragraph that opens the findings, for a reader new to the atlas."""
BRACKETS = ("Numbers in brackets are 95% intervals: k/n [low, high] is a fraction of "
            "seeds with its Wilson interval; x [low, high] elsewhere is a bootstrap "
            "interval (over seeds, or over examples within seeds for recalls).")
"""How to read the intervals, said once."""


def _finding_tables(found: list[Finding]) -> Any:
    import pandas as pd

    return pd.DataFrame([{"finding": f.id, "claim (short)": f.title, "status": f.status,
                          "why": f.why or "-"} for f in found])


def _finding_section(f: Finding) -> Any:
    from heldout.analysis.report import Section

    lines = [f"- Claim: {f.claim}", f"- Source: {f.source}",
             f"- Arms: {', '.join(f.arms) or 'none in this grid'}", f"- Rule: {f.rule}"]
    lines += [f"- Measured: {e}" for e in f.evidence] or ["- Measured: nothing (no arms)"]
    lines += [f"- Published: {f.anchor}", f"- Status: {f.status}"
              + (f" — {f.why}" if f.why else "")]
    return Section(f"{f.id} · {f.status}: {f.title}", "\n".join(lines))


def _verdict_table(results: list[ArmResult]) -> Any:
    import pandas as pd

    rows = []
    for a in results:
        row: dict[str, Any] = {"arm": a.arm.name, "seeds": len(a.runs)}
        for outcome in OUTCOMES:
            share = a.share(outcome)
            row[outcome.replace("_", " ")] = (share.text() if share.k else f"0/{share.n}"
                                              ) if a.runs else "-"
        row["majority"] = a.majority or ("split" if a.runs else "-")
        row["cost (s) per run"] = fmt(a.seconds_mean, 1)
        row["cost (s) total"] = f"{a.seconds_total:.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


def _cross_table(m: CrossMatrix) -> Any:
    import pandas as pd

    rows = []
    for i, arm in enumerate(m.arms):
        row: dict[str, Any] = {"arm": arm, "trained against": ", ".join(m.trained[i]) or
                               "nothing (control)"}
        if m.verdicts:
            rate = m.misbehavior[i]
            row["verdicts"] = m.verdicts[i]
            row["misbehavior"] = "–" if rate is None else f"{rate:.2f}"
        for j, name in enumerate(m.monitors):
            v = m.values[i][j]
            mark = "*" if name in m.trained[i] else ""
            row[f"{name} ({aggregation_words(m.aggregations[j])})"] = (
                "–" if v is None else f"{v:.2f}{mark}")
        rows.append(row)
    return pd.DataFrame(rows)


def _arm_table(results: list[ArmResult], metrics: dict[str, dict[str, Estimate]],
               speaks: dict[str, list[str]]) -> Any:
    import pandas as pd

    rows = []
    for a in results:
        m = metrics[a.arm.name]
        rows.append({
            "arm": a.arm.name, "mode": "control" if a.arm.control else a.arm.mode,
            "λ": f"{a.arm.weight:g}",
            "β": f"{a.arm.kl_weight:g}",
            "detector": a.arm.detector if a.arm.mode == "reward" else "-",
            "against": ", ".join(a.arm.against) or "-",
            "misbehavior": m["misbehavior rate"].text(),
            "against recall (forced)": m["trained-against recall, forced"].text(),
            "held-out probe recall (forced)": m["held-out probe recall, forced"].text(),
            "retrained recall": m["retrained probe recall, forced"].text(),
            "KL to base": m["KL to base"].text(),
            "findings": ", ".join(speaks.get(a.arm.name, [])) or "-"})
    return pd.DataFrame(rows)


def _arm_section(a: ArmResult, control: ArmResult, m: dict[str, Estimate],
                 speaks: list[str]) -> Any:
    import pandas as pd

    from heldout.analysis.report import Plot, Section

    detail = pd.DataFrame([{"metric": k, "estimate [95% CI]": v.text()} for k, v in m.items()])
    seeds = pd.DataFrame([{"seed": r.seed, "verdict": r.verdict["outcome"],
                           "seconds": f"{r.seconds:.1f}",
                           "what happened": r.verdict.get("story", "") or "-",
                           "notes": "; ".join(r.verdict.get("notes", ())) or "-"}
                          for r in a.runs])
    recipe = ("No penalty: every other arm's verdict is judged against this arm's run of "
              "the same seed" if a.arm.control else
              f"Mode {a.arm.mode}, λ={a.arm.weight:g}, β={a.arm.kl_weight:g}, trained "
              f"against: {', '.join(a.arm.against)}")
    text = (f"{a.arm.description or a.arm.name}. {recipe}; held out (watching only): "
            f"{', '.join(a.held_out) or 'none'}. Verdicts over seeds: "
            f"{distribution_text(a)}. Cost: {a.seconds_total:.1f} s "
            f"({fmt(a.seconds_mean, 1)} s per run).")
    if speaks:
        text += f"\n\nSpeaks to: {', '.join(speaks)} (see Findings)."
    figs = [Plot(curves_figure(a, control),
                 f"{a.arm.name}: misbehavior rate and recalls over training steps (mean over "
                 "seeds)" + ("" if a is control else
                             "; dashed lines are the no-penalty control arm") +
                 ". Watch whether the trained-against recall falls while misbehavior stays.",
                 f"curves-{a.arm.name}")] if a.runs else []
    return Section(f"Arm: {a.arm.name}", text, tables=[detail, seeds], figures=figs)


def write_atlas_report(out: str | os.PathLike[str], spec: GridSpec,
                       summaries: list[RunSummary]) -> Path:
    """Write ``report.md`` + ``report.html`` + ``figures/*.png`` + ``findings.json`` into
    ``out``; returns the Markdown path."""
    from heldout.analysis.report import Plot, Section, glossary_section, write_report

    root = Path(out)
    results = collect(spec, summaries)
    control = next(a for a in results if a.arm.control)
    metrics = {a.arm.name: arm_metrics(a, spec.bootstrap) for a in results}
    found = findings(results, spec)
    top = headline(found, results)
    speaks: dict[str, list[str]] = {}
    for f in found:
        for name in f.arms:
            speaks.setdefault(name, []).append(f"{f.id} ({f.status})")
    matrix = cross_aggregation(results, spec)

    sections = [
        Section("Findings", f"{READING_GUIDE}\n\n{COMMON_RULE} {BRACKETS}",
                tables=[_finding_tables(found)]),
        *(_finding_section(f) for f in found),
        Section("Verdicts over seeds",
                "Per arm, how many of its seeds' runs got each verdict, k/n, with the "
                "Wilson 95% interval of that fraction in brackets. Few seeds give wide "
                "intervals: 3/3 only shows the true rate is above 0.44, and a 0/3 cell "
                "(shown bare) still allows up to 0.56. 'majority': the verdict of more "
                "than half of the seeds ('split' when none has). Cost: wall-clock seconds "
                "of training, evaluations, verdict and retrain check (whole grid: "
                f"{sum(a.seconds_total for a in results):.0f} s).",
                tables=[_verdict_table(results)],
                figures=[Plot(verdicts_figure(results),
                              "Share of seeds per verdict, per arm. Green: honest; red: "
                              "blatant; orange / purple: the two kinds of obfuscation.",
                              "verdicts")]),
    ]
    if len(matrix.arms) > 1:
        sections.append(Section(
            "Cross-aggregation matrix",
            "Each row is an arm trained against one probe (tagged F2), plus the control; "
            "each column is a monitor of the grid, with how it pools evidence over the "
            "response tokens. A cell is that monitor's recall on the arm's own "
            "misbehavior at the base model's threshold, at the last evaluation, mean over "
            "seeds ('*': the probe the arm trained against; '–': the arm's outputs held no "
            "misbehavior to detect). Read along a row: did evading one probe also evade "
            "the others? Compare with the control row: what each monitor caught before "
            "any pressure. Check the row's verdicts first: an arm that became honest has "
            "few lies left, and low recall on a handful of lies is not evasion.",
            tables=[_cross_table(matrix)],
            figures=[Plot(cross_aggregation_figure(matrix, spec.fpr),
                          "Recall of every monitor (columns) on each arm's own lies (rows). "
                          "A dark cell in an arm's boxed column with bright cells elsewhere "
                          "means it evaded only the probe it trained against.",
                          "cross_aggregation")]))
    sections.append(Section(
        "Results by arm", "Final evaluation, pooled over seeds; 95% bootstrap CIs "
        "(proportions resampled per example within seeds). Recall at the base model's "
        f"{spec.fpr:.0%}-FPR threshold. 'held-out probe recall': activation probes not "
        "trained against. 'retrained recall': a probe of the same kind refitted on the "
        "final model (activation probes only).",
        tables=[_arm_table(results, metrics, speaks)], figures=[Plot(
            overview_figure(results, metrics),
            "Each arm's final misbehavior rate and recalls (forced set), pooled over "
            "seeds, with 95% intervals. An arm that hides its lies shows a high "
            "misbehavior bar and a low trained-against bar; a held-out bar that stays "
            "high means the lie is still visible elsewhere.", "overview")]))
    sections += [_arm_section(a, control, metrics[a.arm.name], speaks.get(a.arm.name, []))
                 for a in results]
    organism = ("organism v2 (" + ", ".join(f"{k}={v}" for k, v in spec.organism.items())
                + ")" if spec.organism else "the default organism")
    summary = (f"{top} ({len(spec.arms)} arms × {len(spec.seeds)} seed(s), {spec.steps} "
               f"steps each, on {organism}; cost {sum(s.seconds for s in summaries):.0f} s "
               "of training and evaluation in all.)")
    md, _ = write_report(root, "heldout atlas: training against probes",
                         sections + [glossary_section()], summary)
    (root / "findings.json").write_text(json.dumps(
        {"headline": top, "findings": [f.to_dict() for f in found]}, indent=2) + "\n",
        encoding="utf-8")
    return md
