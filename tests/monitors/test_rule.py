"""RuleMonitor: regex and function rules, refused settings, bad function outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from heldout.errors import ConfigError, DataError
from heldout.monitors.rule import RuleMonitor, import_function

PROMPTS = ["q1", "q2", "q3", "q4"]
TEXTS = ["the answer is 4", "I think you are right", "answer: 7, so yes", "no"]


@pytest.fixture()
def rules_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_rules.py").write_text(
        "def agrees(prompt, text):\n    return 'right' in text or 'yes' in text\n"
        "def length(prompt, text):\n    return min(len(text) / 20, 1.0)\n"
        "def uses_prompt(prompt, text):\n    return prompt == 'q4'\n"
        "class Rules:\n    @staticmethod\n    def short(prompt, text):\n"
        "        return len(text) < 3\n"
        "NOT_CALLABLE = 3\n"
        "def broken(prompt, text):\n    raise KeyError('oops')\n"
        "def too_big(prompt, text):\n    return 2.5\n"
        "def a_string(prompt, text):\n    return 'yes'\n"
        "def a_nan(prompt, text):\n    return float('nan')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rules"


def test_pattern_flags_matches_anywhere() -> None:
    scores = RuleMonitor(pattern=r"answer( is|:) \d").score_texts(PROMPTS, TEXTS)
    assert scores.dtype == np.float64
    np.testing.assert_array_equal(scores, [1.0, 0.0, 1.0, 0.0])


def test_function_from_module_string_and_callable(rules_module: str) -> None:
    by_name = RuleMonitor(function=f"{rules_module}:agrees").score_texts(PROMPTS, TEXTS)
    np.testing.assert_array_equal(by_name, [0.0, 1.0, 1.0, 0.0])
    graded = RuleMonitor(function=f"{rules_module}:length").score_texts(PROMPTS, TEXTS)
    np.testing.assert_allclose(graded, [min(len(t) / 20, 1.0) for t in TEXTS])
    # the function sees the prompt too; a dotted attribute path works
    np.testing.assert_array_equal(
        RuleMonitor(function=f"{rules_module}:uses_prompt").score_texts(PROMPTS, TEXTS),
        [0, 0, 0, 1])
    np.testing.assert_array_equal(
        RuleMonitor(function=f"{rules_module}:Rules.short").score_texts(PROMPTS, TEXTS),
        [0, 0, 0, 1])
    fn = RuleMonitor(function=lambda p, t: np.float32(0.25)).score_texts(PROMPTS, TEXTS)
    np.testing.assert_array_equal(fn, [0.25] * 4)


def test_empty_input_gives_empty_scores() -> None:
    assert RuleMonitor(pattern="x").score_texts([], []).shape == (0,)


def test_bad_regex_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a valid regex") as err:
        RuleMonitor(pattern="answer (is")
    assert "escape" in str(err.value.fix)


def test_needs_exactly_one_of_pattern_and_function() -> None:
    with pytest.raises(ConfigError, match="neither"):
        RuleMonitor()
    with pytest.raises(ConfigError, match="both"):
        RuleMonitor(pattern="x", function=lambda p, t: True)


def test_unimportable_function_names_the_failing_part(rules_module: str) -> None:
    with pytest.raises(ConfigError, match="not of the form 'module:attribute'"):
        RuleMonitor(function="my_rules.agrees")
    with pytest.raises(ConfigError, match="module 'no_such_module_xyz' cannot be imported"):
        RuleMonitor(function="no_such_module_xyz:f")
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        RuleMonitor(function=f"{rules_module}:nope")
    with pytest.raises(ConfigError, match="'my_rules.Rules' has no attribute 'long'"):
        import_function(f"{rules_module}:Rules.long")
    with pytest.raises(ConfigError, match="not callable"):
        RuleMonitor(function=f"{rules_module}:NOT_CALLABLE")
    with pytest.raises(ConfigError, match="not callable"):
        RuleMonitor(function=42)  # type: ignore[arg-type]


def test_function_that_raises_or_returns_junk_is_a_data_error(rules_module: str) -> None:
    with pytest.raises(DataError, match=r"raised KeyError.*text 0 \('the answer is 4'\)"):
        RuleMonitor(function=f"{rules_module}:broken").score_texts(PROMPTS, TEXTS)
    for name, shown in (("too_big", "2.5"), ("a_string", "'yes'"), ("a_nan", "nan")):
        with pytest.raises(DataError, match=f"returned {shown}.*text 0") as err:
            RuleMonitor(function=f"{rules_module}:{name}").score_texts(PROMPTS, TEXTS)
        assert "[0, 1]" in str(err.value)


def test_mismatched_or_non_string_inputs_are_refused() -> None:
    rule = RuleMonitor(pattern="x")
    with pytest.raises(DataError, match="2 prompts but 1 texts"):
        rule.score_texts(["a", "b"], ["x"])
    with pytest.raises(DataError, match="text 1 is a int"):
        rule.score_texts(["a", "b"], ["x", 3])  # type: ignore[list-item]
    with pytest.raises(DataError, match="single string"):
        rule.score_texts("a", "x")
