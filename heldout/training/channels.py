"""Channels: how a proxy trained against enters training (``TrainConfig.mode``).

``gradient`` is the trainer's own loss (through the probe, probes only); the others
are step plugins built here from the run's environment:
``reward`` and ``screening`` (:mod:`heldout.training.reward`) and ``intervention``
(:mod:`heldout.training.intervention`). ConfigError before any work when the
environment lacks what the channel needs.
"""

from __future__ import annotations

from typing import Any

from heldout.environments.base import Environment
from heldout.errors import ConfigError
from heldout.training.step import StepLoss


def make_step_loss(config: Any, env: Environment) -> StepLoss | None:
    """The step plugin for ``config.mode`` in ``env`` (None for ``gradient``)."""
    if config.mode == "gradient":
        return None
    if config.mode in ("reward", "screening"):
        from heldout.training.reward import RewardStep

        if env.task_reward is None:
            raise ConfigError(f"the {config.mode} channel needs a task reward, and environment "
                              f"{env.name!r} has none",
                              fix="give the environment a task_reward ({\"pattern\": REGEX} "
                                  "or 'module:function' in a file environment)")
        if config.reward_samples == 0 and env.candidates is None:
            raise ConfigError(f"reward_samples=0 enumerates the answer space, which "
                              f"environment {env.name!r} does not give",
                              fix="set reward_samples=K >= 2 to sample K responses per "
                                  "prompt, or give the environment candidates")
        return RewardStep(task_reward=env.task_reward, candidates=env.candidates,
                          samples=config.reward_samples, detector=config.reward_detector,
                          temperature=config.reward_temperature, top_p=config.reward_top_p,
                          screening=config.mode == "screening", labeler=env.labeler)
    from heldout.training.intervention import InterventionStep

    return InterventionStep(corrector=env.corrector, detector=config.reward_detector)
