"""``heldout train``: penalized fine-tuning with a held-out monitor, from the shell.

    heldout train --config run.json [--resume]
    heldout train --out runs/a --against probes/l2.safetensors --weight 5 \\
                  --held-out probes/l1.safetensors --steps 200

Writes the run folder (config.json, steps.jsonl, evals.jsonl, checkpoints/, probes/,
plots/). With a probe trained against, a no-penalty control run with the same probes
is trained in ``<out>/control`` (or read from ``--control DIR``) and ``verdict.json``
is written. ``heldout train-demo --out DIR`` runs the organism demo.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from heldout.errors import ConfigError

_FLAGS = {  # flag → (TrainConfig field, type)
    "--model": ("model", str), "--out": ("out", str), "--train-data": ("train_data", str),
    "--eval-data": ("eval_data", str), "--control-data": ("control_data", str),
    "--forced-data": ("forced_data", str), "--steps": ("steps", int),
    "--batch-size": ("batch_size", int), "--grad-accum": ("grad_accum", int),
    "--lr": ("lr", float), "--weight-decay": ("weight_decay", float),
    "--schedule": ("schedule", str), "--warmup-steps": ("warmup_steps", int),
    "--kl-weight": ("kl_weight", float), "--train-from-layer": ("train_from_layer", int),
    "--eval-every": ("eval_every", int), "--checkpoint-every": ("checkpoint_every", int),
    "--n-eval": ("n_eval", int), "--n-train": ("n_train", int), "--fpr": ("fpr", float),
    "--seed": ("seed", int),
    "--mode": ("mode", str), "--reward-detector": ("reward_detector", str),
    "--reward-samples": ("reward_samples", int),
}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="fine-tune against probes, with held-out monitors",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="TrainConfig JSON file (flags override its fields)")
    for flag, (dest, kind) in _FLAGS.items():
        p.add_argument(flag, dest=dest, type=kind, default=None)
    p.add_argument("--against", action="append", default=[], metavar="PROBE",
                   help="probe file to train against (repeatable)")
    p.add_argument("--weight", type=float, default=1.0, help="λ of the --against probes")
    p.add_argument("--penalty", default="mean", choices=("mean", "max", "neglog"))
    p.add_argument("--held-out", action="append", default=[], metavar="PROBE",
                   help="probe file that only watches (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--control", metavar="DIR", help="an existing no-penalty control run")
    p.add_argument("--no-control", action="store_true", help="skip the control run and verdict")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summaries")
    p.set_defaults(func=run_train)
    d = subparsers.add_parser("train-demo", help="fine-tune the organism against a probe "
                              "and without one; print both verdicts")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--steps", type=int, default=None)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=run_demo)


def build_config(args: argparse.Namespace) -> Any:
    from heldout.training.config import ProbeSpec, TrainConfig

    data: dict[str, Any] = {}
    if args.config:
        data = TrainConfig.load(args.config).to_dict()
    for dest, _ in _FLAGS.values():
        value = getattr(args, dest)
        if value is not None:
            data[dest] = value
    probes = list(data.get("probes", []))
    probes += [ProbeSpec(path=p, role="train_against", weight=args.weight,
                         penalty=args.penalty).to_dict() for p in args.against]
    probes += [ProbeSpec(path=p).to_dict() for p in args.held_out]
    data["probes"] = probes
    return TrainConfig.from_dict(data)


def run_train(args: argparse.Namespace) -> int:
    from heldout.activations.distributed import ranks_from_env
    from heldout.training.trainer import Trainer

    if ranks_from_env().distributed:  # under torchrun: DistributedDataParallel
        from heldout.training.ddp import run_train_distributed

        return run_train_distributed(args)
    config = build_config(args)
    progress = not args.quiet
    return train_with_control(
        args, config, lambda cfg, resume: Trainer(cfg, resume=resume, progress=progress))


def train_with_control(args: argparse.Namespace, config: Any,
                       make_trainer: Callable[[Any, bool], Any], *, is_main: bool = True,
                       processes: int = 1) -> int:
    """Train ``config``, then its no-penalty control (unless ``--control DIR`` or
    ``--no-control``), then write ``verdict.json`` and the plots (on the main process)."""
    from heldout.training.reward import is_organism

    # From the command line only the organism comes with a labeler (checked before the
    # trainer is built, which already writes the run folder).
    if config.against and not args.no_control and not is_organism(config):
        raise ConfigError(
            "the verdict compares misbehavior rates, which need a labeler that reads the "
            "model's outputs; from the command line only the built-in organism has one",
            fix="pass --no-control to train without a verdict, or call "
                "heldout.training.Trainer(config, labeler=...) from Python")
    make_trainer(config, args.resume).train()
    if is_main:
        where = f" ({processes} processes)" if processes > 1 else ""
        print(f"run written to {config.out}{where}")
    if not config.against or args.no_control:
        return 0
    control_dir = args.control
    if control_dir is None:
        control = config.control()
        make_trainer(control, args.resume and (Path(control.out) / "checkpoints").is_dir()
                     ).train()
        control_dir = control.out
    if is_main:
        from heldout.analysis.curves import plot_run
        from heldout.analysis.verdict import verdict

        result = verdict(config.out, control_dir)
        result.save(Path(config.out) / "verdict.json")
        plot_run(config.out, control=control_dir)
        print(result.table())
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from heldout.training.experiment import demo

    kwargs = {} if args.steps is None else {"steps": args.steps}
    result = demo(args.out, progress=not args.quiet, **kwargs)
    print(json.dumps({"penalized": result.verdict["outcome"],
                      "control": result.control_verdict["outcome"],
                      "run": str(result.run), "control_run": str(result.control)}, indent=2))
    return 0
