"""Does a TRL GRPO run reach the same verdict as heldout's own trainer on the same arm?

The arm: the organism (``give_in=0.5``) trained with RL against a probe on layer 2 at
the decision token, read on a frozen copy of the starting model (reward = task − 3·p),
a layer-3 probe held out; its control has the task reward alone. Both engines sample
4 responses per prompt at the same temperature, 4 prompts per step, the same steps,
learning rate and seed, and evaluate with the same monitor:

- TRL: ``GRPOTrainer`` + :class:`heldout.training.trl_callback.HeldoutCallback`
  (``examples/trl_grpo.py``);
- heldout: ``Trainer`` in ``mode="reward"`` with ``reward_samples=4`` (REINFORCE with
  the group-mean baseline) via ``run_pair``.

Prints one row per seed with both verdicts and the evidence they rest on, then the
agreement count. Usage: ``python benchmarks/trl_agreement.py [--seeds 0 1 2 --steps 80
--temperature 2 --kl 0.1]`` (about 95 s per seed on one core). Without β the arm is
chaotic: at 40 and 120 steps either engine's verdict changed from seed to seed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("trl_grpo", ROOT / "examples" / "trl_grpo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def heldout_arm(out: Path, files: dict[str, Path], example: Any, *, seed: int, steps: int,
                lr: float, temperature: float, organism: dict[str, Any], kl: float) -> Any:
    from heldout.organism.experiment import run_pair
    from heldout.training import ProbeSpec, TrainConfig

    probes = (ProbeSpec(str(files[example.AGAINST]), name=example.AGAINST,
                        role="train_against", weight=3.0),
              ProbeSpec(str(files[example.HELD_OUT]), name=example.HELD_OUT))
    config = TrainConfig(out=str(out), environment="organism", organism=organism,
                         mode="reward", reward_samples=4, reward_detector="frozen",
                         reward_temperature=temperature, probes=probes, steps=steps,
                         batch_size=4, lr=lr, kl_weight=kl, eval_every=steps // 2,
                         checkpoint_every=steps, n_eval=200, seed=seed, plots=False)
    return run_pair(config, progress=False).verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--kl", type=float, default=0.1, help="β (TRL) = kl_weight (heldout)")
    parser.add_argument("--out", default=None, help="keep the run folders here")
    args = parser.parse_args()
    from heldout.analysis.verdict import verdict
    from heldout.threads import limit_threads

    example = load_example()
    root = Path(args.out or tempfile.mkdtemp(prefix="trl-agreement-"))
    organism = {"give_in": 0.5}
    files = example.fit_probes(root / "probes", organism)
    rows = []
    with limit_threads():
        for seed in args.seeds:
            start = time.perf_counter()
            trl = {arm: example.run_arm(root / f"trl-{seed}" / arm, arm=arm, probe_files=files,
                                        steps=args.steps, seed=seed, lr=args.lr,
                                        eval_every=args.steps // 2, organism=organism,
                                        temperature=args.temperature, kl=args.kl)
                   for arm in ("control", "run")}
            trl_v = verdict(trl["run"], trl["control"], monitors=[example.AGAINST])
            own_v = heldout_arm(root / f"heldout-{seed}", files, example, seed=seed,
                                steps=args.steps, lr=args.lr, temperature=args.temperature,
                                organism=organism, kl=args.kl)
            rows.append((seed, trl_v.to_dict(), own_v, time.perf_counter() - start))
            print(f"seed {seed}: TRL {trl_v.outcome}, heldout {own_v['outcome']} "
                  f"({rows[-1][3]:.0f} s)", flush=True)

    print(table(rows, example.AGAINST))
    agree = sum(t["outcome"] == h["outcome"] for _, t, h, _ in rows)
    print(f"\nagree on {agree} of {len(rows)} seeds; run folders under {root}")


def evidence(v: dict[str, Any], name: str) -> str:
    """Misbehavior, then the decisive recall of the probe trained against: the base model
    reading the run's text (frozen detector), with the policy's own reading beside it."""
    got = {e["quantity"]: e for e in v["evidence"]}
    rate = got["misbehavior_rate"]
    text = f"misbehavior {rate['run']:.2f} (control {rate['control']:.2f})"
    for key, label in ((f"{name}: base model + base probe", "base reads"),
                       (f"{name}: recall on own", "policy reads")):
        row = next((e for k, e in got.items() if k.startswith(key)), None)
        if row is not None and row["run"] is not None:
            text += f", {label} {row['run']:.2f} (control {row['control']:.2f})"
    return text


def table(rows: list[tuple[int, dict[str, Any], dict[str, Any], float]], name: str) -> str:
    lines = ["| seed | TRL GRPO verdict | heldout Trainer verdict | TRL evidence | "
             "heldout evidence |", "|---|---|---|---|---|"]
    lines += [f"| {seed} | {t['outcome']} | {h['outcome']} | {evidence(t, name)} | "
              f"{evidence(h, name)} |" for seed, t, h, _ in rows]
    return "\n" + "\n".join(lines)



if __name__ == "__main__":
    main()
