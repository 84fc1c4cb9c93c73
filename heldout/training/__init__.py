"""Training against proxies in any environment: channels, the held-out monitor, checkpoints.

Names are imported lazily so that ``import heldout.training.commands`` (done by the
CLI at start-up) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config", "ProbeSpec": "config",
    "BoundProbe": "penalty", "bind_probe": "penalty", "penalty_value": "penalty",
    "BoundText": "proxies", "bind_text_monitor": "proxies",
    "Monitor": "monitor", "EvalSets": "monitor",
    "Trainer": "trainer", "train": "trainer", "StepResult": "records",
    "RunResult": "records",
    "StepContext": "step", "StepOutput": "step", "StepLoss": "step", "TaskBatch": "step",
    "TaskLoss": "step", "sft_loss": "step",
    "make_step_loss": "channels", "RewardStep": "reward", "InterventionStep": "intervention",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
    "latest_checkpoint": "checkpoint",
    # TRL: monitors as GRPO rewards, the held-out battery as a TrainerCallback
    "HeldoutCallback": "trl_callback", "probe_reward": "trl_rewards",
    "text_monitor_reward": "trl_rewards", "task_reward_function": "trl_rewards",
    "grpo_dataset": "trl_rewards", "HFHookedModel": "hf_hooks",
}

__all__ = ['BoundProbe', 'BoundText', 'EvalSets', 'HFHookedModel', 'HeldoutCallback',
           'InterventionStep', 'Monitor', 'ProbeSpec', 'RewardStep', 'RunResult',
           'StepContext', 'StepLoss', 'StepOutput', 'StepResult', 'TaskBatch', 'TaskLoss',
           'TrainConfig', 'Trainer', 'bind_probe', 'bind_text_monitor', 'grpo_dataset',
           'latest_checkpoint', 'load_checkpoint', 'make_step_loss', 'penalty_value',
           'probe_reward', 'save_checkpoint', 'sft_loss', 'task_reward_function',
           'text_monitor_reward', 'train']


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'heldout.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"heldout.training.{_EXPORTS[name]}"), name)
