"""The atlas grid: which arms, probes and seeds ``heldout atlas`` runs on the organism.

A :class:`GridSpec` is a JSON file (``to_dict``/``from_dict``, ``save``/``load``): the
probes fitted on the base organism (:class:`ProbeKind`: site, probe kind, token
aggregation), the arms (:class:`Arm`: training mode, λ, β, which probes are trained
against, detector placement), the seeds and the shared loop settings. Every arm is
run once per seed; every probe that an arm does not train against watches it (held
out), as do probes retrained on each evaluation's model (the monitor does that).

The shipped grids are in :mod:`heldout.atlas.grids`. Bad values raise :class:`heldout.errors.ConfigError` before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from heldout.configs import checked_fields
from heldout.errors import ConfigError

ProbeKindName = Literal["logistic", "token_mean", "token_max", "attention", "multimax",
                        "rolling_attention"]
PROBE_KINDS: tuple[str, ...] = get_args(ProbeKindName)
ArmMode = Literal["gradient", "reward", "screening", "intervention"]
ARM_MODES: tuple[str, ...] = get_args(ArmMode)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _name(value: Any, what: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigError(f"{what} name {value!r} is not a plain name",
                          fix="use letters, digits, '-', '_' or '.' (it names a folder)")


@dataclass(frozen=True)
class ProbeKind:
    """A probe fitted on the base organism's ``train`` split, calibrated on ``control``."""

    name: str
    """Key used by arms and in the report, e.g. ``L2-last``."""
    site: str
    """Hook site, e.g. ``resid_post:2``."""
    kind: ProbeKindName = "logistic"
    """``logistic`` on one pooled vector; ``token_mean`` / ``token_max``: a logistic
    probe on every response token, token logits aggregated by mean / max;
    ``attention``: learned attention pooling over the response tokens; ``multimax``:
    several attention heads each pooled by a hard max (GDM 2026); ``rolling_attention``:
    attention pooled within sliding windows of response tokens, max over windows."""
    selection: str = "last"
    """``last``, ``mean``, ``prompt_last`` or ``token:K`` for ``logistic``; per-token kinds read ``tokens``."""

    def __post_init__(self) -> None:
        _name(self.name, "probe")
        if self.kind not in PROBE_KINDS:
            raise ConfigError(f"probe {self.name!r}: unknown kind {self.kind!r}",
                              fix=f"use one of {', '.join(PROBE_KINDS)}")
        if self.kind == "logistic" and (self.selection == "tokens"
                                        or self.selection not in ("last", "mean", "prompt_last")
                                        and not self.selection.startswith("token:")):
            raise ConfigError(f"probe {self.name!r}: a logistic probe reads 'last', 'mean' "
                              f"or 'token:K', got {self.selection!r}",
                              fix="use selection='last', 'mean' or e.g. 'token:5'")
        if self.kind != "logistic" and self.selection != "tokens":
            object.__setattr__(self, "selection", "tokens")
        from heldout.activations.sites import HookSite
        from heldout.errors import SiteError

        try:
            HookSite.parse(self.site)
        except SiteError as err:
            raise ConfigError(f"probe {self.name!r}: bad site {self.site!r} ({err.cause})",
                              fix="use e.g. resid_post:2") from err

    @property
    def aggregation(self) -> str:
        """How token evidence is pooled: last, mean, max or attention."""
        return {"token_mean": "mean", "token_max": "max", "attention": "attention",
                "multimax": "multimax", "rolling_attention": "rolling"}.get(
            self.kind, self.selection)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeKind:
        return cls(**checked_fields(cls, data, "ProbeKind"))


@dataclass(frozen=True)
class TextMonitorKind:
    """A rule text monitor of the grid: ``function(prompt, text)`` reads a response part."""

    name: str
    """Key used by arms and in the report, e.g. ``cot``."""
    function: str
    """``module:function`` returning a suspicion in [0, 1] (see heldout.monitors.rule)."""
    part: str = "all"
    """What it reads: ``cot``, ``answer`` or ``all`` of the response."""

    def __post_init__(self) -> None:
        _name(self.name, "text monitor")
        from heldout.monitors.rule import RuleMonitor
        from heldout.monitors.spec import TextMonitorSpec

        TextMonitorSpec(kind="rule", part=self.part, function=self.function,  # type: ignore[arg-type]
                        name=self.name)
        RuleMonitor(function=self.function)  # refuses an unimportable function now

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextMonitorKind:
        return cls(**checked_fields(cls, data, "TextMonitorKind"))


FINDINGS = ("F1", "F2", "F3", "F4", "F5", "F6")
"""The published findings an arm can speak to (heldout.atlas.findings states them)."""


@dataclass(frozen=True)
class Arm:
    """One training recipe of the grid (run once per seed)."""

    name: str
    """Folder and report name, e.g. ``gradient-one-layer``."""
    mode: ArmMode = "gradient"
    """``gradient`` (penalty through the probe), ``reward`` (probe score in a reward,
    no gradient through it) or ``intervention`` (flagged targets corrected)."""
    against: tuple[str, ...] = ()
    """Names of the grid's probes or text monitors trained against (empty: the control)."""
    weight: float = 0.0
    """λ of each probe trained against."""
    kl_weight: float = 0.0
    """β, weight of KL to the starting model."""
    detector: Literal["live", "frozen"] = "live"
    """Reward / intervention: probe on the current model (``live``) or on the frozen base
    model run on the current outputs (``frozen``)."""
    samples: int = 0
    """Reward mode: K samples per prompt; 0 = exact expectation over the answers."""
    penalty: str = "mean"
    """Gradient mode: penalty shape (``mean`` | ``max`` | ``neglog``)."""
    steps: int | None = None
    """Override of the grid's steps for this arm."""
    lr: float | None = None
    """Override of the grid's learning rate for this arm."""
    control: bool = False
    """The no-penalty control every other arm's verdict is judged against."""
    description: str = ""
    """One line for the report."""
    findings: tuple[str, ...] = ()
    """The findings (``F1``..``F6``) whose rules read this arm."""

    def __post_init__(self) -> None:
        _name(self.name, "arm")
        object.__setattr__(self, "against", tuple(self.against))
        object.__setattr__(self, "findings", tuple(self.findings))
        unknown = [f for f in self.findings if f not in FINDINGS]
        if unknown:
            raise ConfigError(f"arm {self.name!r}: unknown finding(s) {', '.join(unknown)}",
                              fix=f"use some of {', '.join(FINDINGS)}")
        if self.mode not in ARM_MODES:
            raise ConfigError(f"arm {self.name!r}: unknown mode {self.mode!r}",
                              fix=f"use one of {', '.join(ARM_MODES)}")
        if self.detector not in ("live", "frozen"):
            raise ConfigError(f"arm {self.name!r}: unknown detector {self.detector!r}",
                              fix="use 'live' or 'frozen'")
        if not self.weight >= 0 or not self.kl_weight >= 0:
            raise ConfigError(f"arm {self.name!r}: λ and β must be >= 0, got {self.weight}, "
                              f"{self.kl_weight}", fix="use non-negative weights")
        if self.control and self.against:
            raise ConfigError(f"control arm {self.name!r} trains against "
                              f"{', '.join(self.against)}",
                              fix="a control trains against nothing: empty 'against'")
        if self.against and self.weight == 0 and self.mode not in ("intervention", "screening"):
            raise ConfigError(f"arm {self.name!r} trains against probes with λ = 0",
                              fix="set weight > 0, or leave 'against' empty")
        if self.mode in ("intervention", "screening") and not self.against:
            raise ConfigError(f"{self.mode} arm {self.name!r} has no monitor to flag with",
                              fix="name a probe in 'against'")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"arm {self.name!r}: steps must be >= 1",
                              fix="omit it or use a positive number")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["against"] = list(self.against)
        data["findings"] = list(self.findings)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Arm:
        return cls(**checked_fields(cls, data, "Arm"))


@dataclass(frozen=True)
class GridSpec:
    """Arms × seeds on the organism, with the probes they train against or hold out."""

    probes: tuple[ProbeKind, ...]
    """Probes fitted on the base organism (all watch every arm)."""
    arms: tuple[Arm, ...]
    """Training recipes; exactly one has ``control=True``."""
    seeds: tuple[int, ...] = (0, 1)
    """Each arm runs once per seed (data order, fine-tuning draw, sampling)."""
    steps: int = 120
    """Optimizer steps per run (an arm may override)."""
    eval_every: int = 40
    """Monitor every N steps (and at 0 and the end)."""
    batch_size: int = 32
    """Sequences per step."""
    lr: float = 3e-4
    """Learning rate (an arm may override)."""
    n_train: int = 2000
    """Fine-tuning examples drawn per seed."""
    n_eval: int = 200
    """Rows of the test, control and forced sets the monitor uses."""
    fpr: float = 0.01
    """Thresholds at this false-positive rate on the control set."""
    bootstrap: int = 1000
    """Bootstrap resamples for the report's confidence intervals."""
    text_monitors: tuple[TextMonitorKind, ...] = ()
    """Rule text monitors (all watch every arm that does not train against them)."""
    organism: dict[str, Any] = field(default_factory=dict)
    """OrganismConfig overrides of the organism the grid runs on (default: the default
    organism)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "text_monitors", tuple(
            t if isinstance(t, TextMonitorKind) else TextMonitorKind.from_dict(t)
            for t in self.text_monitors))
        object.__setattr__(self, "organism", dict(self.organism))
        object.__setattr__(self, "probes", tuple(
            p if isinstance(p, ProbeKind) else ProbeKind.from_dict(p) for p in self.probes))
        object.__setattr__(self, "arms", tuple(
            a if isinstance(a, Arm) else Arm.from_dict(a) for a in self.arms))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        if not self.probes or not self.arms or not self.seeds:
            raise ConfigError("a grid needs at least one probe, one arm and one seed",
                              fix="list them in the grid spec")
        for what, names in (("probe", [p.name for p in self.probes]),
                            ("arm", [a.name for a in self.arms]),
                            ("monitor", [p.name for p in self.probes]
                             + [t.name for t in self.text_monitors])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ConfigError(f"two {what}s share the name(s) {', '.join(dupes)}",
                                  fix=f"give each {what} a distinct name")
        if len(set(self.seeds)) != len(self.seeds) or any(
                not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in self.seeds):
            raise ConfigError(f"seeds must be distinct integers >= 0, got {list(self.seeds)}",
                              fix="e.g. seeds=[0, 1]")
        known = {p.name for p in self.probes} | {t.name for t in self.text_monitors}
        texts = {t.name for t in self.text_monitors}
        for arm in self.arms:
            missing = [n for n in arm.against if n not in known]
            if missing:
                raise ConfigError(f"arm {arm.name!r} trains against unknown monitor(s) "
                                  f"{', '.join(missing)}",
                                  fix=f"use probe names of the grid: {', '.join(sorted(known))}")
            if arm.mode in ("gradient", "intervention") and texts & set(arm.against):
                raise ConfigError(f"{arm.mode} arm {arm.name!r} trains against a text monitor",
                                  fix="text monitors enter training only by reward or "
                                      "screening: set mode='reward' or 'screening'")
        from heldout.organism.config import OrganismConfig

        OrganismConfig.from_dict(dict(self.organism))  # bad overrides refused here
        controls = [a.name for a in self.arms if a.control]
        if len(controls) != 1:
            raise ConfigError(f"a grid needs exactly one control arm, found {len(controls)}",
                              fix="mark the no-penalty arm with control=true")
        for name in ("steps", "eval_every", "batch_size", "n_train", "n_eval", "bootstrap"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"GridSpec.{name} must be an integer >= 1, got {value!r}",
                                  fix=f"set {name} to a positive integer")
        if not self.lr > 0 or not 0 < self.fpr < 1:
            raise ConfigError(f"GridSpec needs lr > 0 and 0 < fpr < 1, got {self.lr}, "
                              f"{self.fpr}", fix="use e.g. lr=3e-4, fpr=0.01")

    @property
    def control(self) -> Arm:
        return next(a for a in self.arms if a.control)

    def probe(self, name: str) -> ProbeKind:
        return next(p for p in self.probes if p.name == name)

    def is_text(self, name: str) -> bool:
        """Whether ``name`` is one of the grid's text monitors (else a probe)."""
        return any(t.name == name for t in self.text_monitors)

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise ConfigError(f"the grid has no arm {name!r}",
                          fix=f"use one of {', '.join(a.name for a in self.arms)}")

    def select(self, arms: list[str] | None = None, seeds: list[int] | None = None
               ) -> GridSpec:
        """The grid restricted to some arms (the control is always kept) and seeds."""
        kept = self.arms if not arms else tuple(
            a for a in self.arms if a.name in arms or a.control)
        if arms:
            for name in arms:
                self.arm(name)
        return replace(self, arms=kept, seeds=tuple(seeds) if seeds else self.seeds)

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)
                   if f.name not in ("probes", "arms", "seeds", "text_monitors")},
                "text_monitors": [t.to_dict() for t in self.text_monitors],
                "probes": [p.to_dict() for p in self.probes],
                "arms": [a.to_dict() for a in self.arms], "seeds": list(self.seeds)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridSpec:
        data = checked_fields(cls, data, "GridSpec")
        for key in ("probes", "arms"):
            if key not in data:
                raise ConfigError(f"the grid spec has no {key!r}", fix=f"list the {key}")
        data["probes"] = tuple(ProbeKind.from_dict(p) for p in data["probes"])
        data["arms"] = tuple(Arm.from_dict(a) for a in data["arms"])
        data["seeds"] = tuple(data.get("seeds", (0, 1)))
        data["text_monitors"] = tuple(TextMonitorKind.from_dict(t)
                                      for t in data.get("text_monitors", ()))
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GridSpec:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"grid spec {str(p)!r} does not exist",
                              fix="check the path, or use --quick / the default grid")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{p} is not valid JSON ({err})", fix="fix the file") from err
        return cls.from_dict(data)

    def probes_fingerprint(self) -> str:
        """Hash of the probe list and the FPR (the fitted probes depend on nothing else)."""
        blob = json.dumps({"probes": [p.to_dict() for p in self.probes], "fpr": self.fpr,
                           **({"organism": self.organism} if self.organism else {})},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]
