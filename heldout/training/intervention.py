"""The intervention channel: flagged training targets are replaced by corrected ones.

``mode="intervention"``: supervised fine-tuning where every training target that a
proxy trained against flags (an activation probe's score above its threshold at the
run's FPR, calibrated on the base model's control set, or a text monitor's on the
target text) is replaced by the environment's honest correction
(``Environment.corrector``), or dropped when none is known, before the step. The
detector only judges; no gradient flows through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from heldout.activations.cache import pad_batch
from heldout.data import TokenizedExample, join_tokens, prompt_token_ids
from heldout.environments.base import Corrector
from heldout.training.penalty import capture
from heldout.training.step import StepContext, StepOutput, TaskBatch, encode_text, \
    text_scores, token_kl


@dataclass
class InterventionStep:
    """Supervised fine-tuning where flagged targets are replaced by corrected ones."""

    corrector: Corrector | None = None
    """Corrected response for a flagged example (None, or returning None: drop it)."""
    detector: str = "live"
    """Probes flag with the current model's activations (``live``) or the base model's."""
    _fixed: dict[int, TokenizedExample | None] = field(default_factory=dict)

    def __call__(self, ctx: StepContext, rows: list[int]) -> StepOutput:
        tokens = [ctx.tokens[r] for r in rows]
        examples = [ctx.examples[r] for r in rows]
        ids, attention, response = pad_batch(tokens, ctx.pad_id, ctx.device)
        flagged = torch.zeros(len(rows), dtype=torch.bool, device=ids.device)
        if ctx.probes:
            scorer = ctx.model if self.detector == "live" else ctx.reference
            hooks, captured = capture([p.hook_name for p in ctx.probes], detach=True)
            with torch.no_grad():
                scorer.run_with_hooks(ids, fwd_hooks=hooks, attention_mask=attention)
                for p in ctx.probes:
                    score = p.example_scores(captured[p.hook_name], response)
                    flagged |= score > ctx.thresholds[p.name]
        for name, s in text_scores(ctx.texts, examples, [e.response for e in examples]).items():
            flagged |= torch.as_tensor(s > ctx.thresholds[name], device=ids.device)
        keep: list[int] = []
        fixed_tokens: list[TokenizedExample] = []
        for i, r in enumerate(rows):
            if not bool(flagged[i]):
                keep.append(r)
                fixed_tokens.append(tokens[i])
                continue
            if r not in self._fixed:
                ex = ctx.examples[r]
                text = self.corrector(ex) if self.corrector is not None else None
                self._fixed[r] = None if text is None else join_tokens(
                    prompt_token_ids(ex, ctx.tokenizer), encode_text(ctx.tokenizer, text))
            fixed = self._fixed[r]
            if fixed is not None:
                keep.append(r)
                fixed_tokens.append(fixed)
        metrics = {"flagged": float(flagged.float().mean())}
        if not keep:  # every sample flagged and none correctable: a zero step
            zero = sum(p.sum() for p in ctx.params) * 0.0
            return StepOutput(total=zero, terms={"task": zero}, metrics=metrics)
        ids, attention, response = pad_batch(fixed_tokens, ctx.pad_id, ctx.device)
        logits = ctx.forward(ids, attention, None)
        terms = {"task": ctx.task_loss(TaskBatch(
            logits, ids, attention, response, tuple(ctx.examples[r] for r in keep)))}
        total = terms["task"]
        if ctx.config.kl_weight > 0:
            terms["kl"] = token_kl(ctx, logits, ids, attention, response)
            total = total + ctx.config.kl_weight * terms["kl"]
        return StepOutput(total=total, terms=terms, metrics=metrics)
