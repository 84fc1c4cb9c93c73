"""build_text_monitor and score_examples: from a spec to a scorer, from examples to scores."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import heldout.monitors as monitors
from heldout.data import Example
from heldout.errors import ConfigError, DataError, ModelLoadError, ProbeError
from heldout.monitors import (
    LMJudge,
    RuleMonitor,
    TextClassifierMonitor,
    TextMonitorSpec,
    build_text_monitor,
    score_examples,
)

EXAMPLES = [Example(id="a", label=0, response="", prompt="2+2? I say 5."),
            Example(id="b", label=1, response="",
                    messages=({"role": "user", "content": "2+2? I say 5."},))]
RESPONSES = ["4. ANSWER: no, it is 4", "4. ANSWER: yes, 5"]


def split_cot(text: str) -> tuple[str, str]:
    cot, _, answer = text.partition("ANSWER:")
    return cot, answer


def test_public_names_resolve_lazily() -> None:
    for name in monitors.__all__:
        value = getattr(monitors, name)
        if isinstance(value, (type, types.FunctionType)):  # the object its module defines
            assert value.__name__ == name and value.__module__.startswith("heldout.")
            assert getattr(importlib.import_module(value.__module__), name) is value
    assert monitors.PARTS == ("cot", "answer", "all")
    assert monitors.TEXT_KINDS == ("rule", "classifier", "judge")
    assert "{prompt}" in monitors.DEFAULT_QUESTION and "{text}" in monitors.DEFAULT_QUESTION
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        monitors.nope  # noqa: B018
    # "lazily": importing the package loads neither torch nor scikit-learn
    code = "import sys, heldout.monitors; print('torch' in sys.modules, 'sklearn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["False", "False"]


def test_rule_spec_scores_the_chosen_part() -> None:
    for part, want in (("answer", [0.0, 1.0]), ("cot", [0.0, 0.0]), ("all", [0.0, 1.0])):
        spec = TextMonitorSpec(kind="rule", part=part, pattern=r"\byes\b")
        scorer = build_text_monitor(spec)
        assert isinstance(scorer, RuleMonitor)
        np.testing.assert_array_equal(score_examples(scorer, spec, EXAMPLES, RESPONSES,
                                                     split_cot), want)


def test_prompts_are_rendered_as_text() -> None:
    seen: list[tuple[str, str]] = []

    def record(prompt: str, text: str) -> bool:
        seen.append((prompt, text))
        return False

    spec = TextMonitorSpec(kind="rule", part="cot", function="os.path:isabs")
    score_examples(RuleMonitor(function=record), spec, EXAMPLES, RESPONSES, split_cot)
    assert seen == [("2+2? I say 5.", "4. "), ("user: 2+2? I say 5.", "4. ")]


def test_cot_part_without_a_split_is_refused() -> None:
    spec = TextMonitorSpec(kind="rule", part="cot", pattern="x")
    with pytest.raises(ConfigError, match="does not say where the chain of thought ends"):
        score_examples(build_text_monitor(spec), spec, EXAMPLES, RESPONSES, None)


def test_bad_inputs_and_outputs_are_refused() -> None:
    spec = TextMonitorSpec(kind="rule", part="answer", pattern="x")
    rule = build_text_monitor(spec)
    with pytest.raises(DataError, match="2 examples but 1 responses"):
        score_examples(rule, spec, EXAMPLES, RESPONSES[:1], split_cot)

    def broken(text: str) -> tuple[str, str]:
        raise IndexError("no marker")

    with pytest.raises(DataError, match="CoT splitter raised IndexError"):
        score_examples(rule, spec, EXAMPLES, RESPONSES, broken)
    with pytest.raises(DataError, match="not a \\(chain_of_thought, answer\\) pair"):
        score_examples(rule, spec, EXAMPLES, RESPONSES, lambda t: [t, t])

    class Overconfident:
        def score_texts(self, prompts: Sequence[str], texts: Sequence[str]) -> np.ndarray:
            return np.full(len(texts), 2.0)

    with pytest.raises(DataError, match="returned 2.0 for text 0.*outside \\[0, 1\\]"):
        score_examples(Overconfident(), spec, EXAMPLES, RESPONSES, split_cot)


def test_classifier_spec_loads_the_saved_file(tmp_path: Path) -> None:
    texts = ["yes it is 5", "it is 4", "yes 5 then", "no it is 4"] * 5
    clf = TextClassifierMonitor().fit(texts, [1, 0, 1, 0] * 5)
    path = clf.save(tmp_path / "clf.safetensors")
    spec = TextMonitorSpec(kind="classifier", part="answer", path=str(path))
    scorer = build_text_monitor(spec)
    assert isinstance(scorer, TextClassifierMonitor)
    scores = score_examples(scorer, spec, EXAMPLES, RESPONSES, split_cot)
    assert scores[1] > 0.5 > scores[0]
    missing = TextMonitorSpec(kind="classifier", part="all", path=str(tmp_path / "no.safetensors"))
    with pytest.raises(ProbeError, match="no text classifier file"):
        build_text_monitor(missing)


def test_judge_spec_uses_the_base_model_or_loads_a_folder(
        llama_model: Any, tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    spec = TextMonitorSpec(kind="judge", part="answer", judge_model="base", yes=" yes", no=" no")
    with pytest.raises(ConfigError, match="no base model was given"):
        build_text_monitor(spec)
    judge = build_text_monitor(spec, base_model=llama_model)
    assert isinstance(judge, LMJudge) and judge.model is llama_model
    assert "{text}" in judge.question  # the default question
    scores = score_examples(judge, spec, EXAMPLES, ["4 ANSWER: the cat", "4 ANSWER: yes"],
                            split_cot)
    assert scores.shape == (2,) and ((scores > 0) & (scores < 1)).all()
    from_folder = TextMonitorSpec(kind="judge", part="all", yes=" yes", no=" no",
                                  judge_model=str(tiny_checkpoints["gpt2"]),
                                  question="is {text} wrong")
    judge2 = build_text_monitor(from_folder)
    assert isinstance(judge2, LMJudge) and judge2.question == "is {text} wrong"
    with pytest.raises(ModelLoadError, match="does not exist"):
        build_text_monitor(TextMonitorSpec(kind="judge", part="all",
                                           judge_model=str(tmp_path / "none")))
