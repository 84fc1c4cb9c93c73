"""Fine-tuning against proxies, in any environment, with a held-out monitor.

The run's environment (:mod:`heldout.environments`) gives the data, the labeler and
the task reward; its proxies are activation probes and text monitors, each trained
against or held out. In the ``gradient`` channel the loss is task loss + Σ λᵢ ·
penalty(probeᵢ) (+ β · KL to the start): each penalty is computed from activations
captured by hooks in the same forward pass that gives the task loss
(``run_with_hooks``); probes are constants, so the gradient reaches the model through
its activations. The other channels (reward, screening, intervention) are step plugins
(:mod:`heldout.training.channels`) that see a typed :class:`StepContext`. A plain torch
loop: AdamW, gradient clipping, warm-up and decay (``torch.optim.lr_scheduler``),
gradient accumulation. Every step returns a :class:`StepResult`.

Works from a notebook::

    trainer = Trainer(TrainConfig(out="runs/a", probes=(ProbeSpec("p.safetensors",
                      role="train_against", weight=5.0),)))
    result = trainer.train()

The run folder holds ``config.json``, ``steps.jsonl`` (one record per step),
``evals.jsonl`` (one record per monitored evaluation), ``checkpoints/``, ``probes/``
(probes retrained on the final model), ``final/`` (the final model as an HF checkpoint
folder; ``model.safetensors`` under bridge names for a native TransformerLens model),
``plots/`` and, with ``tensorboard=True``, ``tensorboard/`` (the same scalars as
TensorBoard events, :mod:`heldout.training.tensorboard`). ``Trainer(config,
resume=True)`` continues from the newest checkpoint and produces the same records as an
uninterrupted run.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from heldout.activations.cache import pad_batch
from heldout.analysis.records import read_records
from heldout.data import tokenize_dataset
from heldout.environments.base import Environment, Labeler
from heldout.environments.resolve import model_source, resolve_environment
from heldout.errors import ConfigError, TrainingError
from heldout.training import checkpoint as ckpt
from heldout.training.channels import make_step_loss
from heldout.training.config import TrainConfig
from heldout.training.lora import adapter_parameters, load_lora_model, save_adapter
from heldout.training.lora import describe as describe_trainable
from heldout.training.monitor import EvalSets, Monitor, summary_line
from heldout.training.penalty import BoundProbe, bind_probe, capture
from heldout.training.proxies import BoundText, bind_text_monitor
from heldout.training.records import (  # re-exported: trainer is where users look
    RunResult,
    StepResult,
    clone_bridge,
    kept_rng,
    read_jsonl,
    truncate_logs,
)
from heldout.training.step import (  # re-exported too
    StepContext,
    StepLoss,
    TaskBatch,
    TaskLoss,
    sft_loss,
    token_kl,
)
from heldout.training.tensorboard import TensorBoardLog


def lr_factor(config: TrainConfig, step: int) -> float:
    """The learning rate at ``step`` as a fraction of ``config.lr`` (warm-up, then the
    schedule); a ``LambdaLR`` multiplier."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    frac = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.schedule == "linear":
        return max(0.0, 1.0 - frac)
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
    return 1.0


class Trainer:
    """Fine-tuning against proxies with a held-out monitor (see the module docstring).

    config : the run's :class:`TrainConfig`.
    model, reference : TransformerBridges; default loaded from the config's model (or
        the environment's default model). The reference (frozen copy of the starting
        model) serves the KL term and the monitor's base measurements.
    environment : default resolved from ``config.environment``
        (:func:`heldout.environments.resolve_environment`).
    labeler : replaces the environment's labeler.
    task_loss : default :func:`sft_loss` (see :data:`TaskLoss`).
    probes : already-loaded probe objects by ProbeSpec name (else read from the paths).
    resume : continue from the newest checkpoint in ``config.out``.
    step_loss : a custom channel (a :class:`StepLoss`); default the config's ``mode``.

    Every input is checked before the first step: ConfigError, ProbeError, DataError,
    TrainingError (a resume folder written by another config).
    """

    def __init__(self, config: TrainConfig, *, model: Any = None, reference: Any = None,
                 environment: Environment | None = None, labeler: Labeler | None = None,
                 task_loss: TaskLoss | None = None, probes: dict[str, Any] | None = None,
                 resume: bool = False, progress: bool = True,
                 step_loss: StepLoss | None = None) -> None:
        from heldout.models import load_model

        self.config = config
        self.out = Path(config.out)
        self.progress = progress
        self.task_loss = task_loss or sft_loss
        # checks the package before anything is loaded or written
        self.tensorboard = TensorBoardLog(self.out) if config.tensorboard else None
        existing = ckpt.latest_checkpoint(self.out)
        if resume:
            if existing is None:
                raise TrainingError(f"nothing to resume: {self.out} has no checkpoint",
                                    fix="start the run without --resume")
            saved = json.loads((existing / "state.json").read_text(encoding="utf-8"))
            if saved.get("config_fingerprint") != config.fingerprint():
                raise ConfigError(f"the run folder {self.out} was written by a different "
                                  "config", fix="resume with the config saved in its "
                                  "config.json, or start a new run in another folder")
        elif existing is not None:
            raise ConfigError(f"{self.out} already holds a run (checkpoint {existing.name})",
                              fix="pass resume=True (--resume) to continue it, or choose "
                                  "another output folder")
        env = environment if environment is not None else resolve_environment(config)
        if labeler is not None:
            env = replace(env, labeler=labeler)
            env.check()
        self.environment = env
        step_loss = step_loss if step_loss is not None else make_step_loss(config, env)
        sets = EvalSets.first(env, config.n_eval)
        source = model_source(config, env) if model is None else None
        device = self._device(config, model)
        self.lora: TrainConfig | None = config if config.lora_rank else None
        if self.lora is not None:
            self.model = load_lora_model(source, config, device=device, dtype=config.dtype)
        else:
            self.model = model if model is not None else load_model(source, device=device,
                                                                      dtype=config.dtype)
        if reference is None:
            reference = load_model(source, device=device, dtype=config.dtype) \
                if model is None else clone_bridge(self.model)
        self.reference = reference
        for p in self.reference.parameters():
            p.requires_grad_(False)
        self.reference.eval()
        self.probes: list[BoundProbe] = [
            bind_probe(spec, self.model, (probes or {}).get(spec.label))
            for spec in config.probes]
        self.texts: list[BoundText] = [
            bind_text_monitor(spec, base_model=self.reference, split_cot=env.split_cot)
            for spec in config.monitors]
        self.against = [p for p in self.probes if p.spec.role == "train_against"]
        self.texts_against = [t for t in self.texts if t.spec.role == "train_against"]
        self.params = self._trainable()
        if progress:
            from tqdm.auto import tqdm

            tqdm.write(describe_trainable(config, self.model))
        tok = self.model.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.examples = tuple(env.train)
        self.tokens = tokenize_dataset(env.train, tok, max_length=int(self.model.cfg.n_ctx))
        self.device = next(self.model.parameters()).device
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step_count = 0
        self.labeler = env.labeler
        self.step_loss = step_loss
        # a frozen-detector channel trains against the base model reading the text
        frozen = config.mode != "gradient" and config.reward_detector == "frozen"
        self.monitor = Monitor(self.reference, self.probes, sets, texts=self.texts,
                               labeler=env.labeler, fpr=config.fpr,
                               max_new_tokens=config.max_new_tokens, seed=config.seed,
                               read_on_base=[p.name for p in self.against] if frozen else ())
        self.context = StepContext(
            config=config, model=self.model, forward=self.forward, reference=self.reference,
            tokenizer=tok, pad_id=self.pad_id, device=self.device, examples=self.examples,
            tokens=tuple(self.tokens), probes=tuple(self.against),
            texts=tuple(self.texts_against), thresholds=dict(self.monitor.base_thresholds),
            task_loss=self.task_loss, params=tuple(self.params))
        if config.mode == "screening":
            self._check_screening()
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            assert existing is not None
            self._restore(existing)
        else:
            torch.manual_seed(config.seed)
            random.seed(config.seed)
            np.random.seed(config.seed)
            config.save(self.out / "config.json")
            for name in ("steps.jsonl", "evals.jsonl"):
                (self.out / name).write_text("", encoding="utf-8")
        self.scheduler = self._scheduler()

    def _check_screening(self) -> None:
        """Refuse a screening run whose text monitors flag every training target and
        every enumerated candidate: nothing would be left to train on."""
        from heldout.training.reward import screening_survivors

        if not self.texts_against:
            return
        env = self.environment
        examples = list(self.examples[:64])
        responses = [e.response for e in examples]
        if env.candidates is not None:
            pairs = [(e, c) for e in examples for c in (env.candidates(e) or ())]
            examples += [e for e, _ in pairs]
            responses += [c for _, c in pairs]
        if screening_survivors(self.texts_against, examples, responses,
                               self.monitor.base_thresholds) == 0:
            raise ConfigError(
                f"screening with {', '.join(t.name for t in self.texts_against)} would drop "
                f"every sample: it flags all {len(responses)} training targets and candidate "
                "responses checked, so nothing is left to train on",
                fix="check the monitor's threshold on the control set (a rule that matches "
                    "everything?), or use mode='reward' to penalize instead of drop")

    def _scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        """Warm-up and decay through ``torch.optim.lr_scheduler``; after a resume it
        continues at the restored step."""
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", self.config.lr)
        return torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(self.config, step),
            last_epoch=self.step_count - 1)

    # -- setup --------------------------------------------------------------------
    @staticmethod
    def _device(config: TrainConfig, model: Any) -> str | None:
        """The device to load on (None: CUDA when available); refuses what cannot be."""
        if config.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device='cuda', but torch sees no CUDA device",
                              fix="use device='cpu' or 'auto', or run on a GPU machine")
        if config.lora_rank and model is not None:
            raise ConfigError("LoRA (lora_rank > 0) injects adapters while loading the "
                              "model, but an already-loaded model was passed",
                              fix="give the checkpoint folder as config.model and no model=, "
                                  "or set lora_rank=0")
        return None if config.device == "auto" else config.device

    def _trainable(self) -> list[torch.nn.Parameter]:
        k = self.config.train_from_layer
        everything = list(self.model.parameters())
        if self.lora is not None:
            adapters = {id(p) for p in adapter_parameters(self.model).values()}
            chosen = [p for p in everything if id(p) in adapters]
        elif k is None:
            chosen = everything
        else:
            n_layers = int(self.model.cfg.n_layers)
            if k >= n_layers:
                raise ConfigError(f"train_from_layer={k}, but the model has {n_layers} "
                                  f"blocks (0-{n_layers - 1})",
                                  fix=f"pick a block between 0 and {n_layers - 1}")
            ids = {id(p) for i in range(k, n_layers) for p in self.model.blocks[i].parameters()}
            chosen = [p for p in everything if id(p) in ids]
        keep = {id(p) for p in chosen}
        for p in everything:
            p.requires_grad_(id(p) in keep)
        return chosen

    def _restore(self, folder: Path) -> None:
        state = ckpt.load_checkpoint(folder)
        ckpt.load_model_weights(self.model, state.model, names=set(self.saved_parameters()))
        self.optimizer.load_state_dict(state.optimizer)
        ckpt.restore_rng(state.rng_tensors, state.state["rng"], self.generator)
        self.step_count = state.step
        truncate_logs(self.out, state.step)

    # -- one step -------------------------------------------------------------------
    def forward(self, ids: Tensor, attention: Tensor,
                hooks: list[tuple[Any, Callable[..., Any]]] | None = None) -> Tensor:
        """Logits of the trained model (in the autograd graph), with forward ``hooks``.
        Every training forward goes through here (the DDP trainer routes it through
        its DistributedDataParallel wrapper)."""
        if hooks:
            return self.model.run_with_hooks(  # type: ignore[no-any-return]
                ids, fwd_hooks=hooks, attention_mask=attention)
        return self.model(ids, attention_mask=attention)  # type: ignore[no-any-return]

    def draw_rows(self) -> list[int]:
        """Training rows of one micro-batch (from the run's data-order generator)."""
        return torch.randint(0, len(self.tokens), (self.config.batch_size,),  # type: ignore[no-any-return]
                             generator=self.generator).tolist()

    def step(self) -> StepResult:
        """One optimizer step (``grad_accum`` micro-batches). TrainingError on a
        non-finite loss or gradient, before the weights change."""
        cfg = self.config
        start = time.perf_counter()
        self.model.train(cfg.dropout)
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        metrics: dict[str, float] = {}
        total_sum = 0.0
        for _ in range(cfg.grad_accum):
            rows = self.draw_rows()
            if self.step_loss is not None:
                out = self.step_loss(self.context, rows)
                total, terms = out.total, out.terms
                for k, v in out.metrics.items():
                    metrics[k] = metrics.get(k, 0.0) + float(v) / cfg.grad_accum
            else:
                total, terms = self._gradient_loss(rows, metrics)
            if not torch.isfinite(total):
                shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
                raise TrainingError(f"the loss is {float(total.detach())} at step "
                                    f"{self.step_count + 1} ({shown})",
                                    fix="lower the learning rate or the penalty weights, "
                                        "then resume from the last good checkpoint")
            (total / cfg.grad_accum).backward()  # type: ignore[no-untyped-call]
            total_sum += float(total.detach()) / cfg.grad_accum
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / cfg.grad_accum
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        if not math.isfinite(grad_norm):
            raise TrainingError(f"the gradient norm is {grad_norm} at step "
                                f"{self.step_count + 1}",
                                fix="lower the learning rate or the penalty weights, then "
                                    "resume from the last good checkpoint")
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.optimizer.step()
        self.scheduler.step()
        self.step_count += 1
        metrics.update(lr=lr, grad_norm=grad_norm, seconds=time.perf_counter() - start)
        return StepResult(step=self.step_count, loss=total_sum, losses=sums, metrics=metrics)

    def _gradient_loss(self, rows: list[int], metrics: dict[str, float]
                       ) -> tuple[Tensor, dict[str, Tensor]]:
        """Gradient mode: task loss + Σ λ·penalty (through the probes) + β·KL."""
        cfg = self.config
        ids, attention, response = pad_batch([self.tokens[r] for r in rows], self.pad_id,
                                             self.device)
        hooks, captured = capture([p.hook_name for p in self.against])
        logits = self.forward(ids, attention, hooks)
        terms = {"task": self.task_loss(TaskBatch(logits, ids, attention, response,
                                                  tuple(self.examples[r] for r in rows)))}
        total = terms["task"]
        for p in self.against:
            value, mean_p = p.penalty(captured[p.hook_name], response)
            terms[f"penalty/{p.name}"] = value
            metrics[f"prob/{p.name}"] = metrics.get(f"prob/{p.name}", 0.0) + \
                float(mean_p) / cfg.grad_accum
            total = total + p.spec.weight * value
        if cfg.kl_weight > 0:
            terms["kl"] = token_kl(self.context, logits, ids, attention, response)
            total = total + cfg.kl_weight * terms["kl"]
        return total, terms

    # -- monitor, checkpoints, loop -------------------------------------------------------
    def evaluate(self) -> dict[str, Any]:
        """Run the monitor now (the record as JSON); leaves every RNG as it was, so a
        resumed run stays exact."""
        with kept_rng():
            record = self.monitor.evaluate(self.model, self.step_count)
        return record.to_dict()

    def saved_parameters(self) -> dict[str, torch.nn.Parameter]:
        """What a checkpoint holds: every parameter, or with LoRA only the adapters
        (the base weights never change)."""
        if self.lora is not None:
            return adapter_parameters(self.model)
        return dict(self.model.named_parameters())

    def save_checkpoint(self) -> Path:
        return ckpt.save_checkpoint(self.out, self.step_count, self.model, self.optimizer,
                                    self.generator,
                                    {"config": self.config.to_dict(),
                                     "config_fingerprint": self.config.fingerprint()},
                                    keep=self.config.keep_checkpoints,
                                    parameters=self.saved_parameters())

    def _append(self, name: str, record: dict[str, Any]) -> None:
        with open(self.out / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            self.tensorboard.write(name, record)

    def train(self, until: int | None = None) -> RunResult:
        """Train up to step ``until`` (default ``config.steps``), evaluating and
        checkpointing on schedule; finishes the run folder at the last step."""
        from tqdm.auto import tqdm

        cfg = self.config
        stop = cfg.steps if until is None else min(until, cfg.steps)
        result = RunResult(out=self.out, step=self.step_count)
        say = tqdm.write if self.progress else (lambda _: None)
        if self.step_count == 0 and not read_jsonl(self.out / "evals.jsonl"):
            self._log_evaluation(say)
        bar = tqdm(total=stop, initial=self.step_count, desc=f"train {self.out.name}",
                   unit="step", disable=not self.progress)
        try:
            while self.step_count < stop:
                try:
                    res = self.step()
                except TrainingError as err:
                    last = ckpt.latest_checkpoint(self.out)
                    where = f"the last good checkpoint is {last}" if last else \
                        "no checkpoint was written yet"
                    raise TrainingError(f"{err.cause}; training stopped, {where}",
                                        fix=err.fix) from err
                result.steps.append(res)
                self._append("steps.jsonl", res.to_dict())
                bar.update(1)
                bar.set_postfix(loss=f"{res.loss:.4f}")
                done = self.step_count == cfg.steps
                if self.step_count % cfg.eval_every == 0 or done:
                    self._log_evaluation(say)
                if (cfg.checkpoint_every and self.step_count % cfg.checkpoint_every == 0) \
                        or done:
                    self.save_checkpoint()
        finally:
            bar.close()
            if self.tensorboard is not None:
                self.tensorboard.close()  # also when a step fails: its events are kept
        if self.step_count == cfg.steps:
            self.finish()
        result.step = self.step_count
        result.evaluations = read_records(self.out)
        return result

    def _log_evaluation(self, say: Callable[[str], Any]) -> None:
        record = self.evaluate()
        self._append("evals.jsonl", record)
        if "monitors" in record:  # a rank other than 0 returns only the step
            from heldout.analysis.records import EvalRecord

            say(summary_line(EvalRecord.from_dict(record), run=self.out.name))

    def save_final_model(self) -> Path:
        """The final weights. A model over an HF checkpoint becomes an ordinary HF folder,
        ``<out>/final`` (LoRA merged; with LoRA the adapter also in ``final/adapter``),
        loadable by ``load_model`` and ``heldout cache --model``. A native
        TransformerLens model has no HF form: its parameters go to
        ``<out>/model.safetensors`` under the bridge's names."""
        from safetensors.torch import save_file

        from heldout.training.export import is_hf_backed, save_hf_folder

        if is_hf_backed(self.model):
            final = save_hf_folder(self.model, self.out / "final")
            if self.lora is not None:
                save_adapter(self.model, self.lora, final / "adapter")
            return final
        path = self.out / "model.safetensors"
        save_file({n: p.detach().cpu().clone(memory_format=torch.contiguous_format)
                   for n, p in self.model.named_parameters()}, str(path))
        return path

    def finish(self) -> None:
        """Final weights (:meth:`save_final_model`), probes retrained on the final model,
        and the curve plots."""
        from heldout.analysis.curves import plot_run
        from heldout.probes.io import save_probe
        from heldout.probes.linear import LogisticProbe
        from heldout.training.monitor import forward_pass

        self.save_final_model()
        mon = self.monitor
        if self.probes:
            self.model.eval()
            cur = forward_pass(self.model, mon.tok_eval + mon.tok_control, self.probes,
                               batch_size=mon.batch_size, pad_id=mon.pad_id)
            n_e = len(mon.tok_eval)
            for key, acts in cur.pooled.items():
                site, _, sel = key.partition("/")
                probe = LogisticProbe().fit(acts[:n_e].numpy(), mon.sets.eval.labels)
                probe.calibrate(acts[n_e:].numpy()[mon.control_mask], fpr=self.config.fpr)
                save_probe(probe, self.out / "probes" / f"retrained-{site.replace(':', '.')}-"
                           f"{sel}.safetensors", site=site, selection=sel)
        if self.config.plots:
            plot_run(self.out)


def train(config: TrainConfig, **kwargs: Any) -> RunResult:
    """``Trainer(config, **kwargs).train()``: one call from a notebook."""
    return Trainer(config, **kwargs).train()

