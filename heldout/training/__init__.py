"""Training against probes: penalized fine-tuning, the held-out monitor, checkpoints.

Names are imported lazily so that ``import heldout.training.commands`` (done by the
CLI at start-up) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config", "ProbeSpec": "config",
    "BoundProbe": "penalty", "bind_probe": "penalty", "penalty_value": "penalty",
    "Monitor": "monitor", "EvalSets": "monitor", "Labeler": "monitor",
    "Trainer": "trainer", "train": "trainer", "StepResult": "trainer",
    "RunResult": "trainer", "RunData": "trainer", "TaskBatch": "trainer",
    "TaskLoss": "trainer", "sft_loss": "trainer",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
    "latest_checkpoint": "checkpoint",
    "demo": "experiment", "run_pair": "experiment", "fit_organism_probes": "experiment",
    "OrganismLabeler": "experiment",
}

__all__ = ['BoundProbe', 'EvalSets', 'Labeler', 'Monitor', 'OrganismLabeler', 'ProbeSpec',
           'RunData', 'RunResult', 'StepResult', 'TaskBatch', 'TaskLoss', 'TrainConfig',
           'Trainer', 'bind_probe', 'demo', 'fit_organism_probes', 'latest_checkpoint',
           'load_checkpoint', 'penalty_value', 'run_pair', 'save_checkpoint', 'sft_loss',
           'train']


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'heldout.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"heldout.training.{_EXPORTS[name]}"), name)
