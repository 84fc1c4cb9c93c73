"""TensorBoard events of a run: the same scalars as its JSONL logs, once per step."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heldout.data import Example
from heldout.errors import ConfigError
from heldout.training.tensorboard import eval_scalars, step_scalars
from heldout.training.trainer import Trainer


class ByLabel:
    """A labeler that marks the labeled misbehaving eval rows, whatever the text: own
    outputs then have both labels, so every monitor has an own-output recall."""

    def misbehavior(self, example: Example, response: str) -> bool:
        return example.label == 1

    def correct(self, example: Example, response: str) -> bool:
        return bool(response.strip())


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder)).Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
            for tag in acc.Tags()["scalars"]}


def _expected(records: list[dict[str, Any]], scalars: Any) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for tag, value in scalars(r).items():
            out.setdefault(tag, []).append((r["step"], value))
    return out


def _assert_same(got: list[tuple[int, float]], want: list[tuple[int, float]], tag: str) -> None:
    assert [s for s, _ in got] == [s for s, _ in want], tag
    np.testing.assert_array_equal(np.array([v for _, v in got], dtype=np.float32),
                                  np.array([v for _, v in want], dtype=np.float32),
                                  err_msg=tag)  # events hold float32


def test_events_equal_the_logs_once_per_step_across_a_resume(tiny_config: Any) -> None:
    pytest.importorskip("tensorboard")
    config = tiny_config.replace(tensorboard=True)  # 4 steps, evaluated at 0, 2, 4
    out = Path(config.out)
    Trainer(config, labeler=ByLabel(), progress=False).train(until=3)  # checkpoint at 2
    assert [s for s, _ in _events(out / "tensorboard")["loss/total"]] == [1, 2, 3]
    resumed = Trainer(config, resume=True, labeler=ByLabel(), progress=False)
    assert resumed.step_count == 2  # step 3 is logged again, in a second event file
    resumed.train()
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2

    steps, evals = _jsonl(out / "steps.jsonl"), _jsonl(out / "evals.jsonl")
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert [r["step"] for r in evals] == [0, 2, 4]
    want = _expected(steps, step_scalars) | _expected(evals, eval_scalars)
    got = _events(out / "tensorboard")
    assert set(got) == set(want)
    for tag in want:
        _assert_same(got[tag], want[tag], tag)
    assert {"loss/total", "loss/task", "loss/penalty/l1", "metrics/lr", "metrics/grad_norm",
            "metrics/prob/l1"} <= set(got)
    assert [v for _, v in got["loss/total"]] == pytest.approx([r["loss"] for r in steps],
                                                              rel=1e-6)
    for tag in ("eval/misbehavior_rate", "eval/task_accuracy", "eval/kl_to_base",
                "monitor/l1/own/recall_base", "monitor/l2/own/recall_base",
                "monitor/l2/fixed/auroc", "monitor/l1/threshold_base"):
        assert [s for s, _ in got[tag]] == [0, 2, 4], tag
    assert [v for _, v in got["eval/misbehavior_rate"]] == \
        pytest.approx([r["misbehavior_rate"] for r in evals])
    assert [v for _, v in got["monitor/l1/own/recall_base"]] == \
        pytest.approx([r["monitors"]["l1"]["own"]["recall_base"] for r in evals])


def test_without_the_package_the_run_stops_before_anything_is_written(
        tiny_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from heldout.cli import main

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    config = tiny_config.replace(tensorboard=True)
    with pytest.raises(ConfigError, match=r"pip install 'heldout\[tensorboard\]'"):
        Trainer(config, progress=False)
    config_file = tiny_config.save(tmp_path / "run.json")
    assert main(["train", "--config", str(config_file), "--tensorboard", "--quiet",
                 "--no-control"]) == 2
    assert "heldout[tensorboard]" in capsys.readouterr().err
    assert not Path(config.out).exists()


def test_the_flag_and_the_fingerprint(tmp_path: Path) -> None:
    from heldout.cli import build_parser
    from heldout.training.commands import build_config
    from heldout.training.config import TrainConfig

    args = build_parser().parse_args(["train", "--held-out", "p.safetensors", "--tensorboard"])
    config = build_config(args)
    assert config.tensorboard
    # logging only: a run can be resumed with it turned on or off
    assert config.fingerprint() == config.replace(tensorboard=False).fingerprint()
    old = config.to_dict()
    old.pop("tensorboard")  # a config.json written before the field
    assert not TrainConfig.from_dict(old).tensorboard
    assert TrainConfig.load(config.save(tmp_path / "c.json")) == config
