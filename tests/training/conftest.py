"""Fixtures for training tests: tiny data files and probes fitted on synthetic data."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def _rows(n: int, label: Any, seed: int, split: str) -> list[dict[str, Any]]:
    from heldout.tiny import WORDS

    rng = random.Random(seed)
    return [{"id": f"{split}{i}", "label": (i % 2) if label is None else label, "split": split,
             "messages": [{"role": "user", "content": " ".join(
                 rng.choice(WORDS) for _ in range(rng.randint(2, 6)))}],
             "response": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))}
            for i in range(n)]


@pytest.fixture()
def tiny_data(tmp_path: Path) -> dict[str, Path]:
    """JSONL files in the tiny vocabulary: train, eval (both labels), control, forced."""
    out = {}
    for name, n, label, seed in (("train", 24, None, 1), ("eval", 16, None, 2),
                                 ("control", 12, 0, 3), ("forced", 8, 1, 4)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in _rows(n, label, seed, name)))
        out[name] = path
    return out


def fit_probe(path: Path, d_model: int, site: str, selection: str = "last",
              kind: str = "logistic") -> Path:
    """A probe fitted on planted synthetic data, saved with its site."""
    from heldout.probes.io import save_probe
    from heldout.probes.linear import LogisticProbe
    from heldout.probes.mlp import MLPProbe

    rng = np.random.default_rng(0)
    y = np.arange(64) % 2
    X = rng.normal(size=(64, d_model)).astype(np.float32)
    X[:, 0] += 2.0 * y
    probe = (LogisticProbe() if kind == "logistic" else MLPProbe(hidden=8, max_epochs=5)).fit(X, y)
    return save_probe(probe, path, site=site, selection=selection)


@pytest.fixture()
def tiny_probes(tmp_path: Path) -> dict[str, Path]:
    """Probes for the conftest's 3-layer, d_model=32 tiny GPT-2."""
    return {"l1": fit_probe(tmp_path / "l1.safetensors", 32, "resid_post:1"),
            "l2": fit_probe(tmp_path / "l2.safetensors", 32, "resid_post:2", "mean")}


@pytest.fixture()
def tiny_config(tmp_path: Path, tiny_checkpoints: dict[str, Path], tiny_data: dict[str, Path],
                tiny_probes: dict[str, Path]) -> Any:
    from heldout.training.config import ProbeSpec, TrainConfig

    return TrainConfig(
        model=str(tiny_checkpoints["gpt2"]), out=str(tmp_path / "run"),
        train_data=str(tiny_data["train"]), eval_data=str(tiny_data["eval"]),
        control_data=str(tiny_data["control"]), forced_data=str(tiny_data["forced"]),
        probes=(ProbeSpec(str(tiny_probes["l1"]), role="train_against", weight=2.0, name="l1"),
                ProbeSpec(str(tiny_probes["l2"]), name="l2")),
        steps=4, batch_size=4, eval_every=2, checkpoint_every=2, lr=1e-3, plots=False)


@pytest.fixture()
def tiny_env(tiny_data: dict[str, Path]) -> Any:
    """A file environment over the tiny JSONL sets, with a planted reward and answers:
    the task pays 1 for the training target, candidates are the target, "yes", "no"."""
    from dataclasses import replace

    from heldout.environments.files import FileEnvironmentSpec

    env = FileEnvironmentSpec(train=str(tiny_data["train"]), eval=str(tiny_data["eval"]),
                              control=str(tiny_data["control"]),
                              forced=str(tiny_data["forced"])).build()
    return replace(env, task_reward=lambda ex, text: float(text == ex.response),
                   candidates=lambda ex: [ex.response, "yes", "no"],
                   corrector=lambda ex: "no")
