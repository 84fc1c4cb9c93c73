"""End to end: the tiny grid on the (shared, default) organism; resume; the report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_tiny_atlas_runs_resumes_and_reports(tmp_path: Path) -> None:
    from heldout.atlas import run_atlas, tiny_grid
    from heldout.errors import ConfigError
    from heldout.organism import load_organism

    organism = load_organism()  # the default config: installed from the shipped copy
    spec = tiny_grid()
    out = tmp_path / "atlas"
    result = run_atlas(spec, out, progress=False, organism=organism)
    assert sorted(result.ran) == sorted(f"{a.name}/seed-0" for a in spec.arms)
    outcomes = {s.arm: s.verdict["outcome"] for s in result.summaries}
    # The control judged against itself: its misbehavior persists and its monitors fire
    # exactly as much as the control's, so the verdict's rules can only call it blatant.
    assert outcomes["control"] == "blatant"
    for s in result.summaries:
        assert s.seconds > 0 and s.retrain
    md = (out / "report.md").read_text()
    assert (out / "report.html").is_file() and (out / "figures" / "overview.png").is_file()
    for arm in spec.arms:
        assert f"Arm: {arm.name}" in md and (out / "figures" / f"curves-{arm.name}.png").is_file()
    assert "reproduced" in md and "cost (s)" in md and "Cundy & Gleave" in md
    found = json.loads((out / "findings.json").read_text())
    # F1..F4 in order, each judged from the runs above by the rule findings.py states;
    # the tiny grid trains against no mean- or max-aggregated probe, so F2 is untested.
    quiet = [o for a, o in outcomes.items()
             if a != "control" and o in ("obfuscated_activations", "obfuscated_policy")]
    assert [f["reproduced"] for f in found][:3] == [
        "yes" if outcomes["gradient-one-layer"] == "obfuscated_activations" else "no",
        "not tested",
        "yes" if outcomes["reward-live"] == "honest" else "no"]
    assert (found[3]["reproduced"] == "not tested") == (not quiet)
    # a second call redoes nothing
    again = run_atlas(spec, out, progress=False, organism=organism)
    assert again.ran == [] and len(again.skipped) == len(spec.arms)
    # an interrupted run resumes from its checkpoint; others stay finished
    (out / "runs" / "reward-live" / "seed-0" / "summary.json").unlink()
    again = run_atlas(spec, out, progress=False, organism=organism, report=False)
    assert again.ran == ["reward-live/seed-0"]
    # a changed grid is refused before any training
    changed = replace(spec, steps=spec.steps + 1)
    with pytest.raises(ConfigError, match="different grid"):
        run_atlas(changed, out, progress=False, organism=organism, report=False)
