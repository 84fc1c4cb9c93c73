"""``heldout train`` on one process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def test_train_cli_refuses_a_verdict_without_labeler_before_training(
        tiny_config: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from heldout.cli import main

    config_file = tiny_config.save(tmp_path / "run.json")
    assert main(["train", "--config", str(config_file), "--quiet"]) == 2
    assert "need a labeler" in capsys.readouterr().err
    assert not Path(tiny_config.out).exists()
    assert main(["train", "--config", str(config_file), "--quiet", "--no-control"]) == 0
    assert (Path(tiny_config.out) / "evals.jsonl").is_file()
    assert f"run written to {tiny_config.out}" in capsys.readouterr().out


def test_every_scalar_config_field_is_a_flag_and_environment_files_load(tmp_path: Path) -> None:
    from dataclasses import fields

    from heldout.cli import build_parser
    from heldout.training.commands import build_config, config_flags
    from heldout.training.config import TrainConfig

    flags = config_flags()
    structured = {"probes", "monitors", "organism"}
    assert {dest for dest, _, _ in flags.values()} == \
        {f.name for f in fields(TrainConfig)} - structured
    assert flags["--reward-top-p"][1] is float and flags["--train-from-layer"][1] is int
    assert flags["--plots"][1] is bool and "PNGs" in flags["--plots"][2]
    env = {"train": "t.jsonl", "eval": "e.jsonl", "control": "c.jsonl",
           "labeler": {"misbehavior": "yes"}}
    (tmp_path / "env.json").write_text(__import__("json").dumps(env))
    args = build_parser().parse_args(
        ["train", "--environment", str(tmp_path / "env.json"), "--held-out", "p.safetensors",
         "--reward-top-p", "0.9", "--no-plots", "--mode", "reward"])
    config = build_config(args)
    assert config.environment == env and config.reward_top_p == 0.9 and not config.plots
    assert config.mode == "reward" and config.probes[0].role == "held_out"
