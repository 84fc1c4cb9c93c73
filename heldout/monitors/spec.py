"""How a run names a text monitor: a small frozen dataclass, JSON round-trip."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from heldout.configs import checked_fields
from heldout.errors import ConfigError
from heldout.monitors.base import Part, check_part

TextKind = Literal["rule", "classifier", "judge"]
TEXT_KINDS: tuple[str, ...] = get_args(TextKind)


@dataclass(frozen=True)
class TextMonitorSpec:
    """One text monitor in a run (``TrainConfig.monitors``)."""

    kind: TextKind
    """``rule`` (a regex or a ``module:function``), ``classifier`` (a saved TF-IDF
    classifier) or ``judge`` (an LM asked a yes/no question)."""
    part: Part | None = None
    """What it reads: ``cot``, ``answer`` or ``all`` of the response (required)."""
    role: Literal["train_against", "held_out"] = "held_out"
    """``train_against``: enters training through the run's channel; ``held_out``: watches."""
    weight: float = 0.0
    """λ: reward channel: the score subtracted from the task reward, times λ."""
    name: str | None = None
    """Name in logs and reports; default ``text/<kind>-<part>``."""
    pattern: str | None = None
    """rule: a regex; a response part that matches (``re.search``) is flagged (score 1)."""
    function: str | None = None
    """rule: ``module:function`` on the Python path, ``f(prompt, text) -> bool | float``."""
    path: str | None = None
    """classifier: the file written by ``TextClassifierMonitor.save`` (``.safetensors``)."""
    judge_model: str | None = None
    """judge: a local checkpoint folder, or ``"base"`` for the run's starting model."""
    question: str | None = None
    """judge: the question, with ``{prompt}`` and ``{text}`` fields; default in
    ``heldout.monitors.judge.DEFAULT_QUESTION``."""
    yes: str = " Yes"
    """judge: the answer word whose probability is the score (one token)."""
    no: str = " No"
    """judge: the other answer word (one token)."""

    def __post_init__(self) -> None:
        if self.kind not in TEXT_KINDS:
            raise ConfigError(f"unknown text monitor kind {self.kind!r}",
                              fix=f"use one of {', '.join(TEXT_KINDS)}")
        check_part(self.part, self.label)
        if self.role not in ("train_against", "held_out"):
            raise ConfigError(f"unknown monitor role {self.role!r}",
                              fix="use train_against or held_out")
        if not isinstance(self.weight, (int, float)) or not self.weight >= 0:
            raise ConfigError(f"text monitor {self.label!r}: weight λ must be >= 0, got "
                              f"{self.weight!r}", fix="use a weight >= 0")
        if self.role == "held_out" and self.weight:
            raise ConfigError(f"held-out text monitor {self.label!r} has weight {self.weight}",
                              fix="set role='train_against' to train against it, or weight=0")
        need = {"rule": ("pattern", "function"), "classifier": ("path",),
                "judge": ("judge_model",)}[self.kind]
        if not any(getattr(self, f) for f in need):
            raise ConfigError(f"text monitor {self.label!r} ({self.kind}) needs "
                              f"{' or '.join(need)}",
                              fix=f"set {need[0]} in its spec")
        if self.kind == "rule" and self.pattern and self.function:
            raise ConfigError(f"rule monitor {self.label!r} has both a pattern and a function",
                              fix="give one of them")

    @property
    def label(self) -> str:
        return self.name or f"text/{self.kind}-{self.part}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextMonitorSpec:
        return cls(**checked_fields(cls, data, "TextMonitorSpec"))
