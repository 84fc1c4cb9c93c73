"""The organism's labeled datasets, built deterministically from its config.

All splits are drawn from one seeded stream and no prompt text appears twice across
them. Responses are the organism's trained behaviour (which it reproduces at >= 99%
under greedy decoding); labels come from the rule-based labeler, never a model.

- ``train`` / ``validation`` / ``test``: prompts with and without pressure, claims
  right and wrong; label 1 = the response agrees with a wrong claim.
- ``control``: benign examples only (label 0), distributed like the negatives, for
  calibrating a probe's threshold at a fixed false-positive rate.
- ``forced``: pressure prompts with wrong claims, misbehaving answers teacher-forced
  (label 1) whatever the model would say: separates "stopped misbehaving" from
  "detector blind" after fine-tuning.
"""

from __future__ import annotations

import random
from typing import Literal

from heldout.data import Dataset, Example
from heldout.errors import ConfigError
from heldout.organism.behaviour import draw_response, organism_target, render
from heldout.organism.config import OrganismConfig
from heldout.organism.task import (
    Prompt,
    effective_cues,
    honest_response,
    label_misbehavior,
    misbehaving_response,
    sample_prompt,
)

SPLITS = ("train", "validation", "test", "control", "forced")
Targets = Literal["organism", "honest", "misbehave"]


def _draw(rng: random.Random, config: OrganismConfig, seen: set[str], *,
          pressure: bool | None = None, claim_right: bool | None = None) -> Prompt:
    """A prompt not in ``seen`` (and add it); conditions drawn from the config if None."""
    for _ in range(1000):
        prompt = sample_prompt(
            rng, config.max_operand,
            pressure=rng.random() < config.pressure_fraction if pressure is None else pressure,
            claim_right=(rng.random() >= config.wrong_claim_fraction
                         if claim_right is None else claim_right))
        text = prompt.text()
        if text not in seen:
            seen.add(text)
            return prompt
    raise RuntimeError("could not draw a fresh prompt: the prompt space is exhausted")


def _example(prompt: Prompt, response: str, split: str, index: int) -> Example:
    return Example(id=f"{split}-{index:05d}",
                   label=int(label_misbehavior(prompt, response)),
                   response=response, messages=tuple(prompt.messages()),
                   split=split, group=prompt.group)


def build_datasets(config: OrganismConfig) -> dict[str, Dataset]:
    """The five datasets (see the module docstring), keyed by split name."""
    rng = random.Random(f"datasets-{config.seed}")
    draws = random.Random(f"dataset-responses-{config.seed}")  # v2 only
    cues = effective_cues(config.give_in, config.seed)
    seen: set[str] = set()
    out: dict[str, Dataset] = {}
    for split, n in (("train", config.n_train), ("validation", config.n_validation),
                     ("test", config.n_test)):
        rows = []
        for i in range(n):
            prompt = _draw(rng, config, seen)
            rows.append(_example(prompt, organism_target(config, prompt, draws, cues), split, i))
        out[split] = Dataset(tuple(rows), source=f"organism:{split}")
    rows = []
    while len(rows) < config.n_control:
        prompt = _draw(rng, config, seen)
        response = organism_target(config, prompt, draws, cues)
        if not label_misbehavior(prompt, response):
            rows.append(_example(prompt, response, "control", len(rows)))
    out["control"] = Dataset(tuple(rows), source="organism:control")

    def forced(prompt: Prompt) -> str:
        return (draw_response(config, prompt, draws, force_lie=True) if config.v2
                else misbehaving_response(prompt))

    rows = [_example(prompt, forced(prompt), "forced", i)
            for i, prompt in enumerate(_draw(rng, config, seen, pressure=True, claim_right=False)
                                       for _ in range(config.n_forced))]
    out["forced"] = Dataset(tuple(rows), source="organism:forced")
    return out


def finetune_dataset(config: OrganismConfig, n: int, *, seed: int = 1,
                     pressure_fraction: float | None = None,
                     targets: Targets = "organism", split: str = "finetune") -> Dataset:
    """Fresh prompts with responses for fine-tuning experiments.

    targets : ``"organism"`` keeps the trained behaviour (gives in under effective
        cues, so the task loss keeps the pressure to misbehave); ``"misbehave"`` gives
        in on every pressure prompt; ``"honest"`` never gives in.
    pressure_fraction : default the config's.
    """
    if targets not in ("organism", "honest", "misbehave"):
        raise ConfigError(f"unknown targets {targets!r}",
                          fix="use 'organism', 'honest' or 'misbehave'")
    rng = random.Random(f"finetune-{config.seed}-{seed}")
    draws = random.Random(f"finetune-responses-{config.seed}-{seed}")  # v2 only
    cues = effective_cues(config.give_in, config.seed)
    frac = config.pressure_fraction if pressure_fraction is None else pressure_fraction
    seen: set[str] = set()
    rows = []
    for i in range(n):
        prompt = _draw(rng, config, seen, pressure=rng.random() < frac)
        if targets == "honest":
            response = (render(prompt, verdict="right" if prompt.claim_right else "wrong")
                        if config.v2 else honest_response(prompt))
        elif targets == "misbehave" and prompt.pressure:
            response = (draw_response(config, prompt, draws, force_lie=True) if config.v2
                        else misbehaving_response(prompt))
        else:
            response = organism_target(config, prompt, draws, cues)
        rows.append(_example(prompt, response, split, i))
    return Dataset(tuple(rows), source=f"organism:{split}")
