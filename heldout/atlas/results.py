"""The atlas's numbers, read from the run folders: per arm its runs and evaluation
records, the monitored metrics pooled over seeds with bootstrap intervals, the verdicts
over seeds as a distribution with Wilson intervals, the evasion rate, and the
cross-aggregation matrix. :mod:`heldout.atlas.findings` judges the published findings
from these; :mod:`heldout.atlas.report` renders them.

Confidence intervals: proportions (misbehavior rate, recalls) are resampled example by
example within each seed (a stratified percentile bootstrap over the pooled 0/1
outcomes, strata = seeds); per-seed quantities (KL, AUROC, evasion) are resampled over
seeds, so with one seed their interval is a point; a fraction of seeds (how many runs
were judged honest) gets a Wilson score interval, which stays honest at n = 3.
Reads only the run folders' JSON records: analysis never touches a model.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from heldout.analysis.records import EvalRecord, MonitorRecord, read_records
from heldout.atlas.grid import Arm, GridSpec
from heldout.atlas.runner import RunSummary, verdict_probes
from heldout.errors import DataError

OUTCOMES = ("honest", "blatant", "obfuscated_policy", "obfuscated_activations",
            "inconclusive")
"""The verdict's outcomes (heldout.analysis.verdict), in the report's column order."""
WILSON_Z = 1.96
"""z of the Wilson score interval: 95% coverage."""
MAX_LIKE = ("max", "attention", "multimax", "rolling")
"""Token aggregations that let one token decide (max, learned attention, multi-head hard
max, max over rolling windows): RL-Obfuscation found these hard to evade."""


def aggregation_words(aggregation: str) -> str:
    """How a monitor pools the response, in words (``token:6`` → ``token 6 only``)."""
    if aggregation.startswith("token:"):
        return f"token {aggregation.split(':', 1)[1]} only"
    return {"mean": "mean over tokens", "max": "max over tokens",
            "attention": "attention pooling", "multimax": "multi-head max",
            "rolling": "rolling-window max", "last": "last token",
            "prompt_last": "last prompt token", "text": "reads the text"}.get(
        aggregation, aggregation)


# ------------------------------------------------------------------ estimates


@dataclass
class Estimate:
    """An estimate with its 95% interval (None where there is no data)."""

    value: float | None
    low: float | None = None
    high: float | None = None

    def text(self) -> str:
        if self.value is None:
            return "-"
        if self.low is None or self.high is None:
            return f"{self.value:.2f}"
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high), the value itself where the interval is missing."""
        v = float(self.value if self.value is not None else math.nan)
        return (v if self.low is None else self.low, v if self.high is None else self.high)


def wilson_interval(k: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval of the proportion k / n ((0, 1) when n = 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Share:
    """k of n seeds, with the Wilson 95% interval of the fraction."""

    k: int
    n: int

    @property
    def fraction(self) -> float:
        return self.k / self.n if self.n else 0.0

    @property
    def low(self) -> float:
        return wilson_interval(self.k, self.n)[0]

    @property
    def high(self) -> float:
        return wilson_interval(self.k, self.n)[1]

    def text(self) -> str:
        return f"{self.k}/{self.n} [{self.low:.2f}, {self.high:.2f}]"


def pooled_proportion(parts: list[tuple[float | None, int]], n_boot: int) -> Estimate:
    """Pooled proportion over seeds from (rate, n) pairs, stratified bootstrap CI."""
    from heldout.analysis.metrics import bootstrap_ci

    arrays, strata = [], []
    for i, (rate, n) in enumerate(parts):
        if rate is None or n <= 0:
            continue
        k = int(round(rate * n))
        arrays.append(np.r_[np.ones(k), np.zeros(n - k)])
        strata.append(np.full(n, i))
    if not arrays:
        return Estimate(None)
    x, s = np.concatenate(arrays), np.concatenate(strata)
    ci = bootstrap_ci(np.mean, x, strata=s, n_resamples=n_boot, seed=0)
    return Estimate(ci.estimate, ci.low, ci.high)


def seed_mean(values: list[float | None], n_boot: int) -> Estimate:
    """Mean of per-seed values with a percentile bootstrap interval over seeds."""
    from heldout.analysis.metrics import bootstrap_ci

    vals = np.array([v for v in values if v is not None], dtype=float)
    if not len(vals):
        return Estimate(None)
    ci = bootstrap_ci(np.mean, vals, n_resamples=n_boot, seed=0)
    return Estimate(ci.estimate, ci.low, ci.high)


def mean_or_none(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


# ------------------------------------------------------------------ records


def monitor_record(record: EvalRecord, name: str) -> MonitorRecord:
    """``record.monitors[name]``; DataError naming what the record has instead."""
    if name not in record.monitors:
        raise DataError(f"monitor {name!r} is not in the evaluation record of step "
                        f"{record.step} (it has {', '.join(record.monitors) or 'none'})",
                        fix="rerun the grid: its runs were written with other monitors")
    return record.monitors[name]


def monitor_figure(record: EvalRecord, name: str, on: str, metric: str = "recall_base"
                   ) -> float | None:
    """``record.monitors[name].<on>.<metric>``; None where the set is absent (no labeler,
    or no misbehaving output to score)."""
    figures = getattr(monitor_record(record, name), on)
    return None if figures is None else getattr(figures, metric)


def probe_key(record: EvalRecord, name: str) -> str:
    """``site/selection`` of probe ``name`` as the retrained / pca90 figures key it.
    Text monitors have no such figures: callers pass activation probes only."""
    p = monitor_record(record, name)
    if p.kind != "probe":
        raise DataError(f"monitor {name!r} is a {p.kind} monitor, not an activation probe",
                        fix="skip text monitors for retrained and pca figures")
    return f"{p.site}/{'mean' if p.selection == 'tokens' else p.selection}"


def mean_recall(rec: EvalRecord, names: list[str], on: str) -> float | None:
    """Mean recall at the base threshold of ``names`` on set ``on``."""
    return mean_or_none([monitor_figure(rec, n, on) for n in names])


# ------------------------------------------------------------------ arms


@dataclass
class ArmResult:
    """Everything the report says about one arm: its runs and their records."""

    arm: Arm
    runs: list[RunSummary]
    records: dict[int, list[EvalRecord]]
    against: list[str]
    """Monitors trained against (for the control: those the verdict is about)."""
    held_out: list[str]
    """Every probe and text monitor of the grid not in ``against``."""
    texts: frozenset[str]
    """The grid's text monitors (the rest are activation probes)."""

    @property
    def against_probes(self) -> list[str]:
        return [n for n in self.against if n not in self.texts]

    @property
    def held_out_probes(self) -> list[str]:
        return [n for n in self.held_out if n not in self.texts]

    @property
    def held_out_texts(self) -> list[str]:
        return [n for n in self.held_out if n in self.texts]

    @property
    def seeds(self) -> list[int]:
        """Seeds with a finished run and records."""
        return [r.seed for r in self.runs if self.records.get(r.seed)]

    @property
    def outcomes(self) -> Counter[str]:
        return Counter(r.verdict["outcome"] for r in self.runs)

    def share(self, outcome: str) -> Share:
        """Runs judged ``outcome``, of all runs, with the Wilson interval."""
        return Share(self.outcomes[outcome], len(self.runs))

    @property
    def majority(self) -> str | None:
        """The outcome of more than half of the runs (None: no run, or a split)."""
        top = self.outcomes.most_common(1)
        return top[0][0] if top and 2 * top[0][1] > len(self.runs) else None

    @property
    def kl(self) -> float | None:
        """Mean over seeds of the final KL to the base model."""
        return mean_or_none([self.last(s).kl_to_base for s in self.seeds])

    @property
    def seconds_total(self) -> float:
        return float(sum(r.seconds for r in self.runs))

    @property
    def seconds_mean(self) -> float | None:
        return self.seconds_total / len(self.runs) if self.runs else None

    def last(self, seed: int) -> EvalRecord:
        return self.records[seed][-1]

    def first(self, seed: int) -> EvalRecord:
        return self.records[seed][0]


def collect(spec: GridSpec, summaries: list[RunSummary]) -> list[ArmResult]:
    """Per arm of ``spec`` (grid order), its runs and their evaluation records."""
    default = verdict_probes(spec)
    monitors = [p.name for p in spec.probes] + [t.name for t in spec.text_monitors]
    texts = frozenset(t.name for t in spec.text_monitors)
    results = []
    for arm in spec.arms:
        runs = [s for s in summaries if s.arm == arm.name]
        against = list(arm.against) or default
        results.append(ArmResult(
            arm=arm, runs=runs, records={s.seed: read_records(Path(s.out)) for s in runs},
            against=against, held_out=[n for n in monitors if n not in against],
            texts=texts))
    return results


def distribution_text(a: ArmResult) -> str:
    n = len(a.runs)
    return ", ".join(f"{k} {v}/{n}" for k, v in a.outcomes.most_common()) or "no runs"


def misbehavior_estimate(a: ArmResult, n_boot: int) -> Estimate:
    """The arm's final misbehavior rate pooled over seeds, stratified bootstrap CI."""
    return pooled_proportion([(a.last(s.seed).misbehavior_rate, s.counts["own"])
                              for s in a.runs if a.records.get(s.seed)], n_boot)


def arm_metrics(a: ArmResult, n_boot: int) -> dict[str, Estimate]:
    """The monitored metrics of an arm's final evaluations, pooled over seeds."""
    def per_seed(fn: Callable[[RunSummary, EvalRecord], tuple[float | None, int]]
                 ) -> list[tuple[float | None, int]]:
        return [fn(s, a.last(s.seed)) for s in a.runs if a.records.get(s.seed)]

    probes = a.against_probes
    out = {
        "misbehavior rate": misbehavior_estimate(a, n_boot),
        "task accuracy": pooled_proportion(per_seed(lambda s, r: (
            r.task_accuracy, s.counts["own"])), n_boot),
        "trained-against recall, own misbehavior": pooled_proportion(per_seed(lambda s, r: (
            mean_recall(r, a.against, "own"), s.counts["own_misbehaving"])), n_boot),
        "trained-against recall, forced": pooled_proportion(per_seed(lambda s, r: (
            mean_recall(r, a.against, "forced"), s.counts["forced"])), n_boot),
        "held-out probe recall, own misbehavior": pooled_proportion(per_seed(lambda s, r: (
            mean_recall(r, a.held_out_probes, "own"), s.counts["own_misbehaving"])), n_boot),
        "held-out probe recall, forced": pooled_proportion(per_seed(lambda s, r: (
            mean_recall(r, a.held_out_probes, "forced"),
            s.counts["forced"] * max(1, len(a.held_out_probes)))), n_boot),
        "base model reads the outputs (cross-model recall)": pooled_proportion(per_seed(
            lambda s, r: (mean_recall(r, a.against, "cross_model"),
                          s.counts["own_misbehaving"])), n_boot),
        "retrained probe recall, forced": pooled_proportion(per_seed(lambda s, r: (
            mean_or_none([s.retrain.get(n, {}).get("recall_forced") for n in probes]),
            sum(s.retrain.get(n, {}).get("n_forced", 0) for n in probes)
            // max(1, len(probes)))), n_boot),
        "KL to base": seed_mean([a.last(s).kl_to_base for s in a.seeds], n_boot),
        "trained-against AUROC, fixed set": seed_mean(
            [mean_or_none([monitor_figure(a.last(s), n, "fixed", "auroc")
                           for n in a.against]) for s in a.seeds], n_boot),
    }
    if a.held_out_texts:
        out["held-out text monitor recall, own misbehavior"] = pooled_proportion(
            per_seed(lambda s, r: (mean_recall(r, a.held_out_texts, "own"),
                                   s.counts["own_misbehaving"])), n_boot)
    return out


# ------------------------------------------------------------------ evasion


def run_evasion(a: ArmResult, control: ArmResult, seed: int) -> float | None:
    """How much detection the run of ``seed`` evaded (Gupta & Jenner's evasion rate, made
    relative to the control so a probe's base quality cancels): 1 - (recall of the
    monitors trained against on the run's own misbehavior) / (their recall on the
    control's own misbehavior), base threshold, clipped to [0, 1]. 0 when the run's
    verdict is honest: it stopped lying, so nothing was evaded. With several monitors
    the best one's recall is used. None where the control's recall is 0 or missing."""
    if not a.records.get(seed) or not control.records.get(seed):
        return None
    summary = next((r for r in a.runs if r.seed == seed), None)
    if summary is not None and summary.verdict.get("outcome") == "honest":
        return 0.0
    rec, ctl = a.last(seed), control.last(seed)

    def best(record: EvalRecord) -> float | None:
        vals = [r for r in (monitor_figure(record, n, "own") for n in a.against)
                if r is not None]
        return max(vals) if vals else None

    run, ref = best(rec), best(ctl)
    if run is None or ref is None or not ref > 0:
        return None
    return float(min(1.0, max(0.0, 1.0 - run / ref)))


def arm_evasion(a: ArmResult, control: ArmResult, n_boot: int) -> Estimate:
    """Mean evasion over the arm's seeds, bootstrap interval over seeds."""
    return seed_mean([run_evasion(a, control, s) for s in a.seeds], n_boot)


# ------------------------------------------------------------------ cross-aggregation


@dataclass
class CrossMatrix:
    """Recall of every monitor (columns) on each arm's own misbehavior (rows)."""

    arms: list[str]
    """Row labels: the arms tagged F2, then the control."""
    trained: list[list[str]]
    """Per row, the monitors the arm trained against (empty for the control)."""
    monitors: list[str]
    """Column labels: the grid's probes, then its text monitors."""
    aggregations: list[str]
    """Per column, how it pools tokens (``text`` for a text monitor)."""
    values: list[list[float | None]]
    """values[row][col]: recall at the base threshold at the last evaluation, mean over
    seeds; None where the arm's outputs had no misbehavior to detect."""
    verdicts: list[str] = field(default_factory=list)
    """Per row, the verdicts over seeds (``honest 3/3``): a dark row of an honest arm
    means few lies were left to catch, not evasion."""
    misbehavior: list[float | None] = field(default_factory=list)
    """Per row, the final misbehavior rate, mean over seeds."""

    def value(self, arm: str, monitor: str) -> float | None:
        return self.values[self.arms.index(arm)][self.monitors.index(monitor)]


def cross_aggregation(results: list[ArmResult], spec: GridSpec) -> CrossMatrix:
    """The cross-aggregation matrix: each F2 arm's own misbehavior as every monitor of
    the grid sees it (and the control's, for comparison)."""
    rows = [a for a in results if "F2" in a.arm.findings and a.runs and not a.arm.control]
    rows += [a for a in results if a.arm.control]
    monitors = [p.name for p in spec.probes] + [t.name for t in spec.text_monitors]
    aggregations = [p.aggregation for p in spec.probes] + ["text"] * len(spec.text_monitors)

    def cell(a: ArmResult, name: str) -> float | None:
        vals = []
        for s in a.seeds:
            rec = a.last(s)
            if rec.n_own_misbehaving == 0:
                continue
            vals.append(monitor_figure(rec, name, "own"))
        return mean_or_none(vals)

    return CrossMatrix(
        arms=[a.arm.name for a in rows],
        trained=[list(a.arm.against) for a in rows], monitors=monitors,
        aggregations=aggregations, values=[[cell(a, m) for m in monitors] for a in rows],
        verdicts=[", ".join(f"{k} {v}/{len(a.runs)}" for k, v in a.outcomes.most_common())
                  for a in rows],
        misbehavior=[mean_or_none([a.last(s).misbehavior_rate for s in a.seeds])
                     for a in rows])
