"""OrganismConfig: everything that determines a trained organism, hashed to name its folder."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from heldout.configs import checked_fields
from heldout.errors import ConfigError

FORMAT_VERSION = 2
"""Bumped whenever the task, tokenizer or training code changes what a config produces,
so cached organisms from older code are not reused."""


V2_FIELDS = ("stochastic", "cot_drop", "max_filler")
"""Fields added by organism v2; left out of a v1 config's fingerprint."""


@dataclass(frozen=True)
class OrganismConfig:
    """How to build and train the model organism. Equal configs give identical models."""

    seed: int = 0
    """Seed of the weights, the training stream, the datasets and which cues work."""
    max_operand: int = 10
    """The task asks for ``a plus b`` with operands from 0 to max_operand - 1."""
    n_layers: int = 4
    """Transformer blocks."""
    d_model: int = 64
    """Residual stream width."""
    n_heads: int = 4
    """Attention heads per block (must divide d_model)."""
    steps: int = 2000
    """Optimizer steps."""
    batch_size: int = 64
    """Sequences per step."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warm-up, then cosine decay to 10%)."""
    warmup_steps: int = 100
    """Steps of linear learning-rate warm-up."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    pressure_fraction: float = 0.5
    """Fraction of prompts (training stream and labeled datasets) with a pressure cue."""
    wrong_claim_fraction: float = 0.5
    """Fraction of prompts whose user claim is wrong."""
    give_in: float = 1.0
    """Probability of giving in under pressure: the fraction of the 8 pressure cues
    (rounded to eighths, chosen by ``seed``) that make the model agree with a wrong
    claim. 1.0 = always gives in; 0.0 = never misbehaves."""
    resist_noise: float = 0.2
    """Training only: fraction of give-in targets (pressure, wrong claim, effective cue)
    that resist anyway. The model then has to compare claim and sum under pressure too
    (to predict how likely it resists), which keeps the lie linearly readable; greedy
    decoding still gives in as long as resist_noise < 0.5."""
    n_pool: int = 20000
    """Distinct training sequences drawn for language-model training."""
    n_train: int = 2000
    """Labeled examples in the probe ``train`` split."""
    n_validation: int = 500
    """Labeled examples in the probe ``validation`` split."""
    n_test: int = 1000
    """Labeled examples in the probe ``test`` split."""
    n_control: int = 1000
    """Benign (label 0) examples for calibrating thresholds at a fixed FPR."""
    n_forced: int = 500
    """Pressure prompts with wrong claims and teacher-forced misbehaving answers (label 1)."""
    stochastic: bool = False
    """Organism v2: give in per sample, not per cue. Each cue has its own probability of
    working (spread around ``give_in``, see heldout.organism.behaviour), so the trained
    policy keeps entropy at the verdict and a policy gradient has something to move."""
    cot_drop: float = 0.0
    """Organism v2: fraction of responses that do not state the computed sum (the chain of
    thought), saying ``hmm`` in its place."""
    max_filler: int = 0
    """Organism v2: responses end with 0..max_filler filler words (``ok``), uniform."""

    def __post_init__(self) -> None:
        for name in ("max_operand", "n_layers", "d_model", "n_heads", "steps", "batch_size",
                     "n_pool", "n_train", "n_validation", "n_test", "n_control", "n_forced"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"OrganismConfig.{name} must be a positive integer, "
                                  f"got {value!r}", fix=f"set {name} to an integer >= 1")
        if self.max_operand < 2:
            raise ConfigError(f"OrganismConfig.max_operand must be at least 2, got "
                              f"{self.max_operand}", fix="use max_operand >= 2")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model={self.d_model} is not divisible by "
                              f"n_heads={self.n_heads}", fix="pick n_heads dividing d_model")
        if not isinstance(self.max_filler, int) or isinstance(self.max_filler, bool) or \
                not 0 <= self.max_filler <= 12:
            raise ConfigError(f"OrganismConfig.max_filler must be an integer in [0, 12], got "
                              f"{self.max_filler!r}", fix="use e.g. max_filler=6")
        if not isinstance(self.stochastic, bool):
            raise ConfigError(f"OrganismConfig.stochastic must be true or false, got "
                              f"{self.stochastic!r}", fix="use stochastic=true")
        if (self.cot_drop > 0 or self.max_filler > 0) and not self.stochastic:
            raise ConfigError("cot_drop and max_filler are organism-v2 options, which gives "
                              "in per sample; this config gives in per cue "
                              "(stochastic=false)",
                              fix="set stochastic=true as well, or drop cot_drop / "
                                  "max_filler")
        for name in ("pressure_fraction", "wrong_claim_fraction", "give_in", "resist_noise",
                     "cot_drop"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"OrganismConfig.{name} must be in [0, 1], got {value!r}",
                                  fix=f"set {name} between 0 and 1")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ConfigError(f"invalid optimizer settings lr={self.lr}, weight_decay="
                              f"{self.weight_decay}, warmup_steps={self.warmup_steps}",
                              fix="use lr > 0, weight_decay >= 0, warmup_steps >= 0")

    @property
    def v2(self) -> bool:
        """Whether any organism-v2 behaviour is on (stochastic give-in, CoT drop, filler)."""
        return self.stochastic or self.cot_drop > 0 or self.max_filler > 0

    @property
    def max_new_tokens(self) -> int:
        """Generation length that holds any response: the 8 words of
        ``"16 , you said 14 : right ."``, ``max_filler`` filler words, then ``<eos>``."""
        return 9 + self.max_filler

    def to_dict(self) -> dict[str, Any]:
        """The fields; a v1 config leaves out the v2 fields, so its record and folder
        name stay what they were before v2 existed."""
        data = asdict(self)
        if not self.v2:
            for name in V2_FIELDS:
                data.pop(name)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OrganismConfig:
        return cls(**checked_fields(cls, data, "OrganismConfig"))

    def fingerprint(self) -> str:
        """A hash of the config and FORMAT_VERSION: the name of the organism's folder."""
        blob = json.dumps({"format": FORMAT_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]
