"""The records a training run passes around and leaves on disk: the result of a step
and of a run; plus the small helpers to read run logs and copy a bridge as a frozen
reference. (Evaluation records are typed in ``heldout.analysis.records``.)"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heldout.analysis.records import EvalRecord


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


@dataclass
class RunResult:
    """What :meth:`Trainer.train` returns."""

    out: Path
    """The run folder."""
    step: int
    """Steps completed."""
    evaluations: list[EvalRecord] = field(default_factory=list)
    """Every evaluation record of the run (read back from ``evals.jsonl``)."""
    steps: list[StepResult] = field(default_factory=list)
    """Steps taken in this call."""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def truncate_logs(folder: Path, step: int) -> None:
    """Drop the records of ``steps.jsonl`` and ``evals.jsonl`` past ``step`` (the
    checkpoint a run resumes from), so the logs read as one uninterrupted run."""
    for name in ("steps.jsonl", "evals.jsonl"):
        path = folder / name
        kept = [r for r in read_jsonl(path) if r["step"] <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


@contextmanager
def kept_rng(devices: Sequence[Any] = ()) -> Iterator[None]:
    """Run a block without touching the run's random streams: torch's (CPU and
    ``devices``), numpy's and ``random``'s come back as they were (a monitored or resumed
    run stays exact)."""
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=list(devices)):
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def clone_bridge(model: Any) -> Any:
    """A frozen copy of a TransformerBridge (for the reference / base model)."""
    from heldout.models import load_model

    with torch.no_grad():  # replaces tensors cached by a grad-enabled forward
        model(torch.zeros((1, 2), dtype=torch.long,
                          device=next(model.parameters()).device))
    hf = copy.deepcopy(model.original_model)
    return load_model(hf, tokenizer=model.tokenizer,
                      device=str(next(model.parameters()).device))
