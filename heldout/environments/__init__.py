"""Environments: the tasks a training run is pointed at.

``base`` holds the contract (:class:`Environment`, :class:`Labeler`), ``files`` the
environment a run config describes with JSONL sets and a labeler rule, ``resolve``
the step from a config to an environment.
"""

from heldout.environments.base import (
    Candidates,
    Corrector,
    CotSplitter,
    Environment,
    Labeler,
    TaskReward,
    check_labeler,
)
from heldout.environments.files import FileEnvironmentSpec, RegexLabeler, make_labeler
from heldout.environments.resolve import (
    ORGANISM,
    is_organism_model,
    model_source,
    resolve_environment,
)

__all__ = ["ORGANISM", "Candidates", "Corrector", "CotSplitter", "Environment",
           "FileEnvironmentSpec", "Labeler", "RegexLabeler", "TaskReward", "check_labeler",
           "is_organism_model", "make_labeler", "model_source",
           "resolve_environment"]
