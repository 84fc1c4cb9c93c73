"""Cache throughput against two baselines, measured in one run on the same tokens.

    python benchmarks/cache_throughput.py [--examples 384] [--layers 6] [--d-model 256]

Each phase runs in its own subprocess so that its peak RSS is its own. Phases:
- bare:      the bridge's plain forward over the same padded batches (no hooks, no disk);
- cache_all: heldout cache_activations of resid_post at every layer (last token) to disk;
- cache_mid: the same for one middle layer (the forward stops early);
- tl_save:   TransformerLens run_with_cache of all hooks, then torch.save of each batch's
             cache to disk (the naive way to cache).
Goals: cache_all / bare >= 0.90 (cache_mid / bare > 1.0); cache_all / tl_save >= 2.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_inputs(root: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    import random

    from heldout.data import Dataset
    from heldout.tiny import WORDS, write_tiny_checkpoint

    model = write_tiny_checkpoint(root / "model", arch="gpt2", n_layers=args.layers,
                                  d_model=args.d_model, n_ctx=256, seed=0)
    rng = random.Random(0)
    rows = [{"id": str(i), "label": i % 2,
             "messages": [{"role": "user", "content": " ".join(
                 rng.choice(WORDS) for _ in range(rng.randint(20, 120)))}],
             "response": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40)))}
            for i in range(args.examples)]
    data = root / "data.jsonl"
    Dataset.from_examples(rows).to_jsonl(data)
    return model, data


def run_phase(phase: str, model_dir: str, data: str, out: str, batch_size: int) -> dict[str, float]:
    import torch

    from heldout.activations.cache import cache_activations, pad_batch
    from heldout.data import load_dataset, tokenize_dataset
    from heldout.models import load_model

    torch.manual_seed(0)
    model = load_model(model_dir, device="cpu")
    dataset = load_dataset(data)
    n_layers = int(model.cfg.n_layers)
    tokens = tokenize_dataset(dataset, model.tokenizer)
    n_tokens = sum(len(t.input_ids) for t in tokens)
    order = sorted(range(len(tokens)), key=lambda r: len(tokens[r].input_ids))
    batches = [[tokens[r] for r in order[i:i + batch_size]]
               for i in range(0, len(order), batch_size)]
    # one warm-up forward outside the timer, the same for every phase (lazy init, caches)
    with torch.no_grad():
        ids, attention, _ = pad_batch(batches[0], 0, "cpu")
        model(ids, attention_mask=attention)
    start = time.perf_counter()
    if phase == "bare":
        with torch.no_grad():
            for batch in batches:
                ids, attention, _ = pad_batch(batch, 0, "cpu")
                model(ids, attention_mask=attention)
    elif phase in ("cache_all", "cache_mid"):
        sites = f"resid_post:0-{n_layers - 1}" if phase == "cache_all" \
            else f"resid_post:{n_layers // 2 - 1}"
        cache_activations(model, dataset, sites, out=out, select="last", batch_size=batch_size,
                          progress=False)
    elif phase == "tl_save":
        Path(out).mkdir()
        with torch.no_grad():
            for i, batch in enumerate(batches):
                ids, attention, _ = pad_batch(batch, 0, "cpu")
                _, cache = model.run_with_cache(ids, attention_mask=attention)
                torch.save({k: v for k, v in cache.items()}, f"{out}/batch{i}.pt")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens_per_s": n_tokens / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--paths", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, *args.paths, args.batch_size)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, data = make_inputs(root, args)
        results: dict[str, dict[str, float]] = {}
        phases = ("bare", "cache_all", "cache_mid", "tl_save") * args.repeats
        for run, phase in enumerate(phases):
            out = root / f"out-{phase}-{run}"
            proc = subprocess.run([sys.executable, __file__, "--phase", phase, "--paths",
                                   str(model), str(data), str(out),
                                   "--batch-size", str(args.batch_size)],
                                  capture_output=True, text=True, check=True)
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            # every phase runs --repeats times, interleaved; each keeps its fastest run
            if phase in results:
                result = min(result, results[phase], key=lambda r: r["seconds"])
            results[phase] = result
    print(f"{args.examples} examples, gpt2 {args.layers} layers d_model {args.d_model}, "
          f"batch {args.batch_size}, {os.cpu_count()} CPUs, best of {args.repeats} runs")
    print(f"{'phase':<10} {'seconds':>8} {'tokens/s':>10} {'peak RSS MiB':>13}")
    for phase, r in results.items():
        print(f"{phase:<10} {r['seconds']:8.2f} {r['tokens_per_s']:10.0f} {r['peak_rss_mib']:13.0f}")
    bare = results["bare"]["tokens_per_s"]
    print(f"cache (all {args.layers} layers) / bare forward : "
          f"{results['cache_all']['tokens_per_s'] / bare:.2f}  (goal >= 0.90)")
    print(f"cache (1 middle layer) / bare forward   : "
          f"{results['cache_mid']['tokens_per_s'] / bare:.2f}  (goal > 1.0: early stop)")
    print(f"cache (all layers) / run_with_cache+save: "
          f"{results['cache_all']['tokens_per_s'] / results['tl_save']['tokens_per_s']:.2f}"
          f"  (goal >= 2)")


if __name__ == "__main__":
    main()
