"""The atlas's time budget: the quick grid (<= 3 minutes) and the default grid (<= 30
minutes) on 2 cores, each arm's cost next to the plain fine-tune's (the control arm).

Runs the quick grid end to end (probe fitting, every run, the report) into a temporary
folder, timing the whole call, and prints per arm the seconds of its runs and the ratio
to the control arm's (the baseline: fine-tuning with no monitor in the loss; reward
arms score 12 candidate responses per prompt, so they cost several times more). With
``--default FOLDER`` (a finished ``heldout atlas --out FOLDER`` of the default grid) it
also reads that grid's per-run costs and wall time (``grid.json`` written first,
``report.md`` last, so a later ``--report-only`` makes it an upper bound) against the
30-minute budget, without rerunning it.

Usage: ``python benchmarks/atlas_budget.py [--default runs/atlas] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

QUICK_BUDGET_S = 180.0
DEFAULT_BUDGET_S = 1800.0


def per_arm(summaries: list[dict]) -> dict[str, list[tuple[float, str]]]:
    out: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for s in sorted(summaries, key=lambda s: (s["arm"] != "control", s["arm"], s["seed"])):
        out[s["arm"]].append((float(s["seconds"]), s["verdict"]["outcome"]))
    return out


def show(costs: dict[str, list[tuple[float, str]]]) -> None:
    base = sum(c for c, _ in costs["control"]) / len(costs["control"])
    print(f"{'arm':22s} {'runs':>4s} {'s/run':>7s} {'x control':>9s}  verdicts")
    for arm, runs in costs.items():
        mean = sum(c for c, _ in runs) / len(runs)
        print(f"{arm:22s} {len(runs):4d} {mean:7.1f} {mean / base:9.2f}  "
              f"{', '.join(v for _, v in runs)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--default", default=None, help="a finished default-grid atlas folder")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from heldout.atlas import quick_grid, run_atlas
    from heldout.threads import limit_threads

    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    ok = True
    with limit_threads(args.threads), tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = run_atlas(quick_grid(), Path(tmp) / "atlas", progress=False)
        wall = time.perf_counter() - start
        show(per_arm([s.to_dict() for s in result.summaries]))
        verdict = "PASS" if wall <= QUICK_BUDGET_S else "FAIL"
        ok &= wall <= QUICK_BUDGET_S
        print(f"quick grid wall {wall:.0f} s / budget {QUICK_BUDGET_S:.0f} s = "
              f"{wall / QUICK_BUDGET_S:.2f}  {verdict}")
    if args.default:
        root = Path(args.default)
        summaries = [json.loads(p.read_text()) for p in root.glob("runs/*/seed-*/summary.json")]
        if not summaries or not (root / "report.md").is_file():
            print(f"{root}: no finished default grid (summary.json files and report.md)",
                  file=sys.stderr)
            return 2
        show(per_arm(summaries))
        wall = (root / "report.md").stat().st_mtime - (root / "grid.json").stat().st_mtime
        runs = sum(float(s["seconds"]) for s in summaries)
        verdict = "PASS" if wall <= DEFAULT_BUDGET_S else "FAIL"
        ok &= wall <= DEFAULT_BUDGET_S
        print(f"default grid: {len(summaries)} runs, {runs:.0f} s in runs, wall {wall:.0f} s "
              f"/ budget {DEFAULT_BUDGET_S:.0f} s = {wall / DEFAULT_BUDGET_S:.2f}  {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
