"""An environment described in a run config: JSONL sets plus a labeler rule.

::

    "environment": {
      "name": "my-task",
      "train": "data/train.jsonl", "eval": "data/eval.jsonl",
      "control": "data/control.jsonl", "forced": "data/forced.jsonl",
      "labeler": {"misbehavior": "REGEX", "correct": "REGEX"},
      "task_reward": {"pattern": "REGEX"},
      "cot_pattern": "REGEX"
    }

- ``labeler``: either regexes over the response (misbehavior where ``misbehavior``
  matches; correct where ``correct`` matches, or where misbehavior does not if it is
  left out), or ``"module:attribute"`` naming a labeler object (``misbehavior`` and
  ``correct`` methods), a class to instantiate, or a function
  ``f(example, response) -> bool`` for misbehavior (correct = not misbehavior).
- ``task_reward`` (optional): ``{"pattern": REGEX}`` pays 1 where it matches, else 0;
  or ``"module:function"``, ``f(example, response) -> float``.
- ``candidates`` / ``corrector`` (optional): ``"module:function"``.
- ``cot_pattern`` (optional): the chain of thought is the text before the first match,
  the final answer the text after it (text monitors can then read ``cot`` or ``answer``).

Paths are relative to the working directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from heldout.configs import checked_fields
from heldout.data import Example, load_dataset
from heldout.environments.base import Environment, Labeler
from heldout.errors import ConfigError
from heldout.imports import import_object


def _regex(pattern: Any, what: str) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise ConfigError(f"{what} must be a regex string, got {pattern!r}",
                          fix="write the pattern as a JSON string")
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"{what} {pattern!r} is not a valid regex ({err})",
                          fix="fix the pattern (remember to double backslashes in JSON)") from err


@dataclass(frozen=True)
class RegexLabeler:
    """Misbehavior and task success from regexes over the response text."""

    misbehavior_pattern: re.Pattern[str]
    correct_pattern: re.Pattern[str] | None = None

    def misbehavior(self, example: Example, response: str) -> bool:
        return self.misbehavior_pattern.search(response) is not None

    def correct(self, example: Example, response: str) -> bool:
        if self.correct_pattern is None:
            return not self.misbehavior(example, response)
        return self.correct_pattern.search(response) is not None


@dataclass(frozen=True)
class FunctionLabeler:
    """A misbehavior function as a labeler (correct = not misbehavior)."""

    function: Any

    def misbehavior(self, example: Example, response: str) -> bool:
        return self.function(example, response)  # type: ignore[no-any-return]

    def correct(self, example: Example, response: str) -> bool:
        return not self.function(example, response)


@dataclass(frozen=True)
class PatternReward:
    """Pays 1.0 where the pattern matches the response, else 0.0."""

    pattern: re.Pattern[str]

    def __call__(self, example: Example, response: str) -> float:
        return float(self.pattern.search(response) is not None)


@dataclass(frozen=True)
class CotSplit:
    """Chain of thought before the first match of ``pattern``, answer after it."""

    pattern: re.Pattern[str]

    def __call__(self, text: str) -> tuple[str, str]:
        m = self.pattern.search(text)
        return (text[:m.start()].strip(), text[m.end():].strip()) if m else ("", text.strip())


def make_labeler(spec: Any) -> Labeler:
    """A labeler from its config form (module docstring)."""
    if isinstance(spec, dict):
        fields = checked_fields(_LabelerFields, spec, "labeler")
        if "misbehavior" not in fields:
            raise ConfigError("the labeler rule has no 'misbehavior' regex",
                              fix='write "labeler": {"misbehavior": "REGEX"}')
        correct = fields.get("correct")
        return RegexLabeler(_regex(fields["misbehavior"], "labeler misbehavior"),
                            None if correct is None else _regex(correct, "labeler correct"))
    if isinstance(spec, str):
        obj = import_object(spec, "labeler")
        if isinstance(obj, type):
            obj = obj()
        if hasattr(obj, "misbehavior") and hasattr(obj, "correct"):
            return obj  # type: ignore[no-any-return]
        if callable(obj):
            return FunctionLabeler(obj)
        raise ConfigError(f"labeler {spec!r} is neither a labeler nor a function",
                          fix="point to an object with misbehavior() and correct(), or to a "
                              "function f(example, response) -> bool")
    raise ConfigError(f"labeler {spec!r} is neither a rule nor 'module:attribute'",
                      fix='write {"misbehavior": "REGEX"} or "package.module:labeler"')


@dataclass(frozen=True)
class _LabelerFields:
    misbehavior: str
    correct: str | None = None


@dataclass(frozen=True)
class FileEnvironmentSpec:
    """The JSON form of a file-defined environment (module docstring)."""

    train: str
    eval: str
    control: str
    labeler: Any = None
    forced: str | None = None
    name: str = "files"
    task_reward: Any = None
    candidates: str | None = None
    corrector: str | None = None
    cot_pattern: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> FileEnvironmentSpec:
        fields = checked_fields(cls, data, "environment")
        missing = [k for k in ("train", "eval", "control") if not fields.get(k)]
        if missing:
            raise ConfigError(f"the environment names no {', '.join(missing)} set",
                              fix="give JSONL paths for train, eval and control")
        return cls(**fields)

    def build(self) -> Environment:
        """Load the sets and resolve every callable (errors before any training)."""
        reward: Any = None
        if isinstance(self.task_reward, dict):
            reward = PatternReward(_regex(self.task_reward.get("pattern"), "task_reward pattern"))
        elif isinstance(self.task_reward, str):
            reward = import_object(self.task_reward, "task_reward")
        elif self.task_reward is not None:
            raise ConfigError(f"task_reward {self.task_reward!r} is neither a rule nor "
                              "'module:function'",
                              fix='write {"pattern": "REGEX"} or "package.module:reward"')
        return Environment(
            name=self.name, train=load_dataset(self.train), eval=load_dataset(self.eval),
            control=load_dataset(self.control),
            forced=load_dataset(self.forced) if self.forced else None,
            labeler=None if self.labeler is None else make_labeler(self.labeler),
            task_reward=reward,
            candidates=import_object(self.candidates, "candidates") if self.candidates else None,
            corrector=import_object(self.corrector, "corrector") if self.corrector else None,
            split_cot=CotSplit(_regex(self.cot_pattern, "cot_pattern"))
            if self.cot_pattern else None)
