"""The step-plugin contract: what a channel's micro-batch loss sees and returns.

A channel (``reward``, ``screening``, ``intervention``; ``gradient`` is the trainer's
own loss) is a callable ``step_loss(ctx: StepContext, rows: list[int]) -> StepOutput``.
It sees a small typed :class:`StepContext` built once per run, not the trainer, and
must run the trained model through ``ctx.forward`` (under ``torchrun`` that is the
DistributedDataParallel wrapper). The shared pieces every channel needs (sequence
log-probabilities, KL to the reference, proxy scores on responses) live here too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from torch.nn import functional as F

from heldout.data import Example, TokenizedExample
from heldout.training.penalty import BoundProbe
from heldout.training.proxies import BoundText

Forward = Callable[[Tensor, Tensor, Any], Tensor]
"""``forward(ids, attention_mask, hooks or None) -> logits`` of the trained model."""


@dataclass(frozen=True)
class TaskBatch:
    """What a task loss sees: the trained model's logits on one micro-batch."""

    logits: Float[Tensor, "batch pos vocab"]
    """Logits of the trained model (in the autograd graph)."""
    input_ids: Int[Tensor, "batch pos"]
    """Token ids, right-padded."""
    attention_mask: Int[Tensor, "batch pos"]
    """1 on real tokens, 0 on padding."""
    response_mask: Bool[Tensor, "batch pos"]
    """True on response tokens."""
    examples: tuple[Example, ...]
    """The examples of the batch, in row order."""


TaskLoss = Callable[[TaskBatch], Tensor]
"""A task loss: ``loss(batch: TaskBatch) -> scalar Tensor`` differentiable in
``batch.logits``. The default is :func:`sft_loss`."""


def sft_loss(batch: TaskBatch) -> Tensor:
    """Supervised cross-entropy of the response tokens (teacher-forced targets)."""
    target = batch.input_ids[:, 1:]
    mask = batch.response_mask[:, 1:]
    return F.cross_entropy(batch.logits[:, :-1][mask], target[mask])


@dataclass(frozen=True)
class StepContext:
    """What a channel needs from the run, fixed for the whole run."""

    config: Any
    """The run's ``TrainConfig``."""
    model: Any
    """The trained TransformerBridge (sampling reads it; training forwards use
    ``forward``)."""
    forward: Forward
    """The trained model's logits, in the autograd graph, with optional hooks."""
    reference: Any
    """The frozen starting model (KL, ``frozen`` detectors)."""
    tokenizer: Any
    pad_id: int
    device: torch.device
    examples: tuple[Example, ...]
    """The training examples (prompts and their SFT targets), by row."""
    tokens: tuple[TokenizedExample, ...]
    """The training examples tokenized (prompt + target response), by row."""
    probes: tuple[BoundProbe, ...]
    """Activation probes trained against."""
    texts: tuple[BoundText, ...]
    """Text monitors trained against."""
    thresholds: dict[str, float]
    """Each proxy's score threshold at the run's FPR on the base model's control set."""
    task_loss: TaskLoss = sft_loss
    """The supervised loss (intervention channel)."""
    params: tuple[torch.nn.Parameter, ...] = ()
    """The trained parameters (a channel with nothing to train returns a zero on them)."""


@dataclass(frozen=True)
class StepOutput:
    """A micro-batch loss and what to log about it."""

    total: Tensor
    """The scalar to differentiate."""
    terms: dict[str, Tensor]
    """Named terms (unweighted), logged as ``losses``."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Logged as step metrics (e.g. ``reward``, ``flagged``, ``prob/<proxy>``)."""


class StepLoss(Protocol):
    """A channel's micro-batch loss for the training examples at ``rows``."""

    def __call__(self, ctx: StepContext, rows: list[int]) -> StepOutput: ...


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens (how responses are tokenized)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


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


def token_kl(ctx: StepContext, logits: Tensor, ids: Tensor, attention: Tensor,
             response: Tensor) -> Tensor:
    """KL(current ‖ reference) per response-predicting position, averaged (scalar)."""
    with torch.no_grad():
        ref = ctx.reference(ids, attention_mask=attention)
    mask = response[:, 1:]
    cur = F.log_softmax(logits[:, :-1][mask].float(), -1)
    base = F.log_softmax(ref[:, :-1][mask].float(), -1)
    return F.kl_div(base, cur, log_target=True, reduction="batchmean")


def text_scores(texts: Sequence[BoundText], examples: Sequence[Example],
                responses: Sequence[str]) -> dict[str, np.ndarray]:
    """Each text monitor's suspicion per response (n,)."""
    return {t.name: t.scores(examples, responses) for t in texts}
