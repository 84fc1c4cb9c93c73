"""One held-out monitor evaluation, now vs the old cost, in the same run.

The monitor (``heldout.training.monitor.Monitor.evaluate``) generates the model's own
outputs on the evaluation prompts, grades them, and reads every probe on them, on the
fixed sets, and with the frozen base model. Two costs changed:

- generation: now a KV cache on the bridge's un-bridged twin (``heldout.generation``);
  before, a full forward pass of the bridge per new token. The baseline runs the same
  ``evaluate`` with the old cache-less loop swapped in for ``heldout.generation.generate``.
- memory: before, the current and base models' full-vocabulary log-probabilities of
  every own response were kept for the whole set to compute KL afterwards
  (``n_response_tokens x vocab x 4 bytes``, twice); now KL is reduced batch by batch.
  The script prints that size, and the measured peak RSS increase of one evaluation
  next to one forward pass of the model over the same batch (the monitor's batch holds
  the whole set here), measured the same way (``benchmarks/generation.py``: RSS sampled
  every 2 ms from /proc/self/statm after malloc_trim).

Models: a random GPT-2 of the organism's size and a random Llama with SmolLM2-135M's
shape (30 layers, d_model 576, vocab 49152), as in ``benchmarks/generation.py``.
Usage: ``python benchmarks/monitor_eval.py [--n 16] [--new-tokens 32] [--skip-llama]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from generation import (  # noqa: E402  (benchmarks/generation.py)
    cacheless,
    forward,
    measure,
    organism_sized_gpt2,
    smollm2_shaped_llama,
)


def _monitor(bridge: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """(Monitor with one probe and a regex labeler, the current model) for ``bridge``."""
    import numpy as np

    from heldout.data import Dataset
    from heldout.environments.files import make_labeler
    from heldout.probes.linear import LogisticProbe
    from heldout.tiny import write_example_dataset
    from heldout.training.config import ProbeSpec
    from heldout.training.monitor import EvalSets, Monitor
    from heldout.training.penalty import bind_probe
    from heldout.training.records import clone_bridge

    folder = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    data = Dataset.from_jsonl(write_example_dataset(folder / "eval.jsonl", n=args.n, seed=1))
    control = Dataset(tuple(e.__class__(**{**e.__dict__, "label": 0}) for e in data))
    rng = np.random.default_rng(0)
    d = int(bridge.cfg.d_model)
    X, y = rng.normal(size=(64, d)), np.arange(64) % 2
    probe = LogisticProbe().fit(X + y[:, None], y)
    layer = int(bridge.cfg.n_layers) // 2
    bound = bind_probe(ProbeSpec("bench.safetensors", site=f"resid_post:{layer}",
                                 selection="mean", name="probe"), bridge, probe)
    reference = clone_bridge(bridge)
    monitor = Monitor(reference, [bound], EvalSets(eval=data, control=control),
                      labeler=make_labeler({"misbehavior": r"\byes\b"}),
                      max_new_tokens=args.new_tokens)
    return monitor, bridge


def run(name: str, bridge: Any, args: argparse.Namespace) -> None:
    import torch

    import heldout.generation as generation
    from heldout.activations.cache import pad_batch

    monitor, model = _monitor(bridge, args)
    monitor.evaluate(model, 0)  # warm-up outside the timers
    new, t_new, m_new = measure(lambda: monitor.evaluate(model, 0))
    fast = generation.generate

    def old_generate(model: Any, prompts: Any, *, max_new_tokens: int, **_: Any) -> Any:
        return [[row] for row in cacheless(model, list(prompts), max_new_tokens)]

    generation.generate = old_generate  # type: ignore[assignment]
    try:
        _, t_old, _ = measure(lambda: monitor.evaluate(model, 0))
    finally:
        generation.generate = fast
    tokens = monitor.fixed_tokens
    ids, attention, _ = pad_batch(tokens, monitor.pad_id, "cpu")
    _, _, m_fwd = measure(lambda: forward(model, ids))
    vocab = int(model.cfg.d_vocab)
    old_bytes = 2 * new.n_own * args.new_tokens * vocab * 4
    print(f"\n{name}: {args.n} prompts, up to {args.new_tokens} new tokens")
    print(f"  evaluate, old generation (no KV cache): {t_old:8.2f} s")
    print(f"  evaluate, now:                          {t_new:8.2f} s   "
          f"speedup {t_old / t_new:5.1f}x")
    print(f"  peak RSS increase: evaluate {m_new:7.1f} MiB, one forward over the "
          f"{len(tokens)} fixed sequences {m_fwd:7.1f} MiB   ratio "
          f"{m_new / max(m_fwd, 1e-9):4.2f}  [goal <= 2]")
    print(f"  the old path also kept {old_bytes / 2**20:7.1f} MiB of full-vocabulary "
          f"log-probabilities (current + base, {new.n_own} responses x "
          f"{args.new_tokens} tokens x {vocab})")
    torch.cuda.empty_cache() if torch.cuda.is_available() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-llama", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    root = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    run("random GPT-2, organism size (4 layers, d_model 64)", organism_sized_gpt2(root), args)
    if args.skip_llama:
        return
    run("random Llama, SmolLM2-135M shape (30 layers, d_model 576)",
        smollm2_shaped_llama(root), args)

if __name__ == "__main__":
    main()
