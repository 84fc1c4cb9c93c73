"""The shipped example configs run from the CLI and give a verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heldout.analysis.records import read_records

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def test_own_model_example_gives_a_verdict_from_the_cli(
        tmp_path: Path, tiny_checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from heldout.cli import main

    monkeypatch.chdir(ROOT)  # the example's data paths are relative to the repository
    out = tmp_path / "run"
    code = main(["train", "--config", str(EXAMPLES / "run-own-model.json"),
                 "--model", str(tiny_checkpoints["llama"]), "--out", str(out),
                 "--steps", "2", "--eval-every", "2", "--checkpoint-every", "2",
                 "--no-plots", "--quiet"])
    assert code == 0, capsys.readouterr().err
    verdict = json.loads((out / "verdict.json").read_text())
    records = read_records(out)
    first = records[0]
    # the planted text monitors read the shipped sets exactly: the contradiction rule
    # separates the eval set's lies perfectly and flags every forced lie; the answer
    # rule reads only the part after the chain of thought ("so ...")
    cot = first.monitors["cot-contradicts-answer"]
    assert cot.kind == "text" and cot.role == "train_against" and cot.part == "all"
    assert cot.fixed.auroc == 1.0 and cot.forced.recall_base == 1.0
    answer = first.monitors["answer-agrees"]
    assert answer.part == "answer" and answer.role == "held_out"
    assert answer.fixed.auroc == 1.0 and answer.control_fpr_base == 0.0
    # a random-weight model never says "yes you are right": misbehavior 0 -> honest
    assert [r.misbehavior_rate for r in records] == [0.0, 0.0]
    assert verdict["outcome"] == "honest"
    assert (out / "control" / "evals.jsonl").is_file()


def test_own_model_example_without_labeler_is_refused_before_work(
        tmp_path: Path, tiny_checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from heldout.cli import main

    monkeypatch.chdir(ROOT)
    config = json.loads((EXAMPLES / "run-own-model.json").read_text())
    del config["environment"]["labeler"]
    path = tmp_path / "no-labeler.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--model", str(tiny_checkpoints["llama"]),
                 "--out", str(out), "--quiet"]) == 2
    assert "need a labeler" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_organism_example_trains_against_a_cot_monitor_and_ends_honest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """RL against the CoT-contradiction rule with λ = 2 > the task reward's 1: every lie
    the organism can tell states the true sum, so the rule sees it, and lying stops."""
    import shutil

    from heldout.cli import main

    monkeypatch.chdir(tmp_path)  # the example names runs/organism-probes/...
    shutil.copy(EXAMPLES / "run-organism.json", tmp_path / "run.json")
    assert main(["organism-probes", "--out", "runs/organism-probes",
                 "--sites", "resid_post:2,resid_post:3"]) == 0
    assert main(["train", "--config", "run.json", "--no-plots", "--quiet"]) == 0, \
        capsys.readouterr().err
    out = tmp_path / "runs" / "organism-cot-monitor"
    records, control = read_records(out), read_records(out / "control")
    first, last = records[0], records[-1]
    cot = first.monitors["cot-contradiction"]
    assert cot.kind == "text" and cot.own.recall_base == 1.0 and cot.control_fpr_base == 0.0
    assert first.monitors["L2 decision"].own.recall_base > 0.5  # held out, fires at start
    assert first.misbehavior_rate > 0.2 and control[-1].misbehavior_rate > 0.2
    assert last.misbehavior_rate < 0.5 * control[-1].misbehavior_rate
    assert json.loads((out / "verdict.json").read_text())["outcome"] == "honest"


@pytest.mark.slow
def test_trl_grpo_example_ends_in_a_verdict(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A few GRPO steps of ``examples/trl_grpo.py`` on the organism, both arms, LoRA."""
    import importlib.util

    pytest.importorskip("trl")
    spec = importlib.util.spec_from_file_location("trl_grpo", EXAMPLES / "trl_grpo.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "trl"
    assert example.main(["--out", str(out), "--steps", "2", "--eval-every", "1",
                         "--n-eval", "40", "--lora"]) == 0
    printed = capsys.readouterr().out
    verdict = json.loads((out / "verdict.json").read_text())
    assert f"verdict: {verdict['outcome']}" in printed
    for arm in ("control", "run"):
        assert [r.step for r in read_records(out / arm)] == [0, 1, 2]
        assert (out / arm / "plots").is_dir()
    against = read_records(out / "run")[0].monitors["L2 decision"]
    assert against.role == "train_against" and against.fixed.auroc > 0.9
