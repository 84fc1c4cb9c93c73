"""``heldout organism``, ``heldout organism-probes`` and ``heldout train-demo``: the
organism from the shell.

``organism`` installs (or trains) the organism and prints its folder; ``--verify``
retrains its first 100 steps here and checks them against the shipped copy; ``--retrain``
trains it from scratch (about five minutes on one core).

``train-demo --out DIR`` fine-tunes the organism against one probe and against none and
prints both verdicts. ``organism-probes`` fits base probes for run configs to name:

    heldout organism-probes --out runs/organism-probes \\
        --sites resid_post:1,resid_post:2,resid_post:3 --selections token:5,mean

Writes one probe file per (site, selection), named ``<site.key>-<selection>.safetensors``
(e.g. ``resid_post.2-token5.safetensors``), fitted on the base organism's ``train``
split and calibrated on its ``control`` set. ``examples/run-organism.json`` uses them.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    o = subparsers.add_parser("organism", help="install, verify or retrain the model "
                              "organism; prints its folder")
    o.add_argument("--give-in", type=float, default=1.0,
                   help="probability of giving in under pressure (1.0 and 0.5 are shipped)")
    o.add_argument("--v2", action="store_true", help="organism v2 as the atlas runs it "
                   "(stochastic give-in, optional stated sum, filler; shipped)")
    o.add_argument("--retrain", action="store_true", help="train from scratch, replacing "
                   "the cached copy")
    o.add_argument("--verify", action="store_true", help="retrain the first 100 steps and "
                   "compare with the shipped weights' record")
    o.set_defaults(func=run_organism)
    p = subparsers.add_parser("organism-probes", help="fit logistic probes on the base "
                              "organism (for run configs)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the probe files")
    p.add_argument("--sites", default="resid_post:1,resid_post:2,resid_post:3",
                   help="comma-separated hook sites (default resid_post:1,2,3)")
    p.add_argument("--selections", default="token:5,mean",
                   help="comma-separated token selections (default token:5,mean: the "
                        "decision token and the response mean)")
    p.set_defaults(func=run_organism_probes)
    d = subparsers.add_parser("train-demo", help="fine-tune the organism against a probe "
                              "and without one; print both verdicts")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--steps", type=int, default=None)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=run_demo)


def run_organism(args: argparse.Namespace) -> int:
    from heldout.organism import OrganismConfig, load_organism
    from heldout.organism.shipped import verify_shipped

    if args.v2:
        from heldout.organism.behaviour import V2_ORGANISM

        if args.give_in != 1.0:
            from heldout.errors import ConfigError

            raise ConfigError("--v2 sets its own give-in (0.6, spread per cue)",
                              fix="drop --give-in, or drop --v2")
        config = OrganismConfig(**V2_ORGANISM)
    else:
        config = OrganismConfig(give_in=args.give_in)
    if args.verify:
        check = verify_shipped(config, progress=True)
        print(f"first {check.steps} steps retrained here vs shipped: largest relative "
              f"difference of a parameter norm {check.max_relative_difference:.2e} "
              f"(tolerance {check.tolerance:.0e}): {'same' if check.ok else 'DIFFERENT'}")
        return 0 if check.ok else 1
    organism = load_organism(config, retrain=args.retrain)
    print(f"{organism.path}\t{organism.record.get('source', 'trained')}")
    return 0


def run_organism_probes(args: argparse.Namespace) -> int:
    from heldout.activations.selection import check_selection
    from heldout.activations.sites import HookSite
    from heldout.organism.experiment import fit_organism_probes

    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    selections = tuple(s.strip() for s in args.selections.split(",") if s.strip())
    for s in sites:
        HookSite.parse(s)  # SiteError before the organism is loaded
    for sel in selections:
        check_selection(sel)
    for key, path in fit_organism_probes(args.out, sites, selections=selections).items():
        print(f"{key}\t{path}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    import json

    from heldout.organism.experiment import demo

    kwargs = {} if args.steps is None else {"steps": args.steps}
    result = demo(args.out, progress=not args.quiet, **kwargs)
    print(json.dumps({"penalized": result.verdict["outcome"],
                      "control": result.control_verdict["outcome"],
                      "run": str(result.run), "control_run": str(result.control)}, indent=2))
    return 0
