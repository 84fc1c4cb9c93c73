"""From a :class:`TextMonitorSpec` to a scorer, and from examples to scores."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from heldout.data import Example
from heldout.errors import ConfigError, DataError, HeldoutError
from heldout.monitors.base import TextScorer, prompt_text, response_part
from heldout.monitors.spec import TextMonitorSpec

CotSplitter = Callable[[str], tuple[str, str]]
"""``split(response_text) -> (chain_of_thought, final_answer)`` (as in
``heldout.environments``, not imported here to keep the layers apart)."""


def build_text_monitor(spec: TextMonitorSpec, *, base_model: Any = None) -> TextScorer:
    """The scorer ``spec`` describes.

    rule: :class:`~heldout.monitors.rule.RuleMonitor` from ``pattern`` or ``function``;
    classifier: :meth:`TextClassifierMonitor.load(spec.path)`; judge:
    :class:`~heldout.monitors.judge.LMJudge` over ``base_model`` when ``judge_model`` is
    ``"base"`` (ConfigError if none is given), else over the checkpoint folder
    ``judge_model`` loaded with :func:`heldout.models.load_model`.
    """
    if not isinstance(spec, TextMonitorSpec):
        raise ConfigError(f"build_text_monitor takes a TextMonitorSpec, got "
                          f"{type(spec).__name__}",
                          fix="build one: TextMonitorSpec.from_dict({...})")
    if spec.kind == "rule":
        from heldout.monitors.rule import RuleMonitor

        return RuleMonitor(pattern=spec.pattern, function=spec.function)
    if spec.kind == "classifier":
        from heldout.monitors.classifier import TextClassifierMonitor

        return TextClassifierMonitor.load(str(spec.path))
    from heldout.monitors.judge import DEFAULT_QUESTION, LMJudge

    if spec.judge_model == "base":
        if base_model is None:
            raise ConfigError(f"judge monitor {spec.label!r} uses the base model, but no "
                              "base model was given",
                              fix="pass base_model= to build_text_monitor, or set "
                                  "judge_model to a checkpoint folder")
        model = base_model
    else:
        from heldout.models import load_model

        model = load_model(str(spec.judge_model))
    return LMJudge(model, question=spec.question or DEFAULT_QUESTION, yes=spec.yes,
                   no=spec.no)


def _checked_split(split_cot: CotSplitter) -> CotSplitter:
    def split(text: str) -> tuple[str, str]:
        try:
            parts = split_cot(text)
        except HeldoutError:
            raise
        except Exception as err:  # a user's callable: show its failure with the input
            raise DataError(f"the CoT splitter raised {type(err).__name__}: {err} on "
                            f"response {text[:80]!r}",
                            fix="make split_cot(text) return (chain_of_thought, answer) "
                                "for every response") from err
        if (not isinstance(parts, tuple) or len(parts) != 2
                or not all(isinstance(p, str) for p in parts)):
            raise DataError(f"the CoT splitter returned {parts!r} on response {text[:80]!r}, "
                            "not a (chain_of_thought, answer) pair of strings",
                            fix="return a tuple of two strings")
        return parts
    return split


def score_examples(scorer: TextScorer, spec: TextMonitorSpec, examples: Iterable[Example],
                   responses: Sequence[str], split_cot: CotSplitter | None) -> np.ndarray:
    """Suspicion of each response under ``spec``: float64 of shape (n,) in [0, 1].

    The monitor reads ``spec.part`` of each response (split with ``split_cot``) and the
    prompt of its example as plain text (:func:`~heldout.monitors.base.prompt_text`).
    Checks the inputs before scoring, and the scorer's output after.
    """
    example_list = list(examples)
    if isinstance(responses, str):
        raise DataError("score_examples takes a sequence of responses, got one string",
                        fix="wrap it in a list")
    response_list = list(responses)
    if len(example_list) != len(response_list):
        raise DataError(f"monitor {spec.label!r}: {len(example_list)} examples but "
                        f"{len(response_list)} responses",
                        fix="pass one response per example")
    split = None if split_cot is None else _checked_split(split_cot)
    parts = [response_part(r, str(spec.part), split) for r in response_list]
    prompts = [prompt_text(e) for e in example_list]
    scores = np.asarray(scorer.score_texts(prompts, parts), dtype=np.float64)
    if scores.shape != (len(parts),):
        raise DataError(f"monitor {spec.label!r} returned scores of shape {scores.shape} for "
                        f"{len(parts)} texts", fix="return one score per text")
    bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"monitor {spec.label!r} returned {float(scores[i])!r} for text {i} "
                        f"({parts[i][:80]!r}), outside [0, 1]",
                        fix="a text monitor's suspicion is a number between 0 and 1")
    return scores


__all__ = ["build_text_monitor", "score_examples"]
