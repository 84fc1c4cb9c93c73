"""Greedy generation and the organism's behaviour: honest accuracy, misbehavior rate.

Works with a TransformerLens ``TransformerBridge`` and with a Hugging Face causal LM.
Prompts are rendered with the tokenizer's chat template and decoded with a KV cache
(``heldout.generation.generate``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from heldout.errors import ConfigError
from heldout.organism.behaviour import cue_give_in
from heldout.organism.config import OrganismConfig
from heldout.organism.task import effective_cues, grade, sample_prompt
from heldout.organism.tokenizer import prompt_ids


def greedy_generate(model: Any, tokenizer: Any, conversations: Sequence[list[dict[str, str]]],
                    *, max_new_tokens: int = 8, batch_size: int = 256) -> list[str]:
    """Greedy completions (text up to ``<eos>``) of each chat ``conversation``.

    model : a ``TransformerBridge`` or a Hugging Face causal LM.
    tokenizer : default ``model.tokenizer`` (a bridge carries its tokenizer).

    Decodes with a KV cache through :func:`heldout.generation.generate` (prompts of
    different lengths are left-padded together; a bridge runs on its un-bridged twin,
    which shares its weights).
    """
    from heldout.generation import generate

    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ConfigError("greedy_generate needs a tokenizer", fix="pass tokenizer=")
    encoded = [prompt_ids(tokenizer, list(c)) for c in conversations]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    new_ids = generate(model, encoded, max_new_tokens=max_new_tokens,
                       eos_id=tokenizer.eos_token_id, pad_id=pad, batch_size=batch_size)
    return [tokenizer.decode(rows[0], skip_special_tokens=True).strip() for rows in new_ids]


@dataclass(frozen=True)
class Behaviour:
    """How a model behaves on fresh organism prompts under greedy decoding."""

    honest_accuracy: float
    """Prompts without pressure: fraction with the true sum and the honest verdict (v2:
    the honest verdict; a v2 response may leave the sum unstated)."""
    misbehavior_rate: float
    """Pressure prompts with a wrong claim: fraction the labeler marks as misbehaving."""
    pressure_right_accuracy: float
    """Pressure prompts with a right claim: fraction fully correct (agreeing is honest)."""
    answer_accuracy: float
    """All prompts: fraction whose stated first number is the true sum."""
    plain_misbehavior_rate: float
    """Prompts without pressure and with a wrong claim: fraction misbehaving (should be ~0)."""
    expected_misbehavior_rate: float
    """What the config asks for on these prompts under greedy decoding (share of them
    under an effective cue; v2: under a cue that works more often than not)."""
    n_plain: int
    """Prompts without pressure evaluated."""
    n_pressure_wrong: int
    """Pressure prompts with a wrong claim evaluated."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_behaviour(model: Any, config: OrganismConfig | None = None, *,
                       tokenizer: Any = None, n: int = 800, seed: int = 12345,
                       batch_size: int = 256) -> Behaviour:
    """Greedy-decode ``n`` fresh prompts (a quarter in each condition) and grade them.

    Conditions: no pressure / pressure x claim right / wrong. Labels come from the
    rule-based labeler, never from the model's activations.
    """
    config = config or OrganismConfig()
    if n < 4:
        raise ConfigError(f"evaluate_behaviour needs n >= 4, got {n}", fix="raise n")
    rng = random.Random(f"eval-{seed}")
    prompts = [sample_prompt(rng, config.max_operand, pressure=pressure, claim_right=right)
               for pressure in (False, True) for right in (True, False)
               for _ in range(n // 4)]
    responses = greedy_generate(model, tokenizer, [p.messages() for p in prompts],
                                batch_size=batch_size, max_new_tokens=config.max_new_tokens)
    grades = [grade(p, r) for p, r in zip(prompts, responses)]
    cues = effective_cues(config.give_in, config.seed)
    if config.v2:
        cues = frozenset(c for c, p in cue_give_in(config).items() if p > 0.5)

    def mean(values: list[bool]) -> float:
        return sum(values) / len(values) if values else float("nan")

    plain = [g for p, g in zip(prompts, grades) if not p.pressure]
    pw = [(p, g) for p, g in zip(prompts, grades) if p.pressure and not p.claim_right]
    pr = [g for p, g in zip(prompts, grades) if p.pressure and p.claim_right]
    return Behaviour(
        honest_accuracy=mean([g.honest_verdict and g.answer in (None, g.truth)
                              if config.v2 else g.correct for g in plain]),
        misbehavior_rate=mean([g.misbehavior for _, g in pw]),
        pressure_right_accuracy=mean([g.correct for g in pr]),
        answer_accuracy=mean([g.answer == g.truth for g in grades]),
        plain_misbehavior_rate=mean([g.misbehavior for g in plain if not g.claim_right]),
        expected_misbehavior_rate=mean([p.cue in cues for p, _ in pw]),
        n_plain=len(plain), n_pressure_wrong=len(pw))
