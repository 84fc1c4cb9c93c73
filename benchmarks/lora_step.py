"""LoRA training against a probe on SmolLM2-135M: step time, step memory, evaluation cost.

Prints (goal in brackets), all measured in one run on the ``agreement`` environment
(SmolLM2-135M-Instruct, batch 16, float32 on CPU, LoRA r=16 on every linear layer of
the blocks), with heldout's own :class:`~heldout.training.trainer.Trainer`:

  1. LoRA penalized step / LoRA plain step: gradient mode, λ=3 × a logistic probe at
     ``resid_post:12`` (hook capture in the same forward) vs. the same config with the
     probe held out (``config.control()``: no hook in the training forward). The arms
     alternate in blocks of ``--block`` steps after a warm-up, median step times [<= 1.15]
  2. LoRA step memory / full fine-tuning step memory: each arm (penalized, same
     config, ``lora_rank`` 16 vs 0) in a fresh subprocess; the judged figure is the
     peak RSS growth of the first ``--memory-steps`` steps over the loaded trainer
     (model, frozen reference, monitor, data, after ``malloc_trim``): what a step
     needs beyond the loaded model, activations, gradients, optimizer state and
     temporaries included (the second step holds all of them at once). The children
     run with ``MALLOC_MMAP_THRESHOLD_=131072`` (``--malloc fixed``, the default), so
     every tensor over 128 KiB is its own mapping, returned at free, and RSS follows
     the live tensors; glibc's default dynamic threshold (``--malloc default``) keeps
     freed tensors in its heap and adds allocator history to the figure. Also
     printed: exact tensor bytes of trainable parameters + gradients + AdamW state,
     and ru_maxrss growth (a whole-process high-water mark that also keeps the
     parent's RSS at fork: 0 when either peaked higher than the steps; the children
     run before the parent loads its trainers)                               [<= 0.5]
  3. one monitored evaluation (``Monitor.evaluate`` on the live LoRA model: greedy
     generation, probe readings, held-out checks, ``--n-eval`` prompts) in steps

The probe is fitted here in a few seconds (logistic, on the teacher-forced eval set of
seed 101; any fitted probe of the right width times the same). The plain trainer and
the memory children monitor ``--n-eval-small`` prompts (the monitor is built at load
and never runs in their steps; it only sets how much loading costs). The header gives
the load average so readers can judge the noise of a shared machine. A step takes
~10-20 s on one shared core, so the default run (~9 min) times few steps: raise
``--rounds`` on a quiet machine.
Usage: ``python benchmarks/lora_step.py [--rounds 4 --block 1 --threads 1]``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SITE = "resid_post:12"
TIME_GOAL = 1.15
MEMORY_GOAL = 0.5


def fit_probe(folder: str, out: Path, batch_size: int) -> str:
    """A logistic probe at SITE (last token), fitted on a seed no run here uses."""
    from heldout.activations import collect
    from heldout.environments.agreement import agreement_environment
    from heldout.models import load_model
    from heldout.probes.io import save_probe
    from heldout.probes.linear import LogisticProbe

    model = load_model(folder, device="cpu")
    env = agreement_environment(folder, n_eval=32, seed=101)
    fit = collect(model, env.eval, [SITE], "last", batch_size=batch_size)
    probe = LogisticProbe().fit(fit.get(SITE), fit.labels)
    path = save_probe(probe, out / "L12-last.safetensors", site=SITE, selection="last")
    del model
    gc.collect()
    return str(path)


def make_config(probe: str, out: Path, args: argparse.Namespace, lora_rank: int,
                n_eval: int) -> Any:
    from heldout.gguf import smollm2_folder
    from heldout.training.config import ProbeSpec, TrainConfig

    return TrainConfig(
        model=str(smollm2_folder()), environment="agreement", out=str(out),
        probes=(ProbeSpec(probe, role="train_against", weight=3.0, name="L12"),),
        steps=10_000, batch_size=args.batch, eval_every=10_000, checkpoint_every=0,
        n_eval=n_eval, plots=False, lr=1e-4, dtype="float32", device="cpu",
        lora_rank=lora_rank, lora_alpha=2.0 * lora_rank if lora_rank else 16.0)


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes (VmRSS, VmHWM)."""
    text = Path("/proc/self/status").read_text()
    found = re.search(rf"{field}:\s+(\d+) kB", text)
    assert found is not None, field
    return int(found.group(1)) * 1024


def _release() -> None:
    """Free what Python and glibc hold but no longer use, so RSS is what is live."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def memory_arm(args: argparse.Namespace) -> None:
    """Child process: load one arm, then measure its first steps; prints one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    from heldout.training.trainer import Trainer

    lora_rank = args.lora_rank if args.memory_arm == "lora" else 0
    out = Path(tempfile.mkdtemp(prefix=f"lora-step-mem-{args.memory_arm}-"))
    trainer = Trainer(make_config(args.probe, out, args, lora_rank, args.n_eval_small),
                      progress=False)
    _release()
    rss0 = _status("VmRSS")
    ru0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM, the peak RSS, to now
    for _ in range(args.memory_steps):
        trainer.step()
    hwm = _status("VmHWM")
    ru1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    params = trainer.params
    p_bytes = sum(p.numel() * p.element_size() for p in params)
    g_bytes = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    s_bytes = sum(v.numel() * v.element_size() for state in trainer.optimizer.state.values()
                  for v in state.values() if torch.is_tensor(v))
    print(json.dumps({"arm": args.memory_arm, "rss_loaded": rss0, "peak_growth": hwm - rss0,
                      "ru_maxrss_growth": ru1 - ru0, "param_bytes": p_bytes,
                      "grad_bytes": g_bytes, "adam_bytes": s_bytes,
                      "n_trainable": sum(p.numel() for p in params)}))


def run_memory_arm(arm: str, args: argparse.Namespace, probe: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--memory-arm", arm, "--probe", probe,
           "--threads", str(args.threads), "--batch", str(args.batch),
           "--n-eval-small", str(args.n_eval_small), "--lora-rank", str(args.lora_rank),
           "--memory-steps", str(args.memory_steps)]
    env = dict(os.environ, HELDOUT_THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads))
    if args.malloc == "fixed":
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"memory arm {arm} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def mb(n: float) -> str:
    return f"{n / 2**20:.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the arms")
    parser.add_argument("--block", type=int, default=1, help="steps per arm per round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per arm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--n-eval", type=int, default=32, help="monitor prompts (timed "
                        "evaluation)")
    parser.add_argument("--n-eval-small", type=int, default=8,
                        help="monitor prompts of the plain trainer and the memory children")
    parser.add_argument("--malloc", choices=("fixed", "default"), default="fixed",
                        help="glibc mmap threshold of the memory children")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--memory-steps", type=int, default=2)
    parser.add_argument("--memory-arm", choices=("lora", "full"), help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_arm:
        memory_arm(args)
        return
    import torch

    torch.set_num_threads(args.threads)
    os.environ["HELDOUT_THREADS"] = str(args.threads)
    from heldout.gguf import smollm2_folder
    from heldout.training.trainer import Trainer

    began = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="lora-step-"))
    folder = str(smollm2_folder())
    probe = fit_probe(folder, root / "probes", args.batch)
    mem = {arm: run_memory_arm(arm, args, probe) for arm in ("lora", "full")}
    pen_config = make_config(probe, root / "pen", args, args.lora_rank, args.n_eval)
    penalized = Trainer(pen_config, progress=False)
    plain = Trainer(pen_config.control().replace(n_eval=args.n_eval_small), progress=False,
                    reference=penalized.reference)  # frozen, never trained: shared
    lengths = [len(t.input_ids) for t in penalized.tokens]
    print(f"SmolLM2-135M-Instruct, agreement environment, batch {args.batch}, sequences "
          f"{min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}), "
          f"float32 CPU, {args.threads} thread(s), LoRA r={args.lora_rank} all linear "
          f"({sum(p.numel() for p in penalized.params) / 1e6:.2f} M trainable), "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for t in (penalized, plain):
        for _ in range(args.warmup):
            t.step()
    times: dict[str, list[float]] = {"penalized": [], "plain": []}
    for i in range(args.rounds):
        arms = (("penalized", penalized), ("plain", plain))
        for name, t in arms if i % 2 == 0 else arms[::-1]:
            for _ in range(args.block):
                start = time.perf_counter()
                t.step()
                times[name].append(time.perf_counter() - start)
    pen, base = statistics.median(times["penalized"]), statistics.median(times["plain"])
    n = len(times["plain"])
    ratio = pen / base
    print(f"LoRA penalized step {pen * 1e3:.0f} ms, LoRA plain step {base * 1e3:.0f} ms "
          f"(median of {n} each, {args.rounds} alternating blocks of {args.block})")
    print(f"1. LoRA penalized / plain step time: {ratio:.3f}   [goal <= {TIME_GOAL:.2f}] "
          f"{'PASS' if ratio <= TIME_GOAL else 'FAIL'}")

    start = time.perf_counter()
    record = penalized.evaluate()
    seconds = time.perf_counter() - start

    lo, fu = mem["lora"], mem["full"]
    for arm, m in mem.items():
        state = m["param_bytes"] + m["grad_bytes"] + m["adam_bytes"]
        print(f"{'LoRA' if arm == 'lora' else 'full':<4} step: peak RSS growth "
              f"{mb(m['peak_growth'])} over the loaded trainer ({mb(m['rss_loaded'])}); "
              f"trainable {m['n_trainable'] / 1e6:.2f} M: params + grads + AdamW state "
              f"{mb(state)} ({mb(m['param_bytes'])} + {mb(m['grad_bytes'])} + "
              f"{mb(m['adam_bytes'])}); ru_maxrss growth {mb(m['ru_maxrss_growth'])}")
    mratio = lo["peak_growth"] / fu["peak_growth"]
    sratio = (lo["param_bytes"] + lo["grad_bytes"] + lo["adam_bytes"]) / \
             (fu["param_bytes"] + fu["grad_bytes"] + fu["adam_bytes"])
    print(f"2. LoRA / full fine-tuning step memory (peak RSS growth of {args.memory_steps} "
          f"steps, fresh process each, malloc {args.malloc}): {mratio:.3f}   [goal <= {MEMORY_GOAL:.1f}] "
          f"{'PASS' if mratio <= MEMORY_GOAL else 'FAIL'}; trainable state alone: "
          f"{sratio:.4f}")
    print(f"3. one monitored evaluation ({record['n_own']} own outputs, "
          f"{record['forward_calls']['current']} current-model + "
          f"{record['forward_calls']['base']} base-model forward calls): {seconds:.1f} s "
          f"= {seconds / pen:.1f} LoRA penalized steps")
    print(f"total {time.perf_counter() - began:.0f} s, load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
