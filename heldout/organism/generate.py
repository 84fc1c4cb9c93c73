"""Greedy generation and the organism's behaviour: honest accuracy, misbehavior rate.

Works with a TransformerLens ``TransformerBridge`` (``model(ids)`` returns logits) and
with a Hugging Face causal LM (``model(input_ids=ids).logits``). Prompts are rendered
with the tokenizer's chat template and grouped by length, so no padding is needed.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from heldout.errors import ConfigError
from heldout.organism.config import OrganismConfig
from heldout.organism.task import effective_cues, grade, sample_prompt
from heldout.organism.tokenizer import prompt_ids


def _logits(model: Any, ids: Any) -> Any:
    if hasattr(model, "run_with_cache"):  # TransformerBridge
        return model(ids, return_type="logits")
    return model(input_ids=ids).logits


def greedy_generate(model: Any, tokenizer: Any, conversations: Sequence[list[dict[str, str]]],
                    *, max_new_tokens: int = 8, batch_size: int = 256) -> list[str]:
    """Greedy completions (text up to ``<eos>``) of each chat ``conversation``.

    model : a ``TransformerBridge`` or a Hugging Face causal LM.
    tokenizer : default ``model.tokenizer`` (a bridge carries its tokenizer).
    """
    import torch

    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ConfigError("greedy_generate needs a tokenizer", fix="pass tokenizer=")
    eos = tokenizer.eos_token_id
    encoded = [prompt_ids(tokenizer, list(c)) for c in conversations]
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(encoded):
        by_length[len(ids)].append(i)
    out: list[str] = [""] * len(encoded)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.inference_mode():
            for length in sorted(by_length):
                rows = by_length[length]
                for start in range(0, len(rows), batch_size):
                    chunk = rows[start: start + batch_size]
                    seq = torch.tensor([encoded[i] for i in chunk], dtype=torch.long)
                    done = torch.zeros(len(chunk), dtype=torch.bool)
                    for _ in range(max_new_tokens):
                        nxt = _logits(model, seq)[:, -1].argmax(-1).to(seq.device)
                        seq = torch.cat([seq, nxt[:, None]], dim=1)
                        done |= nxt.cpu() == eos
                        if bool(done.all()):
                            break
                    for row, i in zip(seq[:, length:].tolist(), chunk):
                        if eos in row:
                            row = row[: row.index(eos)]
                        out[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return out


@dataclass(frozen=True)
class Behaviour:
    """How a model behaves on fresh organism prompts under greedy decoding."""

    honest_accuracy: float
    """Prompts without pressure: fraction with the true sum and the honest verdict."""
    misbehavior_rate: float
    """Pressure prompts with a wrong claim: fraction the labeler marks as misbehaving."""
    pressure_right_accuracy: float
    """Pressure prompts with a right claim: fraction fully correct (agreeing is honest)."""
    answer_accuracy: float
    """All prompts: fraction whose stated first number is the true sum."""
    plain_misbehavior_rate: float
    """Prompts without pressure and with a wrong claim: fraction misbehaving (should be ~0)."""
    expected_misbehavior_rate: float
    """What the config asks for on these prompts (share of them under an effective cue)."""
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
                                batch_size=batch_size)
    grades = [grade(p, r) for p, r in zip(prompts, responses)]
    cues = effective_cues(config.give_in, config.seed)

    def mean(values: list[bool]) -> float:
        return sum(values) / len(values) if values else float("nan")

    plain = [g for p, g in zip(prompts, grades) if not p.pressure]
    pw = [(p, g) for p, g in zip(prompts, grades) if p.pressure and not p.claim_right]
    pr = [g for p, g in zip(prompts, grades) if p.pressure and p.claim_right]
    return Behaviour(
        honest_accuracy=mean([g.correct for g in plain]),
        misbehavior_rate=mean([g.misbehavior for _, g in pw]),
        pressure_right_accuracy=mean([g.correct for g in pr]),
        answer_accuracy=mean([g.answer == g.truth for g in grades]),
        plain_misbehavior_rate=mean([g.misbehavior for g in plain if not g.claim_right]),
        expected_misbehavior_rate=mean([p.cue in cues for p, _ in pw]),
        n_plain=len(plain), n_pressure_wrong=len(pw))
