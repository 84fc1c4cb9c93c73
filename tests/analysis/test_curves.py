"""Curves of a run read from its typed evaluation records: one figure per monitor, named
by its kind (``probe-<name>``, ``text-<name>``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heldout.analysis.curves import _layout, plot_run, series
from heldout.errors import DataError
from tests.analysis.test_records import planted


def test_series_keys_monitors_by_kind() -> None:
    curves = series([planted(0), planted(4)])
    assert curves["probe", "p", "own", "recall_base"] == [(0, 0.8), (4, 0.8)]
    assert ("text", "cot", "fixed", "auroc") in curves
    assert ("misbehavior_rate",) in curves and ("retrained", "resid_post:1/last", "auroc") in curves
    assert not any(k[-1].startswith("threshold") for k in curves)  # thresholds skipped
    assert not any(k[0] in ("forward_calls", "pca90_base", "seconds") for k in curves)
    assert _layout(("probe", "p", "own", "recall_base")) == ("probe-p", "recall_base", "own")
    assert _layout(("text", "cot", "control_fpr_base")) == ("text-cot", "control_fpr_base", "all")
    assert _layout(("retrained", "resid_post:1/last", "auroc")) == \
        ("retrained", "auroc", "resid_post:1/last")
    assert _layout(("pca90", "resid_post:1/last")) == ("pca90", "pca90", "resid_post:1/last")


def test_plot_run_writes_a_figure_per_monitor(tmp_path: Path) -> None:
    for name in ("run", "control"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "evals.jsonl").write_text(
            "".join(json.dumps(planted(s).to_dict()) + "\n" for s in (0, 5)))
    (tmp_path / "run" / "steps.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1.0 / (s + 1)}) + "\n" for s in range(3)))
    written = {p.name for p in plot_run(tmp_path / "run", control=tmp_path / "control")}
    assert {"behaviour.png", "probe-p.png", "text-cot.png", "retrained.png", "pca90.png",
            "losses.png"} <= written


def test_plot_run_without_records_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no monitor log"):
        plot_run(tmp_path)
