"""``torchrun -m heldout train`` with two CPU processes matches one process.

Real launches: ``python -m torch.distributed.run --standalone --nproc_per_node=2 -m
heldout train ...`` (gloo, OMP_NUM_THREADS=1, HF_HUB_OFFLINE=1) against ``python -m
heldout train ...`` with the same config (same global batch of 8). Every response has
the same number of tokens, so each rank's mean loss over its half of the batch
averages to the single-process mean exactly; the stated tolerance (relative 1e-4 on
losses, absolute 1e-5 on weights) only absorbs float32 reduction order.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-5


def _data(folder: Path) -> None:
    from heldout.tiny import WORDS

    def rows(n: int, label: int | None, seed: int) -> list[dict[str, object]]:
        rng = random.Random(seed)
        return [{"id": f"r{seed}-{i}", "label": (i % 2) if label is None else label,
                 "messages": [{"role": "user", "content": " ".join(
                     rng.choice(WORDS) for _ in range(4))}],
                 "response": " ".join(rng.choice(WORDS) for _ in range(3))} for i in range(n)]

    for name, n, label, seed in (("train", 32, None, 1), ("eval", 16, None, 2),
                                 ("control", 12, 0, 3)):
        (folder / f"{name}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows(n, label, seed)))


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _steps(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (path / "steps.jsonl").read_text().splitlines()]


def test_two_processes_match_one(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from heldout.probes.io import save_probe
    from heldout.probes.linear import LogisticProbe
    from heldout.tiny import write_tiny_checkpoint

    write_tiny_checkpoint(tmp_path / "ckpt", n_layers=2, d_model=32, seed=1)
    _data(tmp_path)
    rng = np.random.default_rng(0)
    y = np.arange(64) % 2
    X = rng.normal(size=(64, 32)).astype(np.float32)
    X[:, 0] += 2.0 * y
    save_probe(LogisticProbe().fit(X, y), tmp_path / "p1.safetensors", site="resid_post:1")
    args = ["train", "--model", "ckpt", "--train-data", "train.jsonl", "--eval-data",
            "eval.jsonl", "--control-data", "control.jsonl", "--against", "p1.safetensors",
            "--weight", "2", "--kl-weight", "0.5", "--steps", "4", "--batch-size", "8",
            "--eval-every", "2", "--checkpoint-every", "2", "--no-control", "--quiet"]
    _run([sys.executable, "-m", "heldout", *args, "--out", "single"], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
          "-m", "heldout", *args, "--out", "multi"], tmp_path)
    one, two = _steps(tmp_path / "single"), _steps(tmp_path / "multi")
    assert [r["step"] for r in two] == [1, 2, 3, 4]  # rank 0 alone wrote the log
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL)
        assert b["losses"] == pytest.approx(a["losses"], rel=LOSS_RTOL)
        assert b["metrics"]["grad_norm"] == pytest.approx(a["metrics"]["grad_norm"],
                                                         rel=LOSS_RTOL)
    wa = load_file(str(tmp_path / "single" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "multi" / "final" / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=WEIGHT_ATOL) for k in wa)
    evals = [json.loads(x) for x in (tmp_path / "multi" / "evals.jsonl").read_text()
             .splitlines()]
    assert [r["step"] for r in evals] == [0, 2, 4]
    assert (tmp_path / "multi" / "checkpoints").is_dir()
