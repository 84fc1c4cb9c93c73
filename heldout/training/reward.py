"""The reward and screening channels: a proxy judges responses, no gradient through it.

In the ``gradient`` channel (:mod:`heldout.training.trainer`) a probe's score is a
penalty differentiated through the probe into the activations. Here every proxy
trained against (activation probe or text monitor) only *judges* responses, as in RL
against monitors:

- **reward** (``mode="reward"``): each response y to a prompt x gets
  ``R(x, y) = task_reward(x, y) - Σ λᵢ · sᵢ(x, y)``, where sᵢ is proxy i's score in
  [0, 1] (a probe's probability, a text monitor's suspicion) and λᵢ its weight; the
  policy maximizes ``E_y~π[R] - β·KL(π ‖ π_ref)``.
- **screening** (``mode="screening"``, Wong et al. 2025's alternative to penalties):
  responses that a proxy flags (score above its threshold at the run's FPR, calibrated
  on the base model's control set) are dropped instead of penalized; the rest are
  trained on with ``R = task_reward``.

Responses, per prompt:

* Sampling (``reward_samples = K >= 2``): K responses sampled from the current model
  (KV cache, temperature ``reward_temperature``, nucleus ``reward_top_p``); REINFORCE
  with the group-mean baseline over the kept responses,
  ``loss = -mean_k (R_k - mean_group R) · log π(y_k | x)``.
* Exact (``reward_samples = 0``): where the environment enumerates the answer space
  (``Environment.candidates``), the expected reward over the kept candidates, each
  weighted by the policy's sequence probability renormalized over them:
  ``loss = -Σ_c π̃(c|x) R(x, c)``. No sampling noise.

KL (weight β = ``kl_weight``): KL(current ‖ reference) of the next-token distributions,
averaged over each response's positions, then over responses (weighted by π̃ when exact).
Probe placement (``reward_detector``): ``live`` = the probe reads the current model's
activations (detached); ``frozen`` = the frozen base model's, on the same text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from heldout.activations.cache import pad_batch
from heldout.data import Example, TokenizedExample, join_tokens, prompt_token_ids
from heldout.environments.base import Candidates, Labeler, TaskReward
from heldout.errors import DataError
from heldout.training.penalty import capture
from heldout.training.step import (
    StepContext,
    StepOutput,
    encode_text,
    sequence_kl,
    sequence_logprobs,
    text_scores,
)


@dataclass
class Responses:
    """The responses judged in one micro-batch, grouped by prompt."""

    examples: list[Example]
    """Per response, the training example (prompt) it answers."""
    texts: list[str]
    tokens: list[TokenizedExample]
    groups: list[tuple[int, int]]
    """Per prompt, the [start, end) range of its responses."""


@dataclass
class RewardStep:
    """The reward / screening micro-batch loss (module docstring). A ``StepLoss``."""

    task_reward: TaskReward
    """What the environment pays a response."""
    candidates: Candidates | None = None
    """Answer-space enumeration for the exact expectation (``samples == 0``)."""
    samples: int = 0
    """K responses per prompt; 0 = exact expectation over ``candidates``."""
    detector: str = "live"
    """Probes read the ``live`` (current, detached) or ``frozen`` (base) model."""
    temperature: float = 1.0
    top_p: float = 1.0
    screening: bool = False
    """Drop flagged responses instead of penalizing them."""
    labeler: Labeler | None = None
    """Optional: logs the expected misbehavior rate of the responses (``misbehavior``)."""
    _cache: dict[int, tuple[list[str], list[TokenizedExample]]] = field(default_factory=dict)

    def __call__(self, ctx: StepContext, rows: list[int]) -> StepOutput:
        got = self._enumerate(ctx, rows) if self.samples == 0 else self._sample(ctx, rows)
        seq_lp, kl, judged = self._score(ctx, got)
        reward, keep = judged["reward"], judged["keep"]
        weights: list[Tensor] = []
        parts: list[Tensor] = []
        used: list[tuple[int, int]] = []
        for start, end in got.groups:
            k = keep[start:end]
            if not bool(k.any()):
                continue  # screening dropped every response to this prompt
            used.append((start, end))
            lp, r = seq_lp[start:end], reward[start:end]
            if self.samples == 0:   # exact: π̃ over the kept candidates, gradient through it
                w = torch.softmax(lp.masked_fill(~k, float("-inf")), dim=0)
                parts.append(-(w * r).sum())
            else:                   # REINFORCE with the group-mean baseline of kept samples
                n = k.sum()
                w = k.to(r.dtype) / n
                baseline = (r * k).sum() / n
                parts.append(-((r - baseline) * lp * w).sum())
            weights.append(w)
        metrics: dict[str, float] = {"kept": float(keep.float().mean())}
        if not parts:  # nothing left to train on in this micro-batch: a zero step
            zero = seq_lp.sum() * 0.0
            return StepOutput(total=zero, terms={"pg": zero}, metrics=metrics)
        total = pg = torch.stack(parts).mean()
        terms: dict[str, Tensor] = {"pg": pg}
        if kl is not None:
            terms["kl"] = torch.stack([(w * kl[s:e]).sum()
                                       for w, (s, e) in zip(weights, used)]).mean()
            total = total + ctx.config.kl_weight * terms["kl"]

        def expect(values: Tensor) -> float:
            return float(sum((w.detach() * values[s:e]).sum()
                             for w, (s, e) in zip(weights, used))) / len(used)

        metrics.update(reward=expect(reward), task_reward=expect(judged["task"]))
        for name, values in judged.items():
            if name.startswith("prob/"):
                metrics[name] = expect(values)
        if self.labeler is not None:
            bad = torch.tensor([float(self.labeler.misbehavior(e, t))
                                for e, t in zip(got.examples, got.texts)], device=reward.device)
            metrics["misbehavior"] = expect(bad)
        return StepOutput(total=total, terms=terms, metrics=metrics)

    # -- responses ----------------------------------------------------------------
    def _enumerate(self, ctx: StepContext, rows: list[int]) -> Responses:
        got = Responses([], [], [], [])
        for r in rows:
            ex = ctx.examples[r]
            if r not in self._cache:
                found = list(dict.fromkeys(self.candidates(ex) or ())) \
                    if self.candidates else []
                if not found:
                    raise DataError(f"example {ex.id!r} has no candidate responses to "
                                    "enumerate", fix="set reward_samples=K >= 2 to sample "
                                                     "responses instead")
                prompt = prompt_token_ids(ex, ctx.tokenizer)
                self._cache[r] = (found, [join_tokens(prompt, encode_text(ctx.tokenizer, t))
                                          for t in found])
            found, toks = self._cache[r]
            got.groups.append((len(got.texts), len(got.texts) + len(found)))
            got.examples += [ex] * len(found)
            got.texts += found
            got.tokens += toks
        return got

    def _sample(self, ctx: StepContext, rows: list[int]) -> Responses:
        from heldout.generation import generate

        tok = ctx.tokenizer
        prompts = [prompt_token_ids(ctx.examples[r], tok) for r in rows]
        sampled = generate(ctx.model, prompts, max_new_tokens=ctx.config.max_new_tokens,
                           temperature=self.temperature, top_p=self.top_p,
                           eos_id=tok.eos_token_id, pad_id=ctx.pad_id,
                           num_return_sequences=self.samples)
        got = Responses([], [], [], [])
        for r, prompt, outs in zip(rows, prompts, sampled):
            got.groups.append((len(got.texts), len(got.texts) + len(outs)))
            for ids in outs:
                got.examples.append(ctx.examples[r])
                got.texts.append(tok.decode(ids, skip_special_tokens=True).strip())
                got.tokens.append(join_tokens(prompt, ids or [tok.eos_token_id]))
        return got

    # -- judgement ----------------------------------------------------------------
    def _score(self, ctx: StepContext, got: Responses
               ) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        """(log π per response, KL per response or None, judgement: ``reward``, ``task``,
        ``keep`` and ``prob/<proxy>`` per response, constants)."""
        ids, attention, response = pad_batch(got.tokens, ctx.pad_id, ctx.device)
        live = self.detector == "live"
        names = [p.hook_name for p in ctx.probes]
        hooks, captured = capture(names if live else [], detach=True)
        logits = ctx.forward(ids, attention, hooks)
        seq_lp, lp = sequence_logprobs(logits, ids, response)
        ref_logits = None
        if ctx.config.kl_weight > 0 or (ctx.probes and not live):
            ref_hooks, ref_captured = capture(names if not live else [], detach=True)
            with torch.no_grad():
                ref_logits = ctx.reference.run_with_hooks(
                    ids, fwd_hooks=ref_hooks, attention_mask=attention)
            if not live:
                captured = ref_captured
        device = seq_lp.device
        with torch.no_grad():
            logit = {p.name: p.example_scores(captured[p.hook_name], response).float()
                     .to(device) for p in ctx.probes}
        scores = {name: torch.sigmoid(x) for name, x in logit.items()}
        flags = {name: x > ctx.thresholds[name] for name, x in logit.items()}
        for name, s in text_scores(ctx.texts, got.examples, got.texts).items():
            scores[name] = torch.as_tensor(s, dtype=torch.float32, device=device)
            flags[name] = scores[name] > ctx.thresholds[name]
        task = torch.tensor([float(self.task_reward(e, t))
                             for e, t in zip(got.examples, got.texts)], device=device)
        reward = task.clone()
        keep = torch.ones(len(task), dtype=torch.bool, device=device)
        weights = {p.name: p.spec.weight for p in ctx.probes}
        weights.update({t.name: t.spec.weight for t in ctx.texts})
        for name, s in scores.items():
            if self.screening:
                keep &= ~flags[name]
            else:
                reward = reward - weights[name] * s
        kl = sequence_kl(lp, ref_logits, response) \
            if ctx.config.kl_weight > 0 and ref_logits is not None else None
        judged = {"reward": reward, "task": task, "keep": keep}
        judged.update({f"prob/{k}": v for k, v in scores.items()})
        return seq_lp, kl, judged


def screening_survivors(texts: Sequence[Any], examples: Sequence[Example],
                        responses: Sequence[str], thresholds: dict[str, float]) -> int:
    """How many ``responses`` no text monitor flags (a screening run's pre-flight)."""
    keep = torch.ones(len(responses), dtype=torch.bool)
    for name, s in text_scores(texts, examples, responses).items():
        keep &= ~torch.as_tensor(s > thresholds[name])
    return int(keep.sum())


__all__ = ["Responses", "RewardStep", "screening_survivors"]
