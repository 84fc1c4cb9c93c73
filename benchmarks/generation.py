"""Generation with a KV cache vs the old cache-less loop, speed and peak memory, one run.

For each model it generates ``--new-tokens`` (default 32) tokens for a batch of
``--batch`` prompts of ``--prompt-len`` tokens (random ids, seeded; equal lengths, so the
old loop runs them as one batch, its best case) with:
  (a) the old cache-less loop, re-implemented here: a full bridge forward pass over the
      whole sequence per new token, argmax of the last position;
  (b) ``heldout.generation.generate``: HF ``generate(use_cache=True)`` on the bridge's
      un-bridged twin (shared weights), greedy.
It checks that (a) and (b) give the same tokens, and prints times and the speedup
(a)/(b)   [goal >= 3x at 32 tokens].

Models: a random GPT-2 of the organism's size (4 layers, d_model 64) and a random
Llama with SmolLM2-135M's shape (30 layers, d_model 576, 9 heads, 3 KV heads, d_mlp
1536, vocab 49152), both loaded through ``heldout.models.load_model``.

Peak memory: torch's CPU allocations bypass Python's allocator, so tracemalloc cannot
see them and ``ru_maxrss`` is a process-wide high-water mark that cannot be reset. A
background thread instead reads the resident set size from ``/proc/self/statm`` every
2 ms while the measured call runs; the reported peak is the highest sample minus the
RSS just before the call, after ``malloc_trim(0)`` has handed freed heap back to the OS
(so memory freed by an earlier arm is not counted as free headroom). It is compared
with the same measurement for ONE bridge forward pass over the prompts and over the
finished sequences (prompt + new tokens), i.e. what the model itself needs for that
batch. Resolution is a page, sampling may miss a spike shorter than 2 ms.

Usage: ``python benchmarks/generation.py [--batch 8] [--prompt-len 16] [--new-tokens 32]
[--threads 1] [--skip-llama]``.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * _PAGE


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, seconds, peak RSS increase in MiB) of ``fn()``."""
    _trim()
    base = _rss()
    peak = base
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        result = fn()
    finally:
        seconds = time.perf_counter() - start
        stop.set()
        thread.join()
    peak = max(peak, _rss())
    return result, seconds, (peak - base) / 2**20


def cacheless(bridge: Any, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    """The old loop: prompts grouped by length, a full forward pass per new token."""
    import torch

    out: list[list[int]] = [[] for _ in prompts]
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    with torch.inference_mode():
        for length, rows in sorted(by_len.items()):
            seq = torch.tensor([prompts[i] for i in rows], dtype=torch.long)
            for _ in range(new_tokens):
                nxt = bridge(seq, return_type="logits")[:, -1].argmax(-1)
                seq = torch.cat([seq, nxt[:, None]], dim=1)
            for i, row in zip(rows, seq[:, length:].tolist()):
                out[i] = row
    return out


def forward(bridge: Any, ids: Any) -> None:
    import torch

    with torch.inference_mode():
        bridge(ids, return_type="logits")


def run(name: str, bridge: Any, args: argparse.Namespace, repeats: int) -> None:
    import torch

    from heldout.generation import generate

    vocab = int(bridge.cfg.d_vocab)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(8, vocab, (args.batch, args.prompt_len), generator=gen)
    prompts = ids.tolist()
    n = args.new_tokens
    n_params = sum(p.numel() for p in bridge.parameters()) / 1e6
    print(f"\n== {name}: {n_params:.1f}M parameters, batch {args.batch} x {args.prompt_len} "
          f"prompt tokens, {n} new tokens, {torch.get_num_threads()} thread(s)")

    def cached() -> list[list[int]]:
        return [r[0] for r in generate(bridge, prompts, max_new_tokens=n,
                                       batch_size=args.batch)]

    bridge.eval()
    generate(bridge, prompts, max_new_tokens=2)  # warm-up; builds the twin once
    cacheless(bridge, prompts, 2)
    timings: dict[str, list[float]] = {"cacheless": [], "cached": []}
    peaks: dict[str, float] = {}
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for arm, fn in (("cacheless", lambda: cacheless(bridge, prompts, n)), ("cached", cached)):
            results[arm], seconds, peak = measure(fn)
            timings[arm].append(seconds)
            peaks[arm] = max(peaks.get(arm, 0.0), peak)
    _, _, fwd_prompt = measure(lambda: forward(bridge, ids))
    full = torch.cat([ids, torch.tensor(results["cached"])], dim=1)
    _, _, fwd_full = measure(lambda: forward(bridge, full))
    same = results["cacheless"] == results["cached"]
    slow, fast = statistics.median(timings["cacheless"]), statistics.median(timings["cached"])
    print(f"(a) cache-less loop   {slow:8.3f} s   peak +{peaks['cacheless']:7.1f} MiB")
    print(f"(b) generate (cache)  {fast:8.3f} s   peak +{peaks['cached']:7.1f} MiB")
    print(f"    one forward, prompts ({args.batch}x{args.prompt_len})          "
          f"peak +{fwd_prompt:7.1f} MiB")
    print(f"    one forward, finished ({args.batch}x{args.prompt_len + n})          "
          f"peak +{fwd_full:7.1f} MiB")
    print(f"speedup (a)/(b): {slow / fast:.1f}x   [goal >= 3x]   "
          f"same tokens: {same}   (median of {repeats})")


def organism_sized_gpt2(root: Path) -> Any:
    """A bridge over a random GPT-2 of the organism's size (4 layers, d_model 64)."""
    from heldout.models import load_model
    from heldout.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(root / "gpt2", arch="gpt2", n_layers=4, d_model=64,
                                   n_ctx=128, seed=0)
    return load_model(folder, device="cpu")


def smollm2_shaped_llama(root: Path) -> Any:
    """A bridge over a random Llama with SmolLM2-135M's shape and a word tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from heldout.models import load_model
    from heldout.tiny import WORDS, build_word_tokenizer

    config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                         max_position_embeddings=2048, rope_theta=100000.0,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    hf = LlamaForCausalLM(config).eval()
    build_word_tokenizer(WORDS).save_pretrained(root / "tokenizer")  # TL reloads it by path
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    return load_model(hf, tokenizer=tokenizer, device="cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-llama", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    root = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    run("random GPT-2, organism size (4 layers, d_model 64)", organism_sized_gpt2(root),
        args, repeats=5)
    if args.skip_llama:
        return
    run("random Llama, SmolLM2-135M shape", smollm2_shaped_llama(root), args, repeats=1)

if __name__ == "__main__":
    main()
