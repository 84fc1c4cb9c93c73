"""Environments: the tasks a training run is pointed at (``heldout.environments.base``)."""

from heldout.environments.base import (
    Candidates,
    Corrector,
    CotSplitter,
    Environment,
    Labeler,
    TaskReward,
    check_labeler,
)

__all__ = ["Candidates", "Corrector", "CotSplitter", "Environment", "Labeler", "TaskReward",
           "check_labeler"]
