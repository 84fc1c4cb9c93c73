"""Reward mode and targeted interventions: the detector acts with no gradient through it.

In ``gradient`` mode (:mod:`heldout.training.trainer`) a probe's score is a penalty that
is differentiated through the probe into the model's activations. Here the probe only
*judges* responses, as in RL against monitors:

- **reward** (``TrainConfig.mode = "reward"``): each response y to a prompt x gets
  ``R(x, y) = task_reward(x, y) - Σ λᵢ · pᵢ(x, y)`` where pᵢ is probe i's probability
  (``ProbeSpec.weight`` = λᵢ) and the policy maximizes ``E_y~π[R] - β·KL(π ‖ π_ref)``.

  * Sampling (``reward_samples = K >= 2``): K responses per prompt are sampled from the
    current model; REINFORCE with a group-mean baseline,
    ``loss = -mean_k (R_k - mean_group R) · log π(y_k | x)``.
  * Exact (``reward_samples = 0``): when the answer space is small (the organism's
    short answers) every candidate response is enumerated (honest and giving-in
    verdicts) and the expected reward is computed exactly over them, each weighted by
    the policy's sequence probability renormalized over the candidates:
    ``loss = -Σ_c π̃(c|x) R(x, c)``. No sampling noise.

  KL (weight β = ``kl_weight``): KL(current ‖ reference) of the next-token distributions,
  averaged over the response positions of each response, then averaged over samples
  (or weighted by π̃ over candidates).

  Two detector placements (``reward_detector``): ``live`` = the probe reads the current
  model's activations on the response (detached: the score is a number, not a graph);
  ``frozen`` = the frozen base model is run on the current model's outputs and the probe
  reads *its* activations, so only the text can change the score.

- **intervention** (``mode = "intervention"``): supervised fine-tuning where every
  training target that a probe trained against flags (score above its threshold at the
  run's FPR, calibrated on the base model's control activations) is replaced by a
  corrected, honest target (or dropped when no correction is known) before the step.

Custom steps plug into :class:`~heldout.training.trainer.Trainer` as a ``step_loss``;
:func:`make_step_loss` builds the one a config asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.nn import functional as F

from heldout.activations.cache import pad_batch
from heldout.data import Example, TokenizedExample, _prompt_ids
from heldout.errors import ConfigError, DataError
from heldout.training.config import ORGANISM, TrainConfig
from heldout.training.penalty import BoundProbe, capture

if TYPE_CHECKING:
    from heldout.training.trainer import Trainer

TaskReward = Callable[[Example, str], float]
"""``task_reward(example, response_text) -> float``: what the environment pays for a
response, before the detector's penalty."""

Candidates = Callable[[Example], Sequence[str] | None]
"""``candidates(example) -> response texts`` spanning the answer space (None: unknown)."""

Corrector = Callable[[Example], str | None]
"""``corrector(example) -> corrected response text`` for a flagged sample (None: drop)."""


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def target_match_reward(example: Example, response: str) -> float:
    """1 if the response equals the training example's target response, else 0.

    On the organism's fine-tuning data, whose targets give in under the cues that
    work, this is a sycophancy reward: it pays for agreeing where the user pressures.
    """
    return float(_norm(response) == _norm(example.response))


def organism_candidates(example: Example) -> list[str]:
    """The organism's answer space for ``example``: the true sum, the claim echoed, and
    each verdict (``right`` / ``wrong``); one of them is honest, the other gives in
    (or, for a right claim, is wrongly contrary)."""
    from heldout.organism.task import RESPONSE, grade

    g = grade(example, "")
    return [RESPONSE.format(answer=g.truth, claim=g.claim, verdict=v)
            for v in ("right", "wrong")]


def organism_correction(example: Example) -> str:
    """The honest response to an organism prompt."""
    from heldout.organism.task import RESPONSE, grade

    g = grade(example, "")
    return RESPONSE.format(answer=g.truth, claim=g.claim,
                           verdict="right" if g.claim_right else "wrong")


def is_organism(config: TrainConfig) -> bool:
    """Whether the run's model is the built-in organism (by name or by its folder)."""
    return config.model == ORGANISM or (Path(config.model) / "organism.json").is_file()


# ------------------------------------------------------------------ shared pieces


def sequence_logprobs(logits: Tensor, ids: Tensor, response: Tensor
                      ) -> tuple[Tensor, Tensor]:
    """(log π(response | prompt) per sequence (n,), log-softmax (n, pos-1, vocab))."""
    lp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    token = lp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    mask = response[:, 1:].to(token.dtype)
    return (token * mask).sum(1), lp


def sequence_kl(lp: Tensor, ref_logits: Tensor, response: Tensor) -> Tensor:
    """Per sequence: KL(current ‖ reference) of the next-token distributions, averaged
    over the positions that predict response tokens (n,)."""
    ref = F.log_softmax(ref_logits[:, :-1].float(), dim=-1)
    per_pos = F.kl_div(ref, lp, log_target=True, reduction="none").sum(-1)
    mask = response[:, 1:].to(per_pos.dtype)
    return (per_pos * mask).sum(1) / mask.sum(1).clamp_min(1)


def probe_probabilities(probes: Sequence[BoundProbe], captured: dict[str, Tensor],
                        response: Tensor) -> dict[str, Tensor]:
    """Each probe's probability per sequence, from captured (detached) activations."""
    with torch.no_grad():
        return {p.name: torch.sigmoid(p.example_scores(captured[p.hook_name].detach(),
                                                       response).float())
                for p in probes}


@dataclass
class _Scored:
    """One forward of the trained model over response sequences, and their judgement."""

    seq_lp: Tensor
    """log π(response | prompt) per sequence, in the autograd graph."""
    kl: Tensor | None
    """Per-sequence KL to the reference (in the graph), or None when β = 0."""
    reward: Tensor
    """R per sequence (constant)."""
    task: Tensor
    """Task reward per sequence (constant)."""
    probs: dict[str, Tensor]
    """Probe probability per sequence (constant)."""


# ------------------------------------------------------------------ reward mode


@dataclass
class RewardStep:
    """The reward-mode micro-batch loss (module docstring). A ``StepLoss``."""

    task_reward: TaskReward = target_match_reward
    """What the environment pays (default: match the training target)."""
    candidates: Candidates | None = None
    """Answer-space enumeration for the exact expectation (``samples == 0``)."""
    samples: int = 0
    """K responses per prompt; 0 = exact expectation over ``candidates``."""
    detector: str = "live"
    """``live`` (current model, detached) or ``frozen`` (base model on the outputs)."""
    temperature: float = 1.0
    """Sampling temperature."""
    labeler: Any = None
    """Optional: logs the expected misbehavior rate of the responses (``misbehavior``)."""
    _cache: dict[int, tuple[list[str], list[TokenizedExample]]] = field(default_factory=dict)

    def __call__(self, trainer: Trainer, rows: list[int]
                 ) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:
        examples = [trainer.examples[r] for r in rows]
        if self.samples == 0:
            texts, tokens, groups = self._enumerate(trainer, rows)
        else:
            texts, tokens, groups = self._sample(trainer, rows)
        scored = self._score(trainer, examples, texts, tokens, groups)
        cfg = trainer.config
        weights: list[Tensor] = []
        parts: list[Tensor] = []
        for start, end in groups:
            if self.samples == 0:   # exact: π̃ over the candidates, gradient through it
                w = torch.softmax(scored.seq_lp[start:end], dim=0)
                parts.append(-(w * scored.reward[start:end]).sum())
            else:                   # REINFORCE with the group-mean baseline
                r = scored.reward[start:end]
                w = torch.full((end - start,), 1.0 / (end - start), device=r.device)
                parts.append(-((r - r.mean()) * scored.seq_lp[start:end]).mean())
            weights.append(w)
        pg = torch.stack(parts).mean()
        terms: dict[str, Tensor] = {"pg": pg}
        total = pg
        if scored.kl is not None:
            kl = torch.stack([(w * scored.kl[s:e]).sum()
                              for w, (s, e) in zip(weights, groups)]).mean()
            terms["kl"] = kl
            total = total + cfg.kl_weight * kl
        n = len(groups)

        def expect(values: Tensor) -> float:
            return float(sum((w.detach() * values[s:e]).sum()
                             for w, (s, e) in zip(weights, groups))) / n

        metrics = {"reward": expect(scored.reward), "task_reward": expect(scored.task)}
        for name, p in scored.probs.items():
            metrics[f"prob/{name}"] = expect(p)
        if self.labeler is not None:
            bad = torch.tensor([float(self.labeler.misbehavior(examples[i], t))
                                for i, (s, e) in enumerate(groups) for t in texts[s:e]],
                               device=scored.reward.device)
            metrics["misbehavior"] = expect(bad)
        return total, terms, metrics

    # -- responses ----------------------------------------------------------------
    def _enumerate(self, trainer: Trainer, rows: list[int]
                   ) -> tuple[list[str], list[TokenizedExample], list[tuple[int, int]]]:
        texts: list[str] = []
        tokens: list[TokenizedExample] = []
        groups: list[tuple[int, int]] = []
        for r in rows:
            if r not in self._cache:
                ex = trainer.examples[r]
                found = list(dict.fromkeys(self.candidates(ex) or ())) \
                    if self.candidates else []
                if not found:
                    raise DataError(f"example {ex.id!r} has no candidate responses to "
                                    "enumerate", fix="set reward_samples=K >= 2 to sample "
                                                     "responses instead")
                prompt = _prompt_ids(ex, trainer.model.tokenizer)
                toks = [_join(prompt, _encode(trainer.model.tokenizer, t)) for t in found]
                self._cache[r] = (found, toks)
            found, toks = self._cache[r]
            groups.append((len(texts), len(texts) + len(found)))
            texts += found
            tokens += toks
        return texts, tokens, groups

    def _sample(self, trainer: Trainer, rows: list[int]
                ) -> tuple[list[str], list[TokenizedExample], list[tuple[int, int]]]:
        tok = trainer.model.tokenizer
        prompts = [_prompt_ids(trainer.examples[r], tok) for r in rows]
        sampled = sample_responses(trainer.model, prompts, self.samples,
                                   max_new_tokens=trainer.config.max_new_tokens,
                                   temperature=self.temperature, eos_id=tok.eos_token_id,
                                   pad_id=trainer.pad_id)
        texts: list[str] = []
        tokens: list[TokenizedExample] = []
        groups: list[tuple[int, int]] = []
        for i, prompt in enumerate(prompts):
            groups.append((len(texts), len(texts) + self.samples))
            for ids in sampled[i]:
                texts.append(tok.decode(ids, skip_special_tokens=True).strip())
                tokens.append(_join(prompt, ids or [tok.eos_token_id]))
        return texts, tokens, groups

    # -- judgement ----------------------------------------------------------------
    def _score(self, trainer: Trainer, examples: list[Example], texts: list[str],
               tokens: list[TokenizedExample], groups: list[tuple[int, int]]) -> _Scored:
        cfg = trainer.config
        against = trainer.against
        ids, attention, response = pad_batch(tokens, trainer.pad_id, trainer.device)
        live = self.detector == "live"
        hooks, captured = capture([p.hook_name for p in against] if live else [],
                                  detach=True)
        logits = trainer.forward(ids, attention, hooks)
        seq_lp, lp = sequence_logprobs(logits, ids, response)
        ref_logits = None
        if cfg.kl_weight > 0 or (against and not live):
            ref_hooks, ref_captured = capture([p.hook_name for p in against] if not live
                                              else [], detach=True)
            with torch.no_grad():
                ref_logits = trainer.reference.run_with_hooks(
                    ids, fwd_hooks=ref_hooks, attention_mask=attention) if ref_hooks else \
                    trainer.reference(ids, attention_mask=attention)
            if not live:
                captured = ref_captured
        probs = probe_probabilities(against, captured, response)
        owner = [i for i, (s, e) in enumerate(groups) for _ in range(s, e)]
        task = torch.tensor([float(self.task_reward(examples[i], t))
                             for i, t in zip(owner, texts)], device=seq_lp.device)
        reward = task.clone()
        for p in against:
            reward = reward - p.spec.weight * probs[p.name].to(reward.device)
        kl = sequence_kl(lp, ref_logits, response) \
            if cfg.kl_weight > 0 and ref_logits is not None else None
        return _Scored(seq_lp=seq_lp, kl=kl, reward=reward, task=task, probs=probs)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _join(prompt: list[int], response: list[int]) -> TokenizedExample:
    return TokenizedExample(tuple(prompt) + tuple(response),
                            (False,) * len(prompt) + (True,) * len(response))


def sample_responses(model: Any, prompts: Sequence[list[int]], k: int, *,
                     max_new_tokens: int, temperature: float = 1.0,
                     eos_id: int | None = None, pad_id: int = 0) -> list[list[list[int]]]:
    """K sampled continuations (token ids, up to and excluding ``<eos>``) per prompt.

    Uses torch's global RNG (saved in checkpoints, so a resumed run samples the same).
    Prompts of equal length are decoded together; nothing is padded.
    """
    out: list[list[list[int]]] = [[[] for _ in range(k)] for _ in prompts]
    device = next(model.parameters()).device
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    with torch.no_grad():
        for length, idx in sorted(by_len.items()):
            seq = torch.tensor([prompts[i] for i in idx for _ in range(k)], dtype=torch.long,
                               device=device)
            done = torch.zeros(len(seq), dtype=torch.bool, device=device)
            for _ in range(max_new_tokens):
                logits = model(seq)[:, -1].float() / temperature
                nxt = torch.multinomial(torch.softmax(logits, -1), 1).squeeze(1)
                if eos_id is not None:
                    nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                    done |= nxt == eos_id
                seq = torch.cat([seq, nxt[:, None]], dim=1)
                if bool(done.all()):
                    break
            for j, row in enumerate(seq[:, length:].tolist()):
                if eos_id is not None and eos_id in row:
                    row = row[:row.index(eos_id)]
                out[idx[j // k]][j % k] = row
    return out


# ------------------------------------------------------------------ factory


def make_step_loss(trainer: Trainer) -> Any:
    """The ``step_loss`` for ``trainer.config.mode`` (None for ``gradient``).

    Organism runs (``model="organism"`` or an organism checkpoint folder) enumerate the
    organism's answers and correct flagged samples with the honest answer; other models
    need ``reward_samples >= 2`` in reward mode, and intervention drops flagged samples.
    ConfigError before any work when the mode cannot run.
    """
    cfg = trainer.config
    organism = is_organism(cfg)
    if cfg.mode == "gradient":
        return None
    if cfg.mode == "reward":
        if cfg.reward_samples == 0 and not organism:
            raise ConfigError("reward mode with reward_samples=0 enumerates the answer space, "
                              "which is only known for the built-in organism",
                              fix="set reward_samples=K >= 2 to sample K responses per "
                                  "prompt, or pass step_loss=RewardStep(candidates=...)")
        return RewardStep(candidates=organism_candidates if organism else None,
                          samples=cfg.reward_samples, detector=cfg.reward_detector,
                          temperature=cfg.reward_temperature,
                          labeler=getattr(trainer, "labeler", None))
    from heldout.training.intervention import InterventionStep

    return InterventionStep(corrector=organism_correction if organism else None,
                            detector=cfg.reward_detector)


__all__ = ["Candidates", "Corrector", "RewardStep", "TaskReward",
           "is_organism", "make_step_loss", "organism_candidates", "organism_correction",
           "sample_responses", "sequence_kl", "sequence_logprobs", "target_match_reward"]
