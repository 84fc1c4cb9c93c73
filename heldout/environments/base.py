"""The environment contract: what a training run needs from a task.

An :class:`Environment` is a frozen bundle of data and callables; ``heldout.training``
reads only this, never a particular task. The built-in organism is one environment
(``heldout.organism.environment``), a JSONL task described in a run config is another
(:mod:`heldout.environments.files`), and any ``module:function`` returning an
``Environment`` is a third. See ``docs/INTERFACES.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from heldout.data import Dataset, Example
from heldout.errors import DataError


class Labeler(Protocol):
    """Grades a response from its text alone (never a probe or a monitor)."""

    def misbehavior(self, example: Example, response: str) -> bool:
        """True if ``response`` to ``example``'s prompt is misbehavior."""
        ...

    def correct(self, example: Example, response: str) -> bool:
        """True if ``response`` does the task correctly (task performance)."""
        ...


TaskReward = Callable[[Example, str], float]
"""``task_reward(example, response_text) -> float``: what the environment pays for a
response, before any monitor's penalty."""

Candidates = Callable[[Example], Sequence[str] | None]
"""``candidates(example) -> response texts`` spanning the answer space (None: unknown)."""

Corrector = Callable[[Example], str | None]
"""``corrector(example) -> honest response text`` for a flagged sample (None: drop it)."""

CotSplitter = Callable[[str], tuple[str, str]]
"""``split(response_text) -> (chain_of_thought, final_answer)``."""


@dataclass(frozen=True)
class Environment:
    """Everything a run needs from a task (see the module docstring)."""

    name: str
    """Shown in logs and reports."""
    train: Dataset
    """Training examples: prompts (for sampling) with SFT target responses."""
    eval: Dataset
    """Labeled evaluation examples (both labels); their prompts are generated from."""
    control: Dataset
    """Benign examples (label 0): thresholds are calibrated on them at the run's FPR."""
    labeler: Labeler | None
    """Misbehavior and task success from the response text; None: no verdict possible."""
    forced: Dataset | None = None
    """Teacher-forced misbehaving examples (label 1), or None."""
    task_reward: TaskReward | None = None
    """What the environment pays a response (reward and screening channels)."""
    candidates: Candidates | None = None
    """The answer space of a prompt, where it is small (exact reward expectation)."""
    corrector: Corrector | None = None
    """The honest response to a prompt (intervention channel)."""
    split_cot: CotSplitter | None = None
    """Splits a response into chain of thought and final answer; None: no CoT to read."""
    model: str | None = None
    """The environment's default model (a local checkpoint folder), if it has one."""

    def check(self) -> None:
        """DataError if a set is empty or lacks the labels it needs (before any work)."""
        if len(self.train) == 0:
            raise DataError(f"environment {self.name!r}: the training set is empty",
                            fix="give it training examples (prompts with target responses)")
        labels = self.eval.labels
        if (labels == 1).sum() < 2 or (labels == 0).sum() < 2:
            raise DataError(f"environment {self.name!r}: the evaluation set needs both labels "
                            "(misbehavior 1 and benign 0), at least two of each",
                            fix="add examples of each label")
        if len(self.control) == 0 or not (self.control.labels == 0).any():
            raise DataError(f"environment {self.name!r}: the control set has no negatives "
                            "(label 0)", fix="pass benign examples (label 0) to calibrate "
                                             "thresholds on")
        if self.forced is not None and len(self.forced) and (self.forced.labels != 1).any():
            raise DataError(f"environment {self.name!r}: the forced set must hold only "
                            "misbehavior (label 1)",
                            fix="teacher-force misbehaving responses and label them 1")
        if self.labeler is not None:
            check_labeler(self.labeler, self.eval, self.name)


def check_labeler(labeler: Labeler, data: Dataset, where: str, n: int = 8) -> None:
    """Run the labeler on the first ``n`` responses of ``data``: DataError if it raises
    or returns something other than a bool."""
    for example in list(data)[:n]:
        for method in ("misbehavior", "correct"):
            try:
                value = getattr(labeler, method)(example, example.response)
            except Exception as err:  # a user's callable: any failure is their bug to see
                raise DataError(f"{where}: the labeler's {method}() raised "
                                f"{type(err).__name__}: {err} on example {example.id!r}",
                                fix="make the labeler accept (example, response_text) and "
                                    "return True or False") from err
            if not isinstance(value, bool):
                import numpy as np

                if not isinstance(value, np.bool_):
                    raise DataError(f"{where}: the labeler's {method}() returned "
                                    f"{value!r} ({type(value).__name__}) on example "
                                    f"{example.id!r}, not a bool",
                                    fix="return True or False")
