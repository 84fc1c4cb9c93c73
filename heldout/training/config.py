"""Configuration of a penalized fine-tuning run: small frozen dataclasses.

A run is reproducible from its saved ``config.json``: :class:`TrainConfig` names the
model, the data, every probe (trained against or held out) and the loop settings.
``to_dict``/``from_dict`` round-trip through JSON; unknown fields and bad values raise
:class:`heldout.errors.ConfigError` before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from heldout.configs import checked_fields
from heldout.environments.resolve import ORGANISM
from heldout.errors import ConfigError
from heldout.monitors.spec import TextMonitorSpec

Role = Literal["train_against", "held_out"]
PenaltyShape = Literal["mean", "max", "neglog"]
Schedule = Literal["constant", "linear", "cosine"]
Mode = Literal["gradient", "reward", "screening", "intervention"]
Detector = Literal["live", "frozen"]
DType = Literal["float32", "bfloat16", "float16"]
Device = Literal["cpu", "cuda", "auto"]
DTYPES: tuple[str, ...] = get_args(DType)
DEVICES: tuple[str, ...] = get_args(Device)
ROLES: tuple[str, ...] = get_args(Role)
MODES: tuple[str, ...] = get_args(Mode)
DETECTORS: tuple[str, ...] = get_args(Detector)
PENALTY_SHAPES: tuple[str, ...] = get_args(PenaltyShape)
SCHEDULES: tuple[str, ...] = get_args(Schedule)

def _choice(value: Any, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}", fix=f"use one of {', '.join(choices)}")


@dataclass(frozen=True)
class ProbeSpec:
    """One probe in a run: where it reads, whether it is trained against, how it penalizes."""

    path: str
    """A probe file written by ``heldout.probes.save_probe`` (``.safetensors``)."""
    role: Role = "held_out"
    """``train_against``: its score is a penalty in the loss; ``held_out``: it only watches."""
    weight: float = 0.0
    """λ, the penalty weight (``train_against`` only; must be >= 0)."""
    penalty: PenaltyShape = "mean"
    """Penalty shape over the probe's selected tokens: ``mean`` probability, ``max``
    probability per example, or ``neglog`` = mean of -log(1 - p)."""
    site: str | None = None
    """Hook site such as ``resid_post:2``; default the site saved in the probe file."""
    selection: str | None = None
    """Token selection ``last`` | ``mean`` | ``token:K`` | ``tokens``; default the probe
    file's, else ``last``."""
    name: str | None = None
    """Name in logs and plots; default ``<role>/<file stem>``."""

    def __post_init__(self) -> None:
        _choice(self.role, ROLES, "probe role")
        _choice(self.penalty, PENALTY_SHAPES, "penalty shape")
        if not isinstance(self.weight, (int, float)) or self.weight != self.weight \
                or self.weight < 0:
            raise ConfigError(f"probe {self.path!r}: penalty weight λ must be >= 0, got "
                              f"{self.weight!r}", fix="use a weight >= 0 (0 = watch only)")
        if self.role == "held_out" and self.weight:
            raise ConfigError(f"held-out probe {self.path!r} has weight {self.weight}",
                              fix="set role='train_against' to penalize it, or weight=0")

    @property
    def label(self) -> str:
        return self.name or f"{'against' if self.role == 'train_against' else 'heldout'}/" \
                            f"{Path(self.path).stem}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeSpec:
        return cls(**checked_fields(cls, data, "ProbeSpec"))


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a penalized fine-tuning run and its monitor."""

    model: str = ORGANISM
    """A local HF checkpoint folder, or ``"organism"`` for the environment's default
    model (the built-in model organism for the organism environment)."""
    environment: str | dict[str, Any] | None = None
    """The task (``heldout.environments.resolve``): ``"organism"``, ``"module:function"``,
    a file-defined environment (a mapping: JSONL sets + labeler rule), or None (the
    organism for an organism model; else ``train_data``/``eval_data``/``control_data``
    without a labeler)."""
    out: str = "runs/run"
    """Run folder: config, logs, checkpoints, final probes, verdict, plots."""
    probes: tuple[ProbeSpec, ...] = ()
    """Activation probes trained against and held out."""
    monitors: tuple[TextMonitorSpec, ...] = ()
    """Text monitors (rule, classifier, LM judge) trained against and held out."""
    train_data: str | None = None
    """Replaces the environment's training set (JSONL: messages/prompt + response)."""
    eval_data: str | None = None
    """Replaces the environment's labeled evaluation set (both labels)."""
    control_data: str | None = None
    """Replaces the environment's benign (label 0) control set."""
    forced_data: str | None = None
    """Replaces the environment's teacher-forced misbehavior set (label 1)."""
    n_train: int = 2000
    """Organism only: fine-tuning examples drawn."""
    n_eval: int = 200
    """Rows used from each of the evaluation, control and forced sets (0 = all)."""
    steps: int = 200
    """Optimizer steps."""
    batch_size: int = 32
    """Sequences per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    schedule: Schedule = "constant"
    """Learning rate after warm-up: ``constant``, ``linear`` or ``cosine`` decay to 0."""
    warmup_steps: int = 0
    """Steps of linear warm-up."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 = no clipping)."""
    kl_weight: float = 0.0
    """β, weight of KL(current ‖ frozen starting model) on response tokens."""
    train_from_layer: int | None = None
    """Fine-tune only blocks >= this layer; None = all weights."""
    dropout: bool = False
    """Keep the model's dropout active while training (default off: deterministic)."""
    eval_every: int = 50
    """Run the held-out monitor every N steps (and at step 0 and the last step)."""
    checkpoint_every: int = 50
    """Write a checkpoint every N steps (and at the last step); 0 = only at the end."""
    keep_checkpoints: int = 2
    """How many most recent checkpoints to keep."""
    fpr: float = 0.01
    """False-positive rate at which thresholds are calibrated on the control set."""
    max_new_tokens: int = 8
    """Generation length when the monitor samples the model's own outputs."""
    seed: int = 0
    """Seed of the data order, torch and Python RNGs."""
    plots: bool = True
    """Write PNGs of every monitored curve at the end of the run (``<out>/plots``)."""
    tensorboard: bool = False
    """Also write the training scalars as TensorBoard events under ``<out>/tensorboard``
    (needs ``pip install 'heldout[tensorboard]'``; see ``heldout.training.tensorboard``)."""
    organism: dict[str, Any] = field(default_factory=dict)
    """Organism only: ``OrganismConfig`` fields that differ from the defaults."""
    mode: Mode = "gradient"
    """The channel through which proxies trained against act (``heldout.training.channels``):
    ``gradient`` = λ·penalty in the loss, differentiated through the probe (probes
    only); ``reward`` = reward (task reward - λ·monitor score) maximized by policy
    gradient, no gradient through the detector; ``screening`` = responses a monitor flags
    are dropped from the policy-gradient batch instead of penalized; ``intervention`` =
    supervised targets a monitor flags are replaced by corrected (honest) ones."""
    reward_detector: Detector = "live"
    """Reward mode: the probe reads the ``live`` (current, detached) model's activations,
    or a ``frozen`` copy of the base model run on the current model's outputs."""
    reward_samples: int = 0
    """Reward mode: K responses sampled per prompt (group-mean baseline); 0 = the exact
    expected reward over enumerated candidate responses (small answer spaces)."""
    reward_temperature: float = 1.0
    """Reward mode with sampling: sampling temperature."""
    reward_top_p: float = 1.0
    """Reward mode with sampling: nucleus (top-p) sampling mass; 1 = the full distribution."""
    dtype: DType = "float32"
    """Weights' dtype while training: ``float32``, ``bfloat16`` or ``float16`` (the
    model, its frozen reference and, without LoRA, the optimizer state)."""
    device: Device = "auto"
    """``cpu``, ``cuda``, or ``auto`` (CUDA when available, else CPU)."""
    lora_rank: int = 0
    """LoRA rank r (through ``peft``); 0 = no LoRA: full fine-tuning. With LoRA only the
    adapters train and are checkpointed; the final folder holds merged weights and
    the adapter (``final/adapter``)."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator: the update is (alpha / r) · B·A."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input (0 = none, deterministic); needs ``dropout=True``."""
    lora_target_modules: tuple[str, ...] = ()
    """Module names the adapters wrap, e.g. ``("q_proj", "v_proj")`` (Llama) or
    ``("c_attn",)`` (GPT-2); empty = every linear layer in the blocks (peft's
    ``all-linear``). Names the model lacks are refused, listing those it has."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "probes", tuple(
            p if isinstance(p, ProbeSpec) else ProbeSpec.from_dict(p) for p in self.probes))
        object.__setattr__(self, "monitors", tuple(
            m if isinstance(m, TextMonitorSpec) else TextMonitorSpec.from_dict(m)
            for m in self.monitors))
        for name in ("steps", "batch_size", "grad_accum", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"TrainConfig.{name} must be an integer >= 1, got {value!r}",
                                  fix=f"set {name} to a positive integer")
        for name in ("n_train", "n_eval", "warmup_steps", "checkpoint_every", "seed",
                     "keep_checkpoints", "max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"TrainConfig.{name} must be an integer >= 0, got {value!r}",
                                  fix=f"set {name} to 0 or more")
        if not self.lr > 0:
            raise ConfigError(f"TrainConfig.lr must be > 0, got {self.lr}", fix="use e.g. 1e-3")
        for name in ("weight_decay", "max_grad_norm", "kl_weight"):
            value = getattr(self, name)
            if not value >= 0:
                raise ConfigError(f"TrainConfig.{name} must be >= 0, got {value}",
                                  fix=f"set {name} to 0 or more")
        if not 0 < self.fpr < 1:
            raise ConfigError(f"TrainConfig.fpr must be in (0, 1), got {self.fpr}",
                              fix="use e.g. 0.01")
        _choice(self.schedule, SCHEDULES, "learning-rate schedule")
        _choice(self.mode, MODES, "training mode")
        _choice(self.reward_detector, DETECTORS, "reward detector placement")
        _choice(self.dtype, DTYPES, "dtype")
        _choice(self.device, DEVICES, "device")
        self._check_lora()
        if not isinstance(self.reward_samples, int) or isinstance(self.reward_samples, bool) \
                or self.reward_samples < 0:
            raise ConfigError(f"TrainConfig.reward_samples must be an integer >= 0, got "
                              f"{self.reward_samples!r}",
                              fix="use 0 (exact expectation) or K >= 2 samples per prompt")
        if self.reward_samples == 1:
            raise ConfigError("reward_samples=1 leaves the group-mean baseline nothing to "
                              "compare (every advantage is 0)",
                              fix="use K >= 2 samples per prompt, or 0 for the exact "
                                  "expectation")
        if not self.reward_temperature > 0:
            raise ConfigError(f"TrainConfig.reward_temperature must be > 0, got "
                              f"{self.reward_temperature}", fix="use e.g. 1.0")
        if not 0 < self.reward_top_p <= 1:
            raise ConfigError(f"TrainConfig.reward_top_p must be in (0, 1], got "
                              f"{self.reward_top_p}", fix="use e.g. 0.95, or 1 for none")
        if self.mode in ("intervention", "screening") and not (self.against or self.text_against):
            raise ConfigError(f"{self.mode} needs a proxy trained against (it flags the "
                              "samples to " + ("correct)" if self.mode == "intervention"
                                               else "drop)"),
                              fix="give a probe or text monitor role='train_against', or "
                                  "use mode='gradient'")
        if self.mode == "gradient" and self.text_against:
            raise ConfigError(f"text monitor(s) {', '.join(m.label for m in self.text_against)} "
                              "are trained against through the gradient channel, but text "
                              "has no gradient", fix="use mode='reward' or 'screening' for "
                                                     "text monitors")
        if isinstance(self.environment, (list, int, float)):
            raise ConfigError(f"environment {self.environment!r} is not a name or a mapping",
                              fix="see examples/run-own-model.json")
        if self.train_from_layer is not None and self.train_from_layer < 0:
            raise ConfigError(f"train_from_layer must be >= 0, got {self.train_from_layer}",
                              fix="pass a block index, or None for all weights")
        if not self.probes and not self.monitors:
            raise ConfigError("the run has no probe and no text monitor: it would train "
                              "against nothing and watch nothing",
                              fix="add probes (ProbeSpec / --against / --held-out) or text "
                                  "monitors (monitors=[...] in the config)")
        labels = [p.label for p in self.probes] + [m.label for m in self.monitors]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ConfigError(f"two monitors share the name(s) {', '.join(dupes)}",
                              fix="give each ProbeSpec / TextMonitorSpec a distinct name=")

    def _check_lora(self) -> None:
        targets = self.lora_target_modules
        if isinstance(targets, str):
            targets = tuple(t.strip() for t in targets.split(",") if t.strip())
        object.__setattr__(self, "lora_target_modules", tuple(targets))
        if not all(isinstance(t, str) and t for t in self.lora_target_modules):
            raise ConfigError(f"lora_target_modules must be module names, got "
                              f"{self.lora_target_modules!r}",
                              fix='use e.g. ["q_proj", "v_proj"], or [] for every linear layer')
        r = self.lora_rank
        if not isinstance(r, int) or isinstance(r, bool) or r < 0:
            raise ConfigError(f"TrainConfig.lora_rank must be an integer >= 0, got {r!r}",
                              fix="use e.g. 16, or 0 for full fine-tuning")
        if not isinstance(self.lora_alpha, (int, float)) or not self.lora_alpha > 0:
            raise ConfigError(f"TrainConfig.lora_alpha must be > 0, got {self.lora_alpha!r}",
                              fix="use e.g. 2 × lora_rank")
        if not isinstance(self.lora_dropout, (int, float)) or not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"TrainConfig.lora_dropout must be in [0, 1), got "
                              f"{self.lora_dropout!r}", fix="use e.g. 0.05, or 0 for none")
        if r == 0 and self.lora_target_modules:
            raise ConfigError(f"lora_target_modules {list(self.lora_target_modules)} are set "
                              "but lora_rank is 0 (full fine-tuning)",
                              fix="set lora_rank (e.g. 16) to train adapters, or drop "
                                  "lora_target_modules")
        if self.lora_dropout and not self.dropout:
            raise ConfigError(f"lora_dropout={self.lora_dropout} would never apply: the model "
                              "trains in eval mode unless dropout=True",
                              fix="set dropout=True (model dropout on too), or lora_dropout=0")
        if r and self.train_from_layer is not None:
            raise ConfigError("train_from_layer freezes blocks of a full fine-tuning run, "
                              "but lora_rank > 0 trains adapters",
                              fix="drop train_from_layer, or set lora_rank=0")

    @property
    def against(self) -> tuple[ProbeSpec, ...]:
        """The probes trained against (role ``train_against``)."""
        return tuple(p for p in self.probes if p.role == "train_against")

    @property
    def text_against(self) -> tuple[TextMonitorSpec, ...]:
        """The text monitors trained against."""
        return tuple(m for m in self.monitors if m.role == "train_against")

    @property
    def against_names(self) -> tuple[str, ...]:
        """Names of every proxy trained against (probes, then text monitors)."""
        return tuple(p.label for p in self.against) + tuple(m.label for m in self.text_against)

    def control(self) -> TrainConfig:
        """The no-penalty control of this run: same data, settings and monitors (same
        names), every one held out; written to ``<out>/control``. The control of an
        ``intervention`` run is plain fine-tuning, of a ``screening`` run plain reward
        (nothing is flagged)."""
        mode = {"intervention": "gradient", "screening": "reward"}.get(self.mode, self.mode)
        return replace(self, out=str(Path(self.out) / "control"), mode=mode,
                       probes=tuple(
            ProbeSpec(path=p.path, site=p.site, selection=p.selection, name=p.label)
            for p in self.probes),
                       monitors=tuple(replace(m, role="held_out", weight=0.0, name=m.label)
                                      for m in self.monitors))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["probes"] = [p.to_dict() for p in self.probes]
        data["monitors"] = [m.to_dict() for m in self.monitors]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = checked_fields(cls, data, "TrainConfig")
        data["probes"] = tuple(ProbeSpec.from_dict(p) if isinstance(p, dict) else p
                               for p in data.get("probes", ()))
        data["monitors"] = tuple(TextMonitorSpec.from_dict(m) if isinstance(m, dict) else m
                                 for m in data.get("monitors", ()))
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (and validated)."""
        return replace(self, **changes)

    def save(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n",
                       encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainConfig:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist", fix="check the path")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{p} is not valid JSON ({err})", fix="fix the file") from err
        return cls.from_dict(data)

    def fingerprint(self) -> str:
        """Hash of every field except ``out``, ``tensorboard`` and ``device`` (where the
        run is written, in which formats, on which machine): a resume must match it."""
        data = self.to_dict()
        data.pop("out")
        data.pop("tensorboard")
        data.pop("device")  # a run may resume on another machine
        data["lora_target_modules"] = list(data["lora_target_modules"])
        for name, default in _NEW_DEFAULTS.items():  # configs from before these fields
            if data.get(name) == default:
                data.pop(name)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


_NEW_DEFAULTS: dict[str, Any] = {"mode": "gradient", "reward_detector": "live",
                                 "reward_samples": 0, "reward_temperature": 1.0,
                                 "reward_top_p": 1.0, "environment": None, "monitors": [],
                                 "dtype": "float32", "device": "auto", "lora_rank": 0,
                                 "lora_alpha": 16.0, "lora_dropout": 0.0,
                                 "lora_target_modules": []}
"""Fields added after the first release: left out of the fingerprint at their defaults,
so run folders written before them still resume."""
