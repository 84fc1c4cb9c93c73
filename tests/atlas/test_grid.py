"""The grid spec: JSON round trip, validation before any work, selection, CLI spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heldout.atlas.grid import Arm, GridSpec, ProbeKind, TextMonitorKind
from heldout.atlas.grids import default_grid, quick_grid, tiny_grid
from heldout.errors import ConfigError


@pytest.mark.parametrize("make", [default_grid, quick_grid, tiny_grid])
def test_round_trip(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = make()
    assert GridSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert GridSpec.load(spec.save(tmp_path / "g.json")) == spec
    assert spec.control.control and not spec.control.against


def test_default_grid_has_the_issue_arms() -> None:
    spec = default_grid()
    assert len(spec.seeds) >= 3 and spec.organism.get("stochastic") is True
    tagged = {f for a in spec.arms for f in a.findings}
    assert tagged == {"F1", "F2", "F3", "F4", "F5", "F6"}
    modes = {(a.mode, len(a.against)) for a in spec.arms}
    assert ("gradient", 1) in modes and ("gradient", 3) in modes and ("screening", 1) in modes
    f2 = [a for a in spec.arms if "F2" in a.findings]
    aggs = {spec.probe(a.against[0]).aggregation for a in f2}
    assert {"mean", "max", "attention", "multimax", "rolling"} <= aggs
    assert all(a.mode == "reward" for a in f2)
    text_arms = [a for a in spec.arms if any(spec.is_text(n) for n in a.against)]
    assert text_arms and all(a.mode == "reward" for a in text_arms)
    f3 = [a for a in spec.arms if "F3" in a.findings]
    assert len({(a.weight, a.kl_weight) for a in f3}) == len(f3) >= 3
    assert len(quick_grid().seeds) == 1 and quick_grid().steps < spec.steps


def test_bad_specs_raise_config_errors() -> None:
    probes = (ProbeKind("p", "resid_post:1"),)
    control = Arm("control", control=True)
    with pytest.raises(ConfigError, match="unknown monitor"):
        GridSpec(probes, (control, Arm("a", against=("nope",), weight=1.0)))
    with pytest.raises(ConfigError, match="exactly one control"):
        GridSpec(probes, (Arm("a", against=("p",), weight=1.0),))
    with pytest.raises(ConfigError, match="λ = 0"):
        Arm("a", against=("p",))
    with pytest.raises(ConfigError, match="unknown mode"):
        Arm("a", mode="rl")
    with pytest.raises(ConfigError, match="unknown finding"):
        Arm("a", findings=("F9",))
    text = (TextMonitorKind("t", "heldout.organism.behaviour:cot_contradiction"),)
    with pytest.raises(ConfigError, match="trains against a text monitor"):
        GridSpec(probes, (control, Arm("g", against=("t",), weight=1.0)), text_monitors=text)
    with pytest.raises(ConfigError, match="cannot import|not found|no module|has no"):
        TextMonitorKind("t", "heldout.organism.behaviour:nope")
    with pytest.raises(ConfigError, match="max_filler"):
        GridSpec(probes, (control,), organism={"max_filler": 99})
    with pytest.raises(ConfigError, match="plain name"):
        Arm("a/b")
    with pytest.raises(ConfigError, match="bad site"):
        ProbeKind("p", "nowhere")
    with pytest.raises(ConfigError, match="unknown Arm field"):
        Arm.from_dict({"name": "a", "lambda": 1})
    with pytest.raises(ConfigError, match="share the name"):
        GridSpec(probes + probes, (control,))
    with pytest.raises(ConfigError, match="seeds"):
        GridSpec(probes, (control,), seeds=(0, 0))
    assert ProbeKind("t", "resid_post:1", "token_max").selection == "tokens"


def test_select_keeps_the_control() -> None:
    spec = default_grid().select(["reward-strong"], [3])
    assert [a.name for a in spec.arms] == ["control", "reward-strong"] and spec.seeds == (3,)
    with pytest.raises(ConfigError, match="no arm"):
        default_grid().select(["nope"])


def test_cli_prints_a_spec_and_rejects_a_bad_one(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from heldout.cli import main

    assert main(["atlas", "--quick", "--print-spec", "--arms", "gradient-one-layer"]) == 0
    printed = GridSpec.from_dict(json.loads(capsys.readouterr().out))
    assert [a.name for a in printed.arms] == ["control", "gradient-one-layer"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"probes": [], "arms": []}))
    assert main(["atlas", "--spec", str(bad), "--out", str(tmp_path / "a")]) == 2
    assert "at least one probe" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # refused before any work
