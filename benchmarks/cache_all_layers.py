"""Caching resid_post at every layer of a real model, against a plain HF forward.

    python benchmarks/cache_all_layers.py [--examples 200] [--batch-size 32] [--repeats 3]

On SmolLM2-135M-Instruct (30 layers, d_model 576, float32, no grad, one thread) over
the first ``--examples`` statements of the shipped cities set, in one process:
- heldout:  ``cache_activations`` of ``resid_post:0-29``, selection ``last``, to a store
            on disk (tokenizing, fingerprinting and writing included);
- hf:       the same tokens, sorted and padded into the same batches, through the plain
            HF base model (``AutoModel``'s decoder, no LM head: heldout computes no
            logits either) with ``output_hidden_states=True``; each of the 30 hidden
            states reduced to the same last token per example and copied to CPU numpy.
- hf+head:  the same with the full ``AutoModelForCausalLM`` (logits too), for reference.
The phases alternate ``--repeats`` times after one warm-up forward each; each keeps
its fastest run. Goal: hf seconds / heldout seconds >= 0.90.
The benchmark also checks that the stored activations equal HF's hidden states
(``hidden_states[i + 1]`` is resid_post of block i; HF's last entry is after the final
norm, so block 29 is compared after applying that norm) within ``--tol`` of each example's activation scale (SmolLM2's residual stream
reaches ~1e3, so float32 rounding alone is ~1e-4 in absolute terms).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GOAL = 0.90


def hf_hidden_states(model: Any, batches: list[Any], n_rows: int) -> Any:
    """Plain HF: forward each batch, keep every block's output at the last token as numpy
    of shape (n_layers, n_rows, d_model)."""
    import numpy as np
    import torch

    from heldout.activations.cache import pad_batch

    out: Any = None
    with torch.no_grad():
        for rows, batch in batches:
            ids, attention, response = pad_batch(batch, 0, "cpu")
            hidden = model(input_ids=ids, attention_mask=attention,
                          output_hidden_states=True).hidden_states[1:]
            last = response.shape[1] - 1 - response.flip(1).int().argmax(dim=1)
            picked = torch.stack([h[torch.arange(len(rows)), last] for h in hidden])
            values = picked.float().cpu().numpy()
            if out is None:
                out = np.empty((values.shape[0], n_rows, values.shape[2]), dtype=np.float32)
            out[:, rows] = values
    return out


def heldout_cache(bridge: Any, dataset: Any, sites: str, folder: Path, batch_size: int) -> Any:
    from heldout.activations.cache import cache_activations

    return cache_activations(bridge, dataset, sites, out=folder, select="last",
                             batch_size=batch_size, progress=False)


def compare(store: Any, reference: Any, final_norm: Any) -> tuple[float, float, float]:
    """(largest |heldout - hf|, largest |hf|, largest |heldout - hf| / max(1, |hf| row max))
    over all layers and examples; block n-1 goes through HF's final norm first."""
    import numpy as np
    import torch

    worst = scale = scaled = 0.0
    n_layers = reference.shape[0]
    for site in store.sites:
        ours, ref = store.read(site), reference[site.layer]
        if site.layer == n_layers - 1:
            with torch.no_grad():
                ours = final_norm(torch.from_numpy(ours.copy())).numpy()
        diff = np.abs(ours - ref)
        rows = np.maximum(1.0, np.abs(ref).max(axis=1, keepdims=True))
        worst, scale = max(worst, float(diff.max())), max(scale, float(np.abs(ref).max()))
        scaled = max(scaled, float((diff / rows).max()))
    return worst, scale, scaled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tol", type=float, default=1e-4,
                        help="largest |heldout - hf| allowed, relative to the example's "
                             "largest |activation| at that layer (or 1 if smaller)")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    from heldout.activations.cache import pad_batch
    from heldout.data import Dataset, tokenize_dataset
    from heldout.datasets import cities
    from heldout.gguf import smollm2_folder
    from heldout.models import load_model
    from heldout.threads import limit_threads

    with limit_threads(args.threads), tempfile.TemporaryDirectory() as tmp:
        folder = smollm2_folder()
        dataset = Dataset(cities().examples[:args.examples])
        bridge = load_model(folder, dtype=torch.float32)
        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        base = hf.model  # the decoder without the LM head
        n_layers = int(bridge.cfg.n_layers)
        sites = f"resid_post:0-{n_layers - 1}"
        tokens = tokenize_dataset(dataset, bridge.tokenizer)
        n_tokens = sum(len(t.input_ids) for t in tokens)
        order = sorted(range(len(tokens)), key=lambda r: len(tokens[r].input_ids))
        batches = [(order[i:i + args.batch_size],
                    [tokens[r] for r in order[i:i + args.batch_size]])
                   for i in range(0, len(order), args.batch_size)]
        with torch.no_grad():  # one warm-up forward of each model outside the timers
            ids, attention, _ = pad_batch(batches[0][1], 0, "cpu")
            bridge(ids, attention_mask=attention)
            base(input_ids=ids, attention_mask=attention, output_hidden_states=True)
        best = {"hf": float("inf"), "hf+head": float("inf"), "heldout": float("inf")}
        store = reference = None
        for run in range(args.repeats):
            start = time.perf_counter()
            reference = hf_hidden_states(base, batches, len(tokens))
            best["hf"] = min(best["hf"], time.perf_counter() - start)
            start = time.perf_counter()
            hf_hidden_states(hf, batches, len(tokens))
            best["hf+head"] = min(best["hf+head"], time.perf_counter() - start)
            start = time.perf_counter()
            store = heldout_cache(bridge, dataset, sites, Path(tmp) / f"store-{run}",
                                  args.batch_size)
            best["heldout"] = min(best["heldout"], time.perf_counter() - start)
        worst, scale, scaled = compare(store, reference, base.norm)
        threads = torch.get_num_threads()
    print(f"{len(dataset)} cities statements ({n_tokens} tokens), SmolLM2-135M {n_layers} "
          f"layers d_model {bridge.cfg.d_model}, float32, batch {args.batch_size}, "
          f"{threads} thread(s), best of {args.repeats} runs")
    print(f"{'phase':<8} {'seconds':>8} {'tokens/s':>10}")
    for phase, seconds in best.items():
        print(f"{phase:<8} {seconds:8.2f} {n_tokens / seconds:10.0f}")
    ratio = best["hf"] / best["heldout"]
    print(f"hf output_hidden_states / heldout cache (all {n_layers} layers): {ratio:.2f}  "
          f"(goal >= {GOAL:.2f}) {'PASS' if ratio >= GOAL else 'FAIL'}")
    print(f"hf+head (with the LM head's logits) / heldout: {best['hf+head'] / best['heldout']:.2f}"
          "  (for reference)")
    print(f"max |heldout - hf| over {n_layers} layers: {worst:.2e} (activations up to "
          f"{scale:.0f}); relative to each example's scale: {scaled:.1e}  (goal <= "
          f"{args.tol:g}) {'PASS' if scaled <= args.tol else 'FAIL'}")


if __name__ == "__main__":
    main()
