"""``heldout train``: penalized fine-tuning with a held-out monitor, from the shell.

    heldout train --config run.json [--resume]
    heldout train --out runs/a --against probes/l2.safetensors --weight 5 \\
                  --held-out probes/l1.safetensors --steps 200

Writes the run folder (config.json, steps.jsonl, evals.jsonl, checkpoints/, probes/,
plots/). With a probe trained against, a no-penalty control run with the same probes
is trained in ``<out>/control`` (or read from ``--control DIR``) and ``verdict.json``
is written.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from heldout.errors import ConfigError

_SKIPPED = ("probes", "monitors", "organism")  # structured: given in the --config file


def _flag_type(hint: Any) -> Any:
    """The argparse type of a TrainConfig field (None: not a flag)."""
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) is Literal:
        return str
    if hint in (int, float, str, bool):
        return hint
    if args and all(get_origin(a) is Literal for a in args):
        return str
    if len(args) == 1 and args[0] in (int, float, str, bool):
        return args[0]
    if str in args:
        return str
    return None


def config_flags() -> dict[str, tuple[str, Any, str]]:
    """``--flag`` → (TrainConfig field, type, help) for every scalar field, derived from
    the dataclass so that a new field is a new flag."""
    from heldout.training.config import TrainConfig

    hints = get_type_hints(TrainConfig)
    docs = _field_docs(TrainConfig)
    out: dict[str, tuple[str, Any, str]] = {}
    for f in fields(TrainConfig):
        kind = _flag_type(hints[f.name])
        if f.name in _SKIPPED or kind is None:
            continue
        out["--" + f.name.replace("_", "-")] = (f.name, kind, docs.get(f.name, ""))
    return out


def _field_docs(cls: Any) -> dict[str, str]:
    """First sentence of each field's docstring (the string under it in the source)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            text = " ".join(str(nxt.value.value).split())
            docs[node.target.id] = text.split(". ")[0].replace("%", "%%")
    return docs


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="fine-tune against probes, with held-out monitors",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="TrainConfig JSON file (flags override its fields)")
    for flag, (dest, kind, doc) in config_flags().items():
        if kind is bool:
            p.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                           default=None, help=doc)
        else:
            p.add_argument(flag, dest=dest, type=kind, default=None, help=doc)
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


def build_config(args: argparse.Namespace) -> Any:
    from heldout.training.config import ProbeSpec, TrainConfig

    data: dict[str, Any] = {}
    if args.config:
        data = TrainConfig.load(args.config).to_dict()
    for dest, _, _ in config_flags().values():
        value = getattr(args, dest)
        if value is not None:
            data[dest] = value
    env = data.get("environment")
    if isinstance(env, str) and env.endswith(".json"):  # --environment FILE.json
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"environment file {env!r} does not exist", fix="check the path")
        data["environment"] = json.loads(path.read_text(encoding="utf-8"))
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
        args, config, lambda cfg, resume, env: Trainer(cfg, resume=resume, progress=progress,
                                                       environment=env))


def train_with_control(args: argparse.Namespace, config: Any,
                       make_trainer: Callable[[Any, bool, Any], Any], *, is_main: bool = True,
                       processes: int = 1, environment: Any = None) -> int:
    """Train ``config``, then its no-penalty control (unless ``--control DIR`` or
    ``--no-control``), then write ``verdict.json`` and the plots (on the main process)."""
    from heldout.environments.resolve import resolve_environment

    if config.tensorboard:  # before the environment, which may train the organism
        from heldout.training.tensorboard import require_tensorboard

        require_tensorboard()
    env = environment if environment is not None else resolve_environment(config)
    # checked before the trainer is built, which already writes the run folder
    if config.against_names and not args.no_control and env.labeler is None:
        raise ConfigError(
            f"the verdict compares misbehavior rates, which need a labeler that reads the "
            f"model's outputs, and environment {env.name!r} has none",
            fix="give the environment a labeler (\"labeler\": {\"misbehavior\": REGEX} or "
                "'module:function', see examples/run-own-model.json), or pass --no-control "
                "to train without a verdict")
    make_trainer(config, args.resume, env).train()
    if is_main:
        where = f" ({processes} processes)" if processes > 1 else ""
        print(f"run written to {config.out}{where}")
    if not config.against_names or args.no_control:
        return 0
    control_dir = args.control
    if control_dir is None:
        control = config.control()
        make_trainer(control, args.resume and (Path(control.out) / "checkpoints").is_dir(),
                     env).train()
        control_dir = control.out
    if is_main:
        from heldout.analysis.curves import plot_run
        from heldout.analysis.headline import write_headline
        from heldout.analysis.verdict import verdict

        result = verdict(config.out, control_dir)
        result.save(Path(config.out) / "verdict.json")
        plot_run(config.out, control=control_dir)
        headline = write_headline(config.out, control_dir, result)
        print(result.table())
        print(f"headline figure: {headline}")
    return 0
