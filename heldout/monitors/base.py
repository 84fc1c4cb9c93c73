"""The text-monitor contract: a proxy that reads the response text, not activations.

A text monitor scores ``(prompt, text)`` pairs with a suspicion in [0, 1] (higher =
more likely misbehavior): a rule gives 0 or 1, a classifier its probability, an LM
judge P(yes). It reads one **part** of the response: the chain of thought (``cot``),
the final answer (``answer``) or all of it (``all``); the environment says where the
chain of thought ends (``Environment.split_cot``). Thresholds are calibrated on the
control set at the run's FPR, exactly as for activation probes, so both kinds of proxy
share one record (``heldout.analysis.records``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol, get_args

import numpy as np

from heldout.data import Example
from heldout.errors import ConfigError, DataError

Part = Literal["cot", "answer", "all"]
PARTS: tuple[str, ...] = get_args(Part)


class TextScorer(Protocol):
    """What every text monitor implements."""

    def score_texts(self, prompts: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Suspicion per pair, float64 array of shape (n,), values in [0, 1]."""
        ...


def prompt_text(example: Example) -> str:
    """The prompt of ``example`` as plain text (chat turns as ``role: content`` lines)."""
    if example.messages is not None:
        return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}"
                         for m in example.messages)
    return example.prompt or ""


def response_part(text: str, part: str, split_cot: Callable[[str], tuple[str, str]] | None
                  ) -> str:
    """The ``part`` of a response text that a monitor reads."""
    if part == "all":
        return text
    if split_cot is None:
        raise ConfigError(f"a text monitor reads the {part!r} part of responses, but the "
                          "environment does not say where the chain of thought ends",
                          fix="use part='all', or give the environment a CoT split "
                              "(split_cot, or 'cot_pattern' in a file environment)")
    cot, answer = split_cot(text)
    return cot if part == "cot" else answer


def check_part(part: object, name: str) -> None:
    if part not in PARTS:
        raise ConfigError(f"text monitor {name!r} reads part {part!r}",
                          fix=f"set part to one of {', '.join(PARTS)} (the chain of "
                              "thought, the final answer, or the whole response)")


def check_pairs(prompts: Sequence[str], texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """``prompts`` and ``texts`` as lists of strings of one length, or DataError
    (what every ``score_texts`` checks before any work)."""
    if isinstance(prompts, str) or isinstance(texts, str):
        raise DataError("score_texts takes sequences of strings, got a single string",
                        fix="wrap it in a list: score_texts([prompt], [text])")
    prompt_list, text_list = list(prompts), list(texts)
    if len(prompt_list) != len(text_list):
        raise DataError(f"score_texts got {len(prompt_list)} prompts but {len(text_list)} "
                        "texts", fix="pass one prompt per text ('' where there is none)")
    for what, seq in (("prompt", prompt_list), ("text", text_list)):
        for i, s in enumerate(seq):
            if not isinstance(s, str):
                raise DataError(f"{what} {i} is a {type(s).__name__}, not a string",
                                fix=f"pass each {what} as a str")
    return prompt_list, text_list
