"""TextMonitorSpec: validation at construction, JSON round-trip."""

from __future__ import annotations

import pytest

from heldout.errors import ConfigError
from heldout.monitors.spec import TextMonitorSpec


def test_round_trip_and_default_label() -> None:
    spec = TextMonitorSpec(kind="rule", part="cot", pattern=r"\banswer is \d+",
                           role="train_against", weight=0.5)
    assert TextMonitorSpec.from_dict(spec.to_dict()) == spec
    assert spec.label == "text/rule-cot"
    assert TextMonitorSpec(kind="judge", part="all", judge_model="base", name="j").label == "j"


def test_text_monitor_without_part_is_refused() -> None:
    with pytest.raises(ConfigError, match="part None") as err:
        TextMonitorSpec(kind="rule", pattern="x")
    assert "cot" in str(err.value.fix)


def test_unknown_part_is_refused() -> None:
    with pytest.raises(ConfigError, match="part 'reasoning'"):
        TextMonitorSpec(kind="rule", part="reasoning", pattern="x")  # type: ignore[arg-type]


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown text monitor kind 'regex'") as err:
        TextMonitorSpec(kind="regex", part="all", pattern="x")  # type: ignore[arg-type]
    assert "rule" in str(err.value.fix)


def test_rule_needs_a_pattern_or_a_function() -> None:
    with pytest.raises(ConfigError, match="needs pattern or function"):
        TextMonitorSpec(kind="rule", part="all")
    with pytest.raises(ConfigError, match="both a pattern and a function"):
        TextMonitorSpec(kind="rule", part="all", pattern="x", function="m:f")


def test_classifier_and_judge_need_their_source() -> None:
    with pytest.raises(ConfigError, match="needs path"):
        TextMonitorSpec(kind="classifier", part="all")
    with pytest.raises(ConfigError, match="needs judge_model"):
        TextMonitorSpec(kind="judge", part="answer")


def test_weight_on_a_held_out_monitor_is_refused() -> None:
    with pytest.raises(ConfigError, match="held-out text monitor .* has weight 0.3") as err:
        TextMonitorSpec(kind="rule", part="all", pattern="x", weight=0.3)
    assert "train_against" in str(err.value.fix)


def test_negative_weight_and_unknown_role_are_refused() -> None:
    with pytest.raises(ConfigError, match="weight"):
        TextMonitorSpec(kind="rule", part="all", pattern="x", role="train_against", weight=-1)
    with pytest.raises(ConfigError, match="unknown monitor role"):
        TextMonitorSpec(kind="rule", part="all", pattern="x", role="watch")  # type: ignore[arg-type]


def test_from_dict_names_unknown_fields() -> None:
    with pytest.raises(ConfigError, match="unknown TextMonitorSpec field"):
        TextMonitorSpec.from_dict({"kind": "rule", "part": "all", "pattern": "x", "regex": "y"})
