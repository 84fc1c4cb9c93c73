"""TrainConfig and ProbeSpec: round trips and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from heldout.errors import ConfigError
from heldout.training.config import ProbeSpec, TrainConfig


def test_round_trip_through_json(tmp_path: Path) -> None:
    config = TrainConfig(out="x", steps=7, probes=(
        ProbeSpec("a.safetensors", role="train_against", weight=3.0, penalty="max"),
        ProbeSpec("b.safetensors", site="resid_post:1")))
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.load(config.save(tmp_path / "c.json")) == config
    assert config.against == (config.probes[0],)
    control = config.control()
    assert control.out == str(Path("x") / "control") and not control.against
    assert [p.label for p in control.probes] == [p.label for p in config.probes]


@pytest.mark.parametrize("changes, match", [
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"lr": -1.0}, "lr must be > 0"),
    ({"schedule": "exp"}, "unknown learning-rate schedule"),
    ({"fpr": 1.5}, "fpr must be in"),
    ({"kl_weight": -0.1}, "kl_weight must be >= 0"),
    ({"model": "some/folder"}, "needs train_data, eval_data and control_data"),
])
def test_bad_values_raise_config_error(changes: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**changes)


def test_unknown_fields_and_bad_probes() -> None:
    with pytest.raises(ConfigError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ConfigError, match="held-out probe"):
        ProbeSpec("a.safetensors", weight=1.0)
    with pytest.raises(ConfigError, match="unknown penalty shape"):
        ProbeSpec("a.safetensors", penalty="sum")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="share the name"):
        TrainConfig(probes=(ProbeSpec("a.safetensors"), ProbeSpec("b/a.safetensors")))
