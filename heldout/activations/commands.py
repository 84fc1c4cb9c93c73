"""CLI: ``heldout cache``, ``heldout inspect`` and ``heldout tiny-model``."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("cache", help="cache activations of a dataset into a store",
                              description="Run a dataset through a model and store the "
                                          "activations at the given sites. Re-running the "
                                          "same command resumes an interrupted run. Under "
                                          "`torchrun --nproc_per_node=N -m heldout cache ...` "
                                          "N processes (one per GPU) split the work and "
                                          "write one store.")
    p.add_argument("--model", required=True, help="local Hugging Face checkpoint folder")
    p.add_argument("--data", required=True, help=".jsonl or .csv (statement,label) dataset")
    p.add_argument("--sites", required=True, help="e.g. resid_post:0-3,mlp_out:1 or resid_post:all")
    p.add_argument("--group-by", default=None, metavar="COLUMN",
                   help="take each row's group from this column (e.g. city, in a paired "
                        "set): seeded splits keep a group's rows on one side")
    p.add_argument("--select", default="last",
                   help="last | mean | tokens | token:K (the K-th response token) | "
                        "prompt_last (the last prompt token, just before the response)")
    p.add_argument("--out", required=True, help="store folder (created, or resumed)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shard-rows", type=int, default=4096)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--truncate", action="store_true",
                   help="drop tokens from the left of over-long examples instead of failing")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, ... (default: cuda if available; under torchrun, "
                        "cuda means each rank's own GPU, cuda:LOCAL_RANK)")
    p.set_defaults(func=run_cache)

    p = subparsers.add_parser("inspect", help="summarize an activation store")
    p.add_argument("store")
    p.set_defaults(func=run_inspect)

    p = subparsers.add_parser("tiny-model", help="write a tiny random checkpoint and dataset")
    p.add_argument("out", help="folder for the checkpoint")
    p.add_argument("--arch", default="gpt2", choices=["gpt2", "llama"])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--data", default=None,
                   help="also write an example JSONL dataset here (64 chats, labels 0/1, "
                        "train/test splits that both hold both labels)")
    p.add_argument("--control-data", default=None, metavar="FILE",
                   help="also write a benign control set here (32 label-0 chats), to cache "
                        "and pass as --control for probe thresholds")
    p.set_defaults(func=run_tiny_model)


def run_cache(args: argparse.Namespace) -> int:
    from heldout.activations.cache import cache_activations
    from heldout.activations.distributed import local_device, ranks_from_env
    from heldout.activations.sites import parse_sites
    from heldout.data import load_dataset
    from heldout.models import check_checkpoint_dir, checkpoint_layers, load_model

    # Cheap checks first, so bad input fails before the model is loaded. Every rank of
    # a torchrun job makes the same checks, so all of them stop on the same error.
    ranks = ranks_from_env()
    folder = check_checkpoint_dir(args.model)
    dataset = load_dataset(args.data, group_by=args.group_by)
    parse_sites(args.sites, n_layers=checkpoint_layers(folder))
    model = load_model(args.model, device=local_device(args.device))
    store = cache_activations(model, dataset, args.sites, out=args.out, select=args.select,
                              dtype=args.dtype, batch_size=args.batch_size,
                              shard_rows=args.shard_rows, max_length=args.max_length,
                              truncate=args.truncate)
    if ranks.is_main:
        print(f"wrote {store}" + (f" with {ranks.world_size} processes"
                                  if ranks.distributed else ""))
    return 0


def describe_store(path: str) -> str:
    from heldout.activations.store import ActivationStore
    from heldout.activations.writer import SIDECAR_GLOB

    store = ActivationStore.open(path, allow_incomplete=True)
    m = store.manifest
    labels = Counter(store.labels.tolist())
    splits = Counter(str(s) for s in store.splits)
    lines = [
        f"store      {store.path}",
        f"status     {'complete' if store.complete else 'UNFINISHED'}: "
        f"{store.rows_done}/{store.n_rows} rows in {len(m['shards'])} shard(s), "
        f"{store.nbytes / 2**20:.1f} MiB",
        f"sites      {', '.join(m['sites'])}",
        f"selection  {store.selection}   dtype {store.dtype}   d_model {store.d_model}",
        f"labels     {labels.get(1, 0)} positive / {labels.get(0, 0)} negative",
        f"splits     {', '.join(f'{k}: {v}' for k, v in sorted(splits.items()))}",
        f"model      {m['model_fingerprint']}   dataset {m['dataset_fingerprint']}",
        f"heldout    {m.get('heldout_version')}",
    ]
    sidecars = sorted(store.path.glob(SIDECAR_GLOB))
    if sidecars:
        lines.append(f"unmerged   {len(sidecars)} rank sidecar file(s) list more finished "
                     "shards: re-run the same cache command to merge them")
    if store.selection == "tokens":
        tokens = sum(s.get("n_tokens", 0) for s in m["shards"])
        lines.append(f"tokens     {tokens} response tokens "
                     f"({tokens / max(store.rows_done, 1):.1f} per example)")
    return "\n".join(lines)


def run_inspect(args: argparse.Namespace) -> int:
    print(describe_store(args.store))
    return 0


def run_tiny_model(args: argparse.Namespace) -> int:
    from heldout.tiny import (
        write_control_dataset,
        write_example_dataset,
        write_tiny_checkpoint,
    )

    folder = write_tiny_checkpoint(args.out, arch=args.arch, n_layers=args.layers)
    print(f"wrote a random {args.arch} checkpoint to {folder}")
    if args.data:
        print(f"wrote an example dataset to {write_example_dataset(args.data)}")
    if args.control_data:
        print(f"wrote a benign control set to {write_control_dataset(args.control_data)}")
    return 0
