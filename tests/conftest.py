"""Shared fixtures: seeding, offline Hugging Face, tiny real checkpoints on disk."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One HELDOUT_HOME per test session, so the organism is trained once and shared by every
# test that needs it. Set HELDOUT_TEST_HOME to keep it between sessions while developing.
os.environ["HELDOUT_HOME"] = os.environ.get("HELDOUT_TEST_HOME") or tempfile.mkdtemp(
    prefix="heldout-test-home-")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session", autouse=True)
def _threads() -> Any:
    """heldout's default thread count (one, or $HELDOUT_THREADS) for the whole session, as
    the CLI uses: a second thread collapses when another process holds a core."""
    from heldout.threads import limit_threads

    with limit_threads() as n:
        yield n


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real HF checkpoints (random weights) of two architectures, written by the tests."""
    from heldout.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    return {arch: write_tiny_checkpoint(root / arch, arch=arch, n_layers=3, seed=1)
            for arch in ("gpt2", "llama")}


@pytest.fixture(scope="session")
def gpt2_model(tiny_checkpoints: dict[str, Path]):  # type: ignore[no-untyped-def]
    from heldout.models import load_model

    return load_model(tiny_checkpoints["gpt2"], device="cpu")


@pytest.fixture(scope="session")
def llama_model(tiny_checkpoints: dict[str, Path]):  # type: ignore[no-untyped-def]
    from heldout.models import load_model

    return load_model(tiny_checkpoints["llama"], device="cpu")


@pytest.fixture()
def chat_dataset():  # type: ignore[no-untyped-def]
    """Chat examples of varied lengths in the tiny vocabulary; labels alternate."""
    from heldout.data import Dataset
    from heldout.tiny import WORDS

    rng = random.Random(3)
    rows = []
    for i in range(23):
        rows.append({"id": f"q{i}", "label": i % 2, "split": "train" if i % 3 else "test",
                     "messages": [{"role": "user", "content": " ".join(
                         rng.choice(WORDS) for _ in range(rng.randint(2, 9)))}],
                     "response": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))})
    return Dataset.from_examples(rows)
