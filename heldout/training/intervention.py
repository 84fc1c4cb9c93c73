"""Targeted intervention: flagged training targets are replaced by corrected ones.

``TrainConfig.mode = "intervention"``: supervised fine-tuning where every training
target that a probe trained against flags (score above its threshold at the run's FPR,
calibrated on the base model's control activations) is replaced by a corrected, honest
target, or dropped when no correction is known, before the step. The detector only
judges; no gradient flows through it. See :mod:`heldout.training.reward` for the
reward mode and :func:`~heldout.training.reward.make_step_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from heldout.activations.cache import pad_batch
from heldout.data import TokenizedExample, _prompt_ids
from heldout.training.penalty import capture
from heldout.training.reward import Corrector, _encode, _join

if TYPE_CHECKING:
    from heldout.training.trainer import Trainer


@dataclass
class InterventionStep:
    """Supervised fine-tuning where flagged targets are replaced by corrected ones."""

    corrector: Corrector | None = None
    """Corrected response for a flagged example (None, or returning None: drop it)."""
    detector: str = "live"
    """Flag with the current model's activations (``live``) or the base model's."""
    _fixed: dict[int, TokenizedExample | None] = field(default_factory=dict)

    def __call__(self, trainer: Trainer, rows: list[int]
                 ) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:
        from heldout.training.trainer import TaskBatch

        tokens = [trainer.tokens[r] for r in rows]
        ids, attention, response = pad_batch(tokens, trainer.pad_id, trainer.device)
        scorer = trainer.model if self.detector == "live" else trainer.reference
        hooks, captured = capture([p.hook_name for p in trainer.against], detach=True)
        with torch.no_grad():
            scorer.run_with_hooks(ids, fwd_hooks=hooks, attention_mask=attention)
            flagged = torch.zeros(len(rows), dtype=torch.bool, device=ids.device)
            for p in trainer.against:
                score = p.example_scores(captured[p.hook_name], response)
                flagged |= score > trainer.monitor.base_thresholds[p.name]
        keep: list[int] = []
        fixed_tokens: list[TokenizedExample] = []
        for i, r in enumerate(rows):
            if not bool(flagged[i]):
                keep.append(r)
                fixed_tokens.append(tokens[i])
                continue
            if r not in self._fixed:
                ex = trainer.examples[r]
                text = self.corrector(ex) if self.corrector is not None else None
                self._fixed[r] = None if text is None else _join(
                    _prompt_ids(ex, trainer.model.tokenizer),
                    _encode(trainer.model.tokenizer, text))
            if self._fixed[r] is not None:
                keep.append(r)
                fixed_tokens.append(self._fixed[r])  # type: ignore[arg-type]
        metrics = {"flagged": float(flagged.float().mean())}
        if not keep:  # every sample flagged and none correctable: a zero step
            zero = sum(p.sum() for p in trainer.params) * 0.0
            return zero, {"task": zero}, metrics
        ids, attention, response = pad_batch(fixed_tokens, trainer.pad_id, trainer.device)
        logits = trainer.forward(ids, attention)
        terms = {"task": trainer.task_loss(TaskBatch(
            logits, ids, attention, response, tuple(trainer.examples[r] for r in keep)))}
        total = terms["task"]
        if trainer.config.kl_weight > 0:
            terms["kl"] = trainer._kl(logits, ids, attention, response)
            total = total + trainer.config.kl_weight * terms["kl"]
        return total, terms, metrics
