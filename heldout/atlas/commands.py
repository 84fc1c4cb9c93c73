"""``heldout atlas``: run the experiment grid on the organism and write the atlas report.

    heldout atlas --out runs/atlas                # default grid (<= 20 min on 2 cores)
    heldout atlas --out runs/atlas-quick --quick  # every arm once, few steps
    heldout atlas --out runs/a --spec grid.json   # your own grid (see --print-spec)
    heldout atlas --out runs/atlas --report-only  # redraw the report from finished runs

Re-running the same command resumes: finished runs are kept, interrupted ones continue
from their last checkpoint.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("atlas", help="run a grid of training arms x seeds on the "
                              "organism and write the atlas report", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/atlas", help="atlas folder (default runs/atlas)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--spec", help="grid spec JSON file")
    which.add_argument("--quick", action="store_true", help="the quick grid (1 seed, few steps)")
    which.add_argument("--grid", choices=("default", "quick", "tiny"), default=None,
                       help="a shipped grid by name")
    p.add_argument("--arms", help="comma-separated arm names to run (the control is kept)")
    p.add_argument("--seeds", help="comma-separated seeds (default: the grid's)")
    p.add_argument("--steps", type=int, help="override the grid's steps")
    p.add_argument("--print-spec", action="store_true",
                   help="print the grid spec as JSON and exit (a template for --spec)")
    p.add_argument("--report-only", action="store_true",
                   help="write the report from finished runs; train nothing")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_atlas_command)


def build_spec(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from heldout.atlas.grid import GridSpec
    from heldout.atlas.grids import GRIDS
    from heldout.errors import ConfigError

    if args.spec:
        spec = GridSpec.load(args.spec)
    else:
        spec = GRIDS["quick" if args.quick else (args.grid or "default")]()
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r} is not a list of integers",
                          fix="e.g. --seeds 0,1") from None
    arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms else None
    spec = spec.select(arms, seeds)
    if args.steps is not None:
        spec = GridSpec.from_dict({**spec.to_dict(), "steps": args.steps})
        spec = replace(spec)
    return spec


def run_atlas_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    spec = build_spec(args)
    if args.print_spec:
        print(json.dumps(spec.to_dict(), indent=2))
        return 0
    if args.report_only:
        from heldout.atlas.report import write_atlas_report
        from heldout.atlas.runner import RunSummary, run_dir
        from heldout.errors import DataError

        out = Path(args.out)
        found = [RunSummary.from_dict(json.loads((run_dir(out, a.name, s) / "summary.json")
                                                 .read_text(encoding="utf-8")))
                 for a in spec.arms for s in spec.seeds
                 if (run_dir(out, a.name, s) / "summary.json").is_file()]
        if not found:
            raise DataError(f"{out} holds no finished atlas runs",
                            fix="run `heldout atlas` first (without --report-only)")
        print(f"report written to {write_atlas_report(out, spec, found)}")
        return 0
    from heldout.atlas.runner import run_atlas

    result = run_atlas(spec, args.out, progress=not args.quiet)
    print(f"{len(result.ran)} run(s) trained, {len(result.skipped)} already finished; "
          f"report written to {result.report}")
    return 0
