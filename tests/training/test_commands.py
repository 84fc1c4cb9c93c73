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
