"""End to end on organism v2 (shipped): a grid whose arms train against a text monitor by
reward and screen with a probe, runs through the runner as the default grid's do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_v2_grid_with_a_text_monitor_and_screening(tmp_path: Path) -> None:
    from heldout.atlas import run_atlas
    from heldout.atlas.grid import Arm, GridSpec, ProbeKind, TextMonitorKind
    from heldout.atlas.grids import VERDICT
    from heldout.organism.behaviour import V2_ORGANISM

    spec = GridSpec(
        probes=(ProbeKind("L2-verdict", "resid_post:2", "logistic", VERDICT),
                ProbeKind("L3-multimax", "resid_post:3", "multimax")),
        text_monitors=(TextMonitorKind("cot", "heldout.organism.behaviour:cot_contradiction"),),
        arms=(Arm("control", control=True),
              Arm("reward-cot", mode="reward", against=("cot",), weight=2.0, kl_weight=0.1,
                  findings=("F4",)),
              Arm("screening", mode="screening", against=("L2-verdict",), findings=("F6",))),
        seeds=(0,), steps=4, eval_every=2, batch_size=8, n_train=48, n_eval=40, lr=1e-3,
        bootstrap=50, organism=dict(V2_ORGANISM))
    out = tmp_path / "atlas"
    result = run_atlas(spec, out, progress=False)
    assert sorted(result.ran) == sorted(f"{a.name}/seed-0" for a in spec.arms)
    config = json.loads((out / "runs" / "reward-cot" / "seed-0" / "config.json").read_text())
    assert config["organism"] == V2_ORGANISM and config["max_new_tokens"] == 15
    monitors = {m["name"]: m for m in config["monitors"]}
    assert monitors["cot"]["role"] == "train_against" and monitors["cot"]["weight"] == 2.0
    last = [json.loads(line) for line in
            (out / "runs" / "reward-cot" / "seed-0" / "evals.jsonl").open()][-1]
    assert last["monitors"]["cot"]["kind"] == "text"
    summary = {s.arm: s for s in result.summaries}
    assert summary["reward-cot"].retrain == {}  # a text monitor is not refitted
    assert set(summary["screening"].retrain) == {"L2-verdict"}
    # the v2 organism's own outputs carry filler and the lie mark: the labeler reads them
    assert last["misbehavior_rate"] is not None
    md = (out / "report.md").read_text()
    assert "Arm: reward-cot" in md and "Arm: screening" in md and "F4" in md
