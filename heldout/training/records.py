"""The records a training run passes around and leaves on disk: the batch a task loss
sees, the result of a step and of a run, the data of a run; plus the small helpers
to read run logs and copy a bridge as a frozen reference."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from torch.nn import functional as F

from heldout.data import Dataset, Example
from heldout.training.monitor import EvalSets

if TYPE_CHECKING:
    from heldout.training.trainer import Trainer


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

StepLoss = Callable[["Trainer", list[int]], tuple[Tensor, dict[str, Tensor], dict[str, float]]]
"""A custom micro-batch loss (reward mode, interventions: ``heldout.training.reward``):
``step_loss(trainer, rows) -> (total, named terms, metrics)`` for the training examples
at ``rows``. It must run the trained model through :meth:`Trainer.forward` (under
``torchrun`` that is the DistributedDataParallel wrapper)."""


def sft_loss(batch: TaskBatch) -> Tensor:
    """Supervised cross-entropy of the response tokens (teacher-forced targets)."""
    target = batch.input_ids[:, 1:]
    mask = batch.response_mask[:, 1:]
    logits = batch.logits[:, :-1]
    return F.cross_entropy(logits[mask], target[mask])


@dataclass(frozen=True)
class StepResult:
    """One optimizer step."""

    step: int
    """Steps completed after this one (1-based)."""
    loss: float
    """Total loss: task + Σ λ·penalty + β·KL (averaged over micro-batches)."""
    losses: dict[str, float]
    """Each named term, unweighted: ``task``, ``penalty/<probe>``, ``kl``."""
    metrics: dict[str, float]
    """``lr``, ``grad_norm``, ``prob/<probe>`` (mean probe probability), ``seconds``."""

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "loss": self.loss, "losses": self.losses,
                "metrics": self.metrics}


@dataclass(frozen=True)
class RunData:
    """The data of a run: fine-tuning examples and the monitor's sets."""

    train: Dataset
    """Fine-tuning examples (prompt + response)."""
    sets: EvalSets
    """Evaluation, control and forced sets."""


@dataclass
class RunResult:
    """What :meth:`Trainer.train` returns."""

    out: Path
    """The run folder."""
    step: int
    """Steps completed."""
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    """Every evaluation record of the run (read back from ``evals.jsonl``)."""
    steps: list[StepResult] = field(default_factory=list)
    """Steps taken in this call."""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def clone_bridge(model: Any) -> Any:
    """A frozen copy of a TransformerBridge (for the reference / base model)."""
    from heldout.models import load_model

    with torch.no_grad():  # replaces tensors cached by a grad-enabled forward
        model(torch.zeros((1, 2), dtype=torch.long,
                          device=next(model.parameters()).device))
    hf = copy.deepcopy(model.original_model)
    return load_model(hf, tokenizer=model.tokenizer,
                      device=str(next(model.parameters()).device))
