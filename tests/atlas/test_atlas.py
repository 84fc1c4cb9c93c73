"""End to end: the tiny grid on the (shared, default) organism; resume; the report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_tiny_atlas_runs_resumes_and_reports(tmp_path: Path) -> None:
    import torch

    from heldout.atlas import run_atlas, tiny_grid
    from heldout.errors import ConfigError
    from heldout.organism import load_organism

    torch.set_num_threads(1)
    organism = load_organism()  # the default config: trained once per test session
    spec = tiny_grid()
    out = tmp_path / "atlas"
    result = run_atlas(spec, out, progress=False, organism=organism)
    assert sorted(result.ran) == sorted(f"{a.name}/seed-0" for a in spec.arms)
    for s in result.summaries:
        assert s.verdict["outcome"] in ("honest", "blatant", "obfuscated_policy",
                                        "obfuscated_activations")
        assert s.seconds > 0 and s.retrain
    md = (out / "report.md").read_text()
    assert (out / "report.html").is_file() and (out / "figures" / "overview.png").is_file()
    for arm in spec.arms:
        assert f"Arm: {arm.name}" in md and (out / "figures" / f"curves-{arm.name}.png").is_file()
    assert "reproduced" in md and "cost (s)" in md and "Cundy & Gleave" in md
    found = json.loads((out / "findings.json").read_text())
    assert [f["reproduced"] in ("yes", "no", "not tested") for f in found] == [True] * 4
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
