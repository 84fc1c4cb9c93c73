"""heldout's held-out monitor inside a ``transformers`` / TRL trainer.

:class:`HeldoutCallback` runs the same battery as heldout's own trainer
(:class:`~heldout.training.monitor.Monitor`: behaviour from the labeler, every probe and
text monitor on the model's own outputs and on the fixed, forced and control sets,
retrained probes, the cross-model check, KL, PCA) on the live policy every
``eval_every`` optimizer steps, and writes the same run folder records:
``evals.jsonl`` (one :class:`~heldout.analysis.records.EvalRecord` per evaluation),
``steps.jsonl`` (TRL's logged metrics), ``config.json`` (what was monitored) and, at
the end, ``plots/``. So :func:`heldout.analysis.verdict` and ``heldout report`` read a
TRL run unchanged.

Reading the policy: ``reader="hooks"`` (default) reads it through PyTorch hooks on its
decoder blocks (:class:`~heldout.training.hf_hooks.HFHookedModel`), with no copy and
adapters applied; ``reader="bridge"`` builds a TransformerBridge over a merged copy at
each evaluation (exact TransformerLens hooks, more memory and time). Both give the same
activations (``tests/training/test_trl.py`` checks it).

Only the main process (``state.is_world_process_zero``) evaluates and writes; under
``accelerate launch`` the other ranks go on and wait at the next collective.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from heldout.environments.base import Environment
from heldout.errors import ConfigError, DataError
from heldout.monitors.spec import TextMonitorSpec
from heldout.training.config import ProbeSpec
from heldout.training.hf_hooks import as_reader, frozen_copy
from heldout.training.monitor import EvalSets, Monitor, summary_line
from heldout.training.penalty import bind_probe
from heldout.training.proxies import bind_text_monitor
from heldout.training.records import kept_rng, read_jsonl, truncate_logs
from heldout.training.trl_rewards import same_tokenizer

READERS = ("hooks", "bridge")


class HeldoutCallback(TrainerCallback):  # type: ignore[misc]
    """The held-out monitor as a ``TrainerCallback`` (see the module docstring).

    out : the run folder (created; refused if it already holds evaluations).
    base_model : the starting model (an HF model, copied now and frozen: build the
        callback *before* the trainer, which may inject LoRA layers into the object it is
        given), or a TransformerBridge over it.
    tokenizer : the model's tokenizer (a bridge carries its own).
    environment : gives the evaluation, control and forced sets and the labeler.
    probes, monitors : activation probes and text monitors, each with its role
        (``train_against`` for the ones the rewards use, ``held_out`` for the rest).
    eval_every : evaluate every N optimizer steps (and at steps 0 and the last).
    n_eval : at most this many examples from each evaluation set.
    frozen_detector : names of probes trained against through a frozen-detector reward
        (``probe_reward(..., detector="frozen")``): the verdict then judges them by the
        base model reading the policy's text, the signal the policy was trained against.
    resume : continue a run folder when the trainer resumes from a checkpoint
        (``trainer.train(resume_from_checkpoint=...)``): records past the checkpoint's
        step are dropped, so the logs read as one uninterrupted run.

    DataError before any work when the environment has no evaluation sets or no
    labeler; ConfigError for a bad reader, an occupied folder, or (at train start) a
    trainer tokenizer that is not the base model's.
    """

    def __init__(self, out: str | Path, *, base_model: Any, environment: Environment | None,
                 tokenizer: Any = None, probes: Sequence[ProbeSpec] = (),
                 monitors: Sequence[TextMonitorSpec] = (), eval_every: int = 10,
                 fpr: float = 0.01, n_eval: int = 200, max_new_tokens: int = 8,
                 reader: str = "hooks", batch_size: int = 256,
                 loaded_probes: dict[str, Any] | None = None, plots: bool = True,
                 progress: bool = True, seed: int = 0, resume: bool = False,
                 frozen_detector: Sequence[str] = ()) -> None:
        if environment is None or environment.eval is None or len(environment.eval) == 0:
            raise DataError("the held-out callback was given no evaluation sets",
                            fix="pass environment= with eval, control (and forced) sets")
        if environment.labeler is None:
            raise DataError(f"environment {environment.name!r} has no labeler: the callback "
                            "could not say whether the policy misbehaves",
                            fix="give the environment a labeler (misbehavior from text)")
        if reader not in READERS:
            raise ConfigError(f"reader={reader!r} is not one of {', '.join(READERS)}",
                              fix="'hooks' reads the policy through PyTorch hooks, 'bridge' "
                                  "through a TransformerBridge over a merged copy")
        if not isinstance(eval_every, int) or eval_every < 1:
            raise ConfigError(f"eval_every must be an integer >= 1, got {eval_every!r}",
                              fix="evaluate e.g. every 10 steps")
        if not probes and not monitors:
            raise ConfigError("the callback was given no probes and no text monitors",
                              fix="pass probes=[ProbeSpec(...)] and/or monitors=[...]")
        against = {s.label for s in probes if s.role == "train_against"}
        stray = sorted(set(frozen_detector) - against)
        if stray:
            raise ConfigError(f"frozen_detector names {', '.join(stray)}, which are not "
                              "probes trained against", fix="name probes with "
                              f"role='train_against': {', '.join(sorted(against)) or 'none'}")
        self.out = Path(out)
        evals = self.out / "evals.jsonl"
        if evals.is_file() and read_jsonl(evals) and not resume:
            raise ConfigError(f"{self.out} already holds a monitored run",
                              fix="choose another output folder, or pass resume=True when "
                                  "the trainer resumes from one of its checkpoints")
        if resume and not (evals.is_file() and read_jsonl(evals)):
            raise ConfigError(f"nothing to resume: {self.out} holds no evaluations",
                              fix="start the run without resume=True")
        self.resume = resume
        sets = EvalSets.first(environment, n_eval)
        is_bridge = getattr(base_model, "original_model", None) is not None
        self.tokenizer = getattr(base_model, "tokenizer", None) if tokenizer is None \
            else tokenizer
        base = as_reader(base_model if is_bridge else frozen_copy(base_model), self.tokenizer)
        bound = [bind_probe(s, base, (loaded_probes or {}).get(s.label)) for s in probes]
        texts = [bind_text_monitor(s, base_model=base, split_cot=environment.split_cot)
                 for s in monitors]
        self.monitor = Monitor(base, bound, sets, texts=texts, labeler=environment.labeler,
                               fpr=fpr, batch_size=batch_size,
                               max_new_tokens=max_new_tokens, seed=seed,
                               read_on_base=frozen_detector)
        self.eval_every = eval_every
        self.reader = reader
        self.plots = plots
        self.progress = progress
        self.description = {
            "engine": "trl", "environment": environment.name, "reader": reader,
            "eval_every": eval_every, "fpr": fpr, "n_eval": n_eval,
            "max_new_tokens": max_new_tokens,
            "probes": [s.to_dict() for s in probes],
            "frozen_detector": list(frozen_detector),
            "monitors": [s.to_dict() for s in monitors]}
        self.last_step: int | None = None

    # -- reading the policy ---------------------------------------------------------
    def policy_reader(self, model: Any) -> Any:
        """The policy as the monitor reads it (``reader``)."""
        if self.reader == "hooks":
            return as_reader(model, self.tokenizer)
        from heldout.models import load_model

        copy = frozen_copy(model)
        device = str(next(copy.parameters()).device)
        return load_model(copy, tokenizer=self.tokenizer, device=device)

    def evaluate(self, model: Any, step: int) -> dict[str, Any]:
        """Evaluate ``model`` now and append the record to ``evals.jsonl``. Every RNG is
        left as it was, so watching a run does not change its samples."""
        device = next(model.parameters()).device
        if next(self.monitor.base.parameters()).device != device:
            # the trainer moved the policy (to its GPU) after the base was copied
            self.monitor.base.to(device)
        with kept_rng([device] if device.type == "cuda" else []):
            record = self.monitor.evaluate(self.policy_reader(model), step)
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "evals.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record.to_dict()) + "\n")
        self.last_step = step
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(summary_line(record, run=self.out.name))
        return record.to_dict()

    # -- trainer events -------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       processing_class: Any = None, **kwargs: Any) -> None:
        zero3 = getattr(args, "hf_deepspeed_config", None)
        if getattr(args, "fsdp", None) or (zero3 is not None and zero3.is_zero3()):
            raise ConfigError("HeldoutCallback cannot read a sharded policy (FSDP or "
                              "DeepSpeed ZeRO-3): each rank holds a shard of the weights",
                              fix="train with DDP (accelerate launch without FSDP) or "
                                  "ZeRO-1/2, or evaluate saved checkpoints separately")
        if processing_class is not None and not same_tokenizer(processing_class,
                                                                self.tokenizer):
            raise ConfigError("the trainer's tokenizer is not the base model's tokenizer, "
                              "which the held-out probes and the labeler's prompts use",
                              fix="give the trainer and the callback the same tokenizer")
        if not state.is_world_process_zero:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        described = dict(self.description, seed=int(args.seed),
                         learning_rate=float(args.learning_rate),
                         max_steps=int(state.max_steps))
        (self.out / "config.json").write_text(json.dumps(described, indent=2) + "\n",
                                              encoding="utf-8")
        if self.resume:
            truncate_logs(self.out, int(state.global_step))
            evaluated = [r["step"] for r in read_jsonl(self.out / "evals.jsonl")]
            self.last_step = evaluated[-1] if evaluated else None
        if self.last_step is None:
            (self.out / "steps.jsonl").touch()
            self.evaluate(model, int(state.global_step))

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None,
                    **kwargs: Any) -> None:
        if state.is_world_process_zero and state.global_step % self.eval_every == 0:
            self.evaluate(model, int(state.global_step))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        metrics = {k: float(v) for k, v in logs.items()
                   if k != "loss" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        # GRPO's loss hovers near 0 whatever happens; the reward is the curve to read
        shown = {k: metrics[k] for k in ("reward", "kl") if k in metrics}
        line = {"step": int(state.global_step), "loss": float(logs["loss"]), "losses": shown,
                "metrics": metrics}
        with open(self.out / "steps.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None,
                     **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        if self.last_step != state.global_step:
            self.evaluate(model, int(state.global_step))
        if self.plots:
            from heldout.analysis.curves import plot_run

            plot_run(self.out)


__all__ = ["READERS", "HeldoutCallback"]
