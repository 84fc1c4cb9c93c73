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
    saved = json.loads((out / "findings.json").read_text())
    # F1..F6 in order, each judged by the rule findings.py states; a finding no arm of
    # the grid is tagged with is not tested, and one seed makes the rest inconclusive.
    assert [f["id"] for f in saved["findings"]] == ["F1", "F2", "F3", "F4", "F5", "F6"]
    for f in saved["findings"]:
        tagged = any(f["id"] in a.findings for a in spec.arms)
        assert f["status"] == ("inconclusive" if tagged else "not tested")
    assert saved["headline"].startswith("Quick grid: 1 seed per arm") and \
        saved["headline"] in md
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
