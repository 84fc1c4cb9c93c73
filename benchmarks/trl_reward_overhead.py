"""Cost of a probe reward in a TRL GRPO step, against the task reward alone, in one run.

Prints the median GRPO step time with the organism's task reward alone and with
``task − λ·p`` where p is a probe on a frozen copy of the starting model (one extra
forward pass of the frozen model over the completions), and their ratio
[goal <= 1.25]. The arms alternate in blocks of ``--steps`` optimizer steps, each a
fresh ``GRPOTrainer`` from the same starting weights, so a busy neighbour slows both.

Usage: ``python benchmarks/trl_reward_overhead.py [--steps 10 --blocks 3]``.
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


def step_timer() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self._start = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.times.append(time.perf_counter() - self._start)

    return StepTimer()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    parser.add_argument("--blocks", type=int, default=3, help="blocks per arm")
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from heldout.organism.environment import organism_environment
    from heldout.organism.experiment import fit_organism_probes
    from heldout.threads import limit_threads
    from heldout.training import ProbeSpec
    from heldout.training.trl_rewards import (
        grpo_dataset,
        probe_reward,
        task_reward_function,
    )

    tmp = Path(tempfile.mkdtemp(prefix="trl-overhead-"))
    env = organism_environment({"give_in": 0.5})
    files = fit_organism_probes(tmp, ["resid_post:2"], selections=("token:5",),
                                organism={"give_in": 0.5})
    spec = ProbeSpec(str(files["resid_post:2/token:5"]), name="L2", role="train_against",
                     weight=3.0)
    tok = AutoTokenizer.from_pretrained(env.model)
    data = grpo_dataset(env)
    times: dict[str, list[float]] = {"task reward": [], "task - 3 x probe (frozen)": []}
    with limit_threads():
        for block in range(args.blocks):
            for arm in times:
                model = AutoModelForCausalLM.from_pretrained(env.model)
                reward = task_reward_function(env) if arm == "task reward" else \
                    probe_reward(spec, model, environment=env, tokenizer=tok)
                timer = step_timer()
                config = GRPOConfig(output_dir=str(tmp / "trl"), max_steps=args.steps,
                                    seed=block, per_device_train_batch_size=16,
                                    num_generations=4, max_completion_length=12,
                                    temperature=2.5, learning_rate=1e-3, beta=0.0,
                                    logging_steps=1, save_strategy="no", report_to="none",
                                    disable_tqdm=True, use_cpu=True, bf16=False)
                trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config,
                                      train_dataset=data, processing_class=tok,
                                      callbacks=[timer])
                trainer.remove_callback(PrinterCallback)
                trainer.train()
                times[arm] += timer.times[1:]  # the first step of a trainer warms up
    med = {arm: statistics.median(t) for arm, t in times.items()}
    for arm, t in times.items():
        print(f"{arm:<28} median step {med[arm] * 1000:7.1f} ms over {len(t)} steps")
    base, probe = med.values()
    print(f"probe reward / task reward = {probe / base:.3f}   [goal <= 1.25]")


if __name__ == "__main__":
    main()
