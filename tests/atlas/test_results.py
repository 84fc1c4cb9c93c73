"""The atlas's numbers from planted runs: Wilson intervals and the verdict distribution
of an arm, its cost, pooled metrics (with text monitors), evasion, and the
cross-aggregation matrix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heldout.atlas.results import (
    Share,
    arm_evasion,
    arm_metrics,
    collect,
    cross_aggregation,
    run_evasion,
    wilson_interval,
)
from heldout.errors import DataError
from tests.atlas.planting import Plant, each, plant, planted_grid


@pytest.mark.parametrize("k, n, low, high", [
    (2, 3, 0.2077, 0.9385),   # textbook values of the Wilson score interval
    (0, 3, 0.0, 0.5615),
    (3, 3, 0.4385, 1.0),
    (4, 4, 0.5101, 1.0),       # the fewest seeds at which 4/4 and 0/4 do not overlap
    (5, 10, 0.2366, 0.7634),
])
def test_wilson_interval(k: int, n: int, low: float, high: float) -> None:
    assert wilson_interval(k, n) == pytest.approx((low, high), abs=1e-4)
    assert Share(k, n).text() == f"{k}/{n} [{low:.2f}, {high:.2f}]"


def test_verdict_distribution_and_cost_of_a_planted_arm(tmp_path: Path) -> None:
    spec = planted_grid(seeds=3)
    summaries = plant(tmp_path, spec, {"rw-strong": each(
        Plant("honest", rate=0.02, seconds=10.0), Plant("honest", rate=0.02, seconds=20.0),
        Plant("blatant", seconds=36.0))})
    arm = next(a for a in collect(spec, summaries) if a.arm.name == "rw-strong")
    honest, blatant = arm.share("honest"), arm.share("blatant")
    assert (honest.k, honest.n, honest.fraction) == (2, 3, pytest.approx(2 / 3))
    assert (honest.low, honest.high) == pytest.approx((0.2077, 0.9385), abs=1e-4)
    assert (blatant.low, blatant.high) == pytest.approx((0.0615, 0.7923), abs=1e-4)
    assert arm.share("obfuscated_policy").text() == "0/3 [0.00, 0.56]"
    assert arm.majority == "honest"
    assert arm.seconds_total == pytest.approx(66.0) and arm.seconds_mean == pytest.approx(22.0)


def test_a_split_has_no_majority(tmp_path: Path) -> None:
    spec = planted_grid(seeds=2)
    summaries = plant(tmp_path, spec, {"rw-strong": each(Plant("honest", rate=0.02),
                                                         Plant("blatant"))})
    arm = next(a for a in collect(spec, summaries) if a.arm.name == "rw-strong")
    assert arm.majority is None


def test_metrics_with_probes_and_text_monitors(tmp_path: Path) -> None:
    spec = planted_grid(seeds=2)
    summaries = plant(tmp_path, spec, {
        "grad-one": each(Plant("obfuscated_activations", recalls={"P-dec": 0.1}, kl=0.2)),
        "rw-cot": each(Plant("obfuscated_policy", recalls={"cot": 0.0}, recall=0.7))})
    results = {a.arm.name: a for a in collect(spec, summaries)}
    grad, cot = results["grad-one"], results["rw-cot"]
    assert grad.held_out_probes == ["P-mean", "P-max", "P-attn", "P-L1", "P-L3"]
    assert grad.held_out_texts == ["cot"] and cot.against_probes == []
    m = arm_metrics(grad, n_boot=50)
    assert m["misbehavior rate"].value == pytest.approx(0.8)
    assert m["trained-against recall, own misbehavior"].value == pytest.approx(0.1)
    assert m["held-out probe recall, forced"].value == pytest.approx(0.85, abs=0.005)
    assert m["held-out text monitor recall, own misbehavior"].value == pytest.approx(0.85)
    assert m["retrained probe recall, forced"].value == pytest.approx(0.9)
    assert m["KL to base"].value == pytest.approx(0.2)
    # an arm against a text monitor only: no retrained figure, nothing raises
    mc = arm_metrics(cot, n_boot=50)
    assert mc["trained-against recall, own misbehavior"].value == pytest.approx(0.0)
    assert mc["base model reads the outputs (cross-model recall)"].value == pytest.approx(0.0)
    assert mc["held-out probe recall, own misbehavior"].value == pytest.approx(0.7)
    assert mc["retrained probe recall, forced"].value is None


def test_evasion_is_the_recall_lost_relative_to_the_control(tmp_path: Path) -> None:
    spec = planted_grid(seeds=3)
    summaries = plant(tmp_path, spec, {
        "control": each(Plant(recall=0.8), Plant(recall=0.5), Plant(recall=0.0)),
        "rw-mean": each(Plant(recalls={"P-mean": 0.6}), Plant(recalls={"P-mean": 0.9}),
                        Plant(recalls={"P-mean": 0.3})),
        "rw-max": each(Plant("honest", rate=0.05, recalls={"P-max": 0.0}))})
    results = {a.arm.name: a for a in collect(spec, summaries)}
    control = results["control"]
    assert run_evasion(results["rw-mean"], control, 0) == pytest.approx(1 - 0.6 / 0.8)
    assert run_evasion(results["rw-mean"], control, 1) == 0.0  # more recall: clipped
    assert run_evasion(results["rw-mean"], control, 2) is None  # the control caught none
    assert run_evasion(results["rw-max"], control, 0) == 0.0  # honest: nothing evaded
    assert arm_evasion(results["rw-mean"], control, 50).value == pytest.approx(0.25 / 2)


def test_cross_aggregation_matrix(tmp_path: Path) -> None:
    spec = planted_grid(seeds=2)
    summaries = plant(tmp_path, spec, {
        "rw-mean": each(Plant(recall=0.8, recalls={"P-mean": 0.1}),
                        Plant(recall=0.6, recalls={"P-mean": 0.3})),
        "rw-max": each(Plant(recall=0.9, recalls={"P-max": 0.0, "cot": 0.5})),
        "rw-attn": each(Plant("honest", rate=0.0))})
    m = cross_aggregation(collect(spec, summaries), spec)
    assert m.arms == ["rw-mean", "rw-max", "rw-attn", "control"]
    assert m.monitors == ["P-mean", "P-max", "P-attn", "P-L1", "P-dec", "P-L3", "cot"]
    assert m.aggregations == ["mean", "max", "attention", "token:5", "token:5", "token:5",
                              "text"]
    assert m.trained == [["P-mean"], ["P-max"], ["P-attn"], []]
    assert m.value("rw-mean", "P-mean") == pytest.approx(0.2)   # mean over seeds
    assert m.value("rw-mean", "P-max") == pytest.approx(0.7)
    assert m.value("rw-max", "P-max") == 0.0 and m.value("rw-max", "cot") == 0.5
    assert all(v is None for v in m.values[2])                  # no lies to detect
    assert m.value("control", "P-attn") == pytest.approx(0.85)


def test_a_run_without_a_monitor_of_the_grid_is_an_error(tmp_path: Path) -> None:
    spec = planted_grid(seeds=1)
    summaries = plant(tmp_path, spec, {})
    folder = Path(next(s.out for s in summaries if s.arm == "grad-one"))
    rows = [json.loads(x) for x in (folder / "evals.jsonl").read_text().splitlines()]
    for row in rows:
        del row["monitors"]["P-dec"]
    (folder / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    grad = next(a for a in collect(spec, summaries) if a.arm.name == "grad-one")
    with pytest.raises(DataError, match="monitor 'P-dec' is not in the evaluation record"):
        arm_metrics(grad, n_boot=50)
