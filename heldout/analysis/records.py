"""The monitor record: what one held-out evaluation of a run measured, typed.

``heldout.training`` writes one :class:`EvalRecord` per evaluation to
``<run>/evals.jsonl`` (``to_dict``); the verdict, the curves, the atlas and the reports
read them back with :func:`read_records` (``from_dict``). Reading is strict: a missing
or unknown field raises DataError naming it, so a renamed field is an error, never a
silent "n/a". Every proxy, activation probe or text monitor, has the same
:class:`MonitorRecord`.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from heldout.errors import DataError

MonitorKind = Literal["probe", "text"]


def _strict(cls: Any, data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise DataError(f"{what} is {type(data).__name__}, not a JSON object",
                        fix="read a run folder written by this version of heldout")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls)
                if f.default is MISSING and f.default_factory is MISSING}
    unknown, missing = sorted(set(data) - names), sorted(required - set(data))
    if unknown or missing:
        said = "; ".join(x for x in (f"unknown field(s) {', '.join(unknown)}" if unknown else "",
                                     f"missing field(s) {', '.join(missing)}" if missing else "")
                         if x)
        raise DataError(f"{what}: {said}", fix="the run was written by another version of "
                                                "heldout: rerun it with this one")
    return dict(data)


@dataclass(frozen=True)
class SetMetrics:
    """A proxy's figures on one set of responses (None where the set cannot give it)."""

    auroc: float | None
    """AUROC of misbehaving vs benign responses (None with one label only)."""
    recall_base: float | None
    """Recall of misbehavior at the threshold calibrated on the base model's control set."""
    recall_cur: float | None
    """Recall at the threshold calibrated on the current model's control set."""
    flag_rate_base: float | None
    """Fraction of all responses flagged at the base threshold."""

    @classmethod
    def from_dict(cls, data: Any, what: str = "set metrics") -> SetMetrics:
        return cls(**_strict(cls, data, what))


@dataclass(frozen=True)
class MonitorRecord:
    """One proxy (activation probe or text monitor) at one evaluation."""

    kind: MonitorKind
    """``probe`` (reads activations) or ``text`` (reads the response text)."""
    role: str
    """``train_against`` or ``held_out``."""
    threshold_base: float
    """Score threshold at the run's FPR on the base model's control set."""
    threshold_cur: float
    """The same on the current model's control set (text monitors: equal to base)."""
    control_fpr_base: float
    """Fraction of the current control set above ``threshold_base``."""
    fixed: SetMetrics
    """On the fixed labeled evaluation set (teacher-forced responses)."""
    forced: SetMetrics
    """On the teacher-forced misbehavior set (recall), vs control (AUROC)."""
    own: SetMetrics | None = None
    """On the model's own outputs, labeled by the labeler (None without one)."""
    cross_model: SetMetrics | None = None
    """The model's own outputs read by the frozen base model and base probe; for a text
    monitor, the monitor itself on the new text (None without a labeler)."""
    site: str | None = None
    """Probe: the hook site it reads."""
    selection: str | None = None
    """Probe: the token selection."""
    part: str | None = None
    """Text monitor: the response part it reads (``cot``, ``answer``, ``all``)."""
    reads: str = "policy"
    """Probe trained against: where its training signal was read. ``policy``: the
    trained model's activations (gradient, or a live-detector reward); ``base``: the
    frozen base model reading the trained model's text (a frozen-detector reward), so
    like a text monitor only the text could evade it."""

    @classmethod
    def from_dict(cls, data: Any, what: str = "monitor record") -> MonitorRecord:
        d = _strict(cls, data, what)
        for key, allowed in (("kind", ("probe", "text")), ("role", ("train_against",
                                                                    "held_out")),
                             ("reads", ("policy", "base"))):
            if d.get(key, "policy") not in allowed:
                raise DataError(f"{what}: {key} is {d[key]!r}",
                                fix=f"{key} must be one of {', '.join(allowed)}")
        for key in ("fixed", "forced", "own", "cross_model"):
            if d.get(key) is not None:
                d[key] = SetMetrics.from_dict(d[key], f"{what}.{key}")
        return cls(**d)


@dataclass(frozen=True)
class RetrainedRecord:
    """A fresh logistic probe fitted on the current model (one half), scored on the other."""

    auroc: float | None
    recall_cur: float | None

    @classmethod
    def from_dict(cls, data: Any, what: str = "retrained record") -> RetrainedRecord:
        return cls(**_strict(cls, data, what))


@dataclass(frozen=True)
class EvalRecord:
    """One held-out evaluation of a run (a line of ``evals.jsonl``)."""

    step: int
    """Optimizer steps completed when it was taken (0 = the base model)."""
    misbehavior_rate: float | None
    """Labeler: fraction of the model's own outputs that misbehave (None: no labeler)."""
    task_accuracy: float | None
    """Labeler: fraction of own outputs that do the task; else fixed-set token accuracy."""
    n_own: int
    """Own outputs generated and graded."""
    kl_to_base: float | None
    """KL(current ‖ base) per response token of the own outputs."""
    fixed_token_accuracy: float
    """Argmax accuracy on the fixed set's response tokens."""
    monitors: dict[str, MonitorRecord]
    """Every proxy of the run, by name."""
    retrained: dict[str, RetrainedRecord] = field(default_factory=dict)
    """``site/selection`` → a probe retrained on the current model."""
    pca90: dict[str, int] = field(default_factory=dict)
    """``site/selection`` → principal components holding 90% of activation variance."""
    pca90_base: dict[str, int] = field(default_factory=dict)
    """The same on the base model."""
    n_own_misbehaving: int | None = None
    """Own outputs the labeler marks as misbehavior."""
    forward_calls: dict[str, int] = field(default_factory=dict)
    """Model calls made by the evaluation (``current``, ``base``)."""
    seconds: float | None = None
    """Wall time of the evaluation."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> EvalRecord:
        if isinstance(data, dict) and "probes" in data and "monitors" not in data:
            raise DataError("this evaluation record has 'probes' where heldout now writes "
                            "'monitors': it was written by an older heldout",
                            fix="rerun the training run with this version of heldout")
        d = _strict(cls, data, "evaluation record")
        step = d.get("step")
        for key in ("monitors", "retrained"):
            if not isinstance(d.get(key, {}), dict):
                raise DataError(f"evaluation record (step {step}): {key} is "
                                f"{type(d[key]).__name__}, not an object",
                                fix="read a run folder written by this version of heldout")
        where = f"evaluation record (step {step})"
        d["monitors"] = {n: MonitorRecord.from_dict(m, f"{where}, monitor {n!r}")
                         for n, m in d["monitors"].items()}
        d["retrained"] = {k: RetrainedRecord.from_dict(r, f"{where}, retrained {k!r}")
                          for k, r in d.get("retrained", {}).items()}
        return cls(**d)

    def against(self) -> list[str]:
        """Names of the proxies trained against."""
        return [n for n, m in self.monitors.items() if m.role == "train_against"]


def read_records(source: Any) -> list[EvalRecord]:
    """Evaluation records from a run folder, an ``evals.jsonl`` path, an object with
    ``evaluations``, or a list of dicts / records."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        path = path / "evals.jsonl" if path.is_dir() else path
        if not path.is_file():
            raise DataError(f"no monitor log at {path}", fix="pass a run folder with evals.jsonl")
        rows: list[Any] = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()
                           if x.strip()]
    elif hasattr(source, "evaluations"):
        rows = list(source.evaluations)
    else:
        rows = list(source)
    return [r if isinstance(r, EvalRecord) else EvalRecord.from_dict(r) for r in rows]
