"""The ``heldout`` command. Each area registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

from heldout.errors import HeldoutError

# Modules with a ``register(subparsers)`` function, added when present.
COMMAND_MODULES = ("heldout.activations.commands", "heldout.probes.commands",
                   "heldout.organism.commands", "heldout.training.commands",
                   "heldout.analysis.commands", "heldout.demo",
                   "heldout.atlas.commands", "heldout.gguf")


def build_parser() -> argparse.ArgumentParser:
    from heldout import __version__

    parser = argparse.ArgumentParser(
        prog="heldout",
        description="Probes for misbehavior in language models, and training against them "
                    "with held-out monitors.")
    parser.add_argument("--version", action="version", version=f"heldout {__version__}")
    parser.add_argument("--threads", default=None, metavar="N",
                        help="CPU threads for torch and BLAS (default $HELDOUT_THREADS or 1: "
                             "a second thread collapses when another process holds a core; "
                             "raise it for large models on an idle machine)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # the parent package is absent
            found = False
        if found:
            importlib.import_module(name).register(subparsers)
    for sub in subparsers.choices.values():  # also accepted after the command
        sub.add_argument("--threads", default=argparse.SUPPRESS, metavar="N",
                         help="CPU threads for torch and BLAS (default $HELDOUT_THREADS or 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # transformers' own bars ("Loading weights", "Writing model shards") for files of a
    # few kB would bury heldout's progress lines; read before transformers is imported
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        from heldout.threads import check_threads, limit_threads

        threads = None if args.threads is None else check_threads(args.threads, "--threads")
        with limit_threads(threads):
            return int(args.func(args) or 0)
    except HeldoutError as err:
        print(f"heldout {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"heldout {args.command}: interrupted; finished work is kept on disk "
              "(re-run the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
