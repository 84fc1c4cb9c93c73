"""TrainConfig, ProbeSpec and TextMonitorSpec: round trips and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from heldout.errors import ConfigError
from heldout.monitors.spec import TextMonitorSpec
from heldout.training.config import ProbeSpec, TrainConfig

HELD = (ProbeSpec("a.safetensors"),)
COT = TextMonitorSpec(kind="rule", part="cot", pattern="right", role="train_against",
                      weight=2.0, name="cot")


def test_round_trip_through_json(tmp_path: Path) -> None:
    config = TrainConfig(out="x", steps=7, mode="reward", probes=(
        ProbeSpec("a.safetensors", role="train_against", weight=3.0, penalty="max"),
        ProbeSpec("b.safetensors", site="resid_post:1")), monitors=(COT,),
        environment={"train": "t.jsonl", "eval": "e.jsonl", "control": "c.jsonl"})
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.load(config.save(tmp_path / "c.json")) == config
    assert config.against == (config.probes[0],)
    assert config.against_names == ("against/a", "cot")
    control = config.control()
    assert control.out == str(Path("x") / "control") and not control.against_names
    assert [p.label for p in control.probes] == [p.label for p in config.probes]
    assert [m.label for m in control.monitors] == ["cot"]
    assert control.monitors[0].role == "held_out" and control.monitors[0].weight == 0
    assert TrainConfig(probes=HELD, mode="screening", monitors=(COT,)).control().mode == "reward"
    assert TrainConfig(probes=HELD, mode="intervention", monitors=(COT,)).control().mode == \
        "gradient"


@pytest.mark.parametrize("changes, match", [
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"lr": -1.0}, "lr must be > 0"),
    ({"schedule": "exp"}, "unknown learning-rate schedule"),
    ({"fpr": 1.5}, "fpr must be in"),
    ({"kl_weight": -0.1}, "kl_weight must be >= 0"),
    ({"reward_top_p": 0.0}, "reward_top_p must be in"),
    ({"mode": "rl"}, "unknown training mode"),
    ({"mode": "screening"}, "screening needs a proxy trained against"),
    ({"mode": "intervention"}, "intervention needs a proxy trained against"),
    ({"monitors": (COT,)}, "text has no gradient"),
    ({"probes": ()}, "no probe and no text monitor"),
])
def test_bad_values_raise_config_error(changes: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{"probes": HELD, **changes})


def test_unknown_fields_and_bad_specs() -> None:
    with pytest.raises(ConfigError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ConfigError, match="held-out probe"):
        ProbeSpec("a.safetensors", weight=1.0)
    with pytest.raises(ConfigError, match="unknown penalty shape"):
        ProbeSpec("a.safetensors", penalty="sum")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="share the name"):
        TrainConfig(probes=(ProbeSpec("a.safetensors"), ProbeSpec("b/a.safetensors")))
    with pytest.raises(ConfigError, match="share the name"):
        TrainConfig(probes=(ProbeSpec("a.safetensors", name="x"),), mode="reward",
                    monitors=(TextMonitorSpec(kind="rule", part="all", pattern="a", name="x"),))
    with pytest.raises(ConfigError, match="reads part None"):
        TextMonitorSpec.from_dict({"kind": "rule", "pattern": "right"})


def test_new_fields_at_their_defaults_keep_old_fingerprints() -> None:
    config = TrainConfig(probes=HELD)
    data = config.to_dict()
    for k in ("mode", "reward_detector", "reward_samples", "reward_temperature",
              "reward_top_p", "environment", "monitors"):
        data.pop(k)
    assert TrainConfig.from_dict(data).fingerprint() == config.fingerprint()
    assert config.replace(reward_top_p=0.9).fingerprint() != config.fingerprint()
