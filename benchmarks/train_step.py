"""Cost of training against a probe, measured against plain fine-tuning in the same run.

Prints (goal in brackets):
  1. penalized step time / plain step time: one probe trained against (gradient
     through its score, hook capture in the same forward pass) vs. no probe, same
     model, batch and optimizer, steps interleaved, median of repeats       [<= 1.10]
  2. forward passes per monitored evaluation: model calls of the current model and
     of the frozen base model, and how many passes over the data they make

Runs on the built-in organism when it is cached (``heldout train-demo`` or the tests
train it), else on a random GPT-2 of the organism's size (4 layers, d_model 64).
Usage: ``python benchmarks/train_step.py [--steps 40]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per arm")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from heldout.training.config import ProbeSpec, TrainConfig
    from heldout.training.experiment import fit_organism_probes, organism_checkpoint
    from heldout.training.trainer import Trainer

    root = Path(tempfile.mkdtemp(prefix="train-step-"))
    print(f"organism: {organism_checkpoint()}")
    files = fit_organism_probes(root / "probes", ["resid_post:2"], selections=("last",))
    path = str(files["resid_post:2/last"])
    common: dict[str, Any] = {"steps": 10_000, "batch_size": 32, "eval_every": 10_000,
                              "checkpoint_every": 0, "n_eval": 300, "plots": False}
    penalized = Trainer(TrainConfig(out=str(root / "pen"), probes=(ProbeSpec(
        path, role="train_against", weight=3.0, name="p"),), **common), progress=False)
    plain = Trainer(TrainConfig(out=str(root / "plain"), **common), progress=False)
    for t in (penalized, plain):  # warm-up
        for _ in range(3):
            t.step()
    times: dict[str, list[float]] = {"penalized": [], "plain": []}
    for _ in range(args.steps):
        for name, t in (("penalized", penalized), ("plain", plain)):
            start = time.perf_counter()
            t.step()
            times[name].append(time.perf_counter() - start)
    pen, base = statistics.median(times["penalized"]), statistics.median(times["plain"])
    print(f"penalized step {pen * 1e3:.1f} ms, plain step {base * 1e3:.1f} ms "
          f"(median of {args.steps}, batch 32, {args.threads} thread(s))")
    print(f"1. penalized / plain step time: {pen / base:.3f}   [goal <= 1.10]")
    record = penalized.evaluate()
    calls = record["forward_calls"]
    mon = penalized.monitor
    batched = -(-(record["n_own"] + len(mon.fixed_tokens)) // mon.batch_size)
    print(f"2. forward passes per monitored evaluation: current model {calls['current']} "
          f"calls = {calls['current'] - batched} greedy-generation calls (prompts grouped "
          f"by length x up to {penalized.config.max_new_tokens} tokens) + ONE pass over own "
          f"outputs + eval + control + forced sets ({batched} batches of "
          f"{mon.batch_size}, every probed site captured together); base model "
          f"{calls['base']} calls = ONE pass over the own outputs; {record['n_own']} own "
          f"outputs, "
          f"{len(penalized.monitor.fixed_tokens)} fixed sequences, "
          f"{record['seconds']:.1f} s")


if __name__ == "__main__":
    main()
