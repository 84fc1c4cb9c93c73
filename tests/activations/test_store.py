from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from heldout.activations.sites import HookSite
from heldout.activations.store import ActivationStore, write_store
from heldout.errors import CorruptShardError, StoreError

SITE = HookSite("resid_post", 0)


def _synthetic(tmp_path: Path, **kwargs: object) -> tuple[ActivationStore, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    store = write_store(tmp_path / "s", {SITE: x}, np.arange(50) % 2, shard_rows=16, **kwargs)  # type: ignore[arg-type]
    return store, x


def test_chunks_are_memory_mapped_and_complete(tmp_path: Path) -> None:
    store, x = _synthetic(tmp_path)
    chunks = list(store.iter_chunks(SITE, chunk_rows=7))
    assert max(len(c) for c, _ in chunks) == 7
    np.testing.assert_array_equal(np.concatenate([c for c, _ in chunks]), x)
    np.testing.assert_array_equal(np.concatenate([y for _, y in chunks]), np.arange(50) % 2)
    np.testing.assert_array_equal(store.read(SITE, rows=slice(10, 40)), x[10:40])
    raw = store._tensor(store.manifest["shards"][0], SITE.key)
    assert isinstance(raw, np.memmap) and not raw.flags.writeable


def test_corrupted_and_truncated_shards_are_detected(tmp_path: Path) -> None:
    store, _ = _synthetic(tmp_path)
    shard = store.path / store.manifest["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match="checksum"):
        ActivationStore.open(store.path).read(SITE)
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(CorruptShardError, match="truncated"):
        ActivationStore.open(store.path)


def test_not_a_store_or_not_ours(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not an activation store"):
        ActivationStore.open(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(StoreError, match="not written by heldout"):
        ActivationStore.open(tmp_path)
    store, _ = _synthetic(tmp_path / "x")
    with pytest.raises(StoreError, match="no site resid_post:5"):
        store.read("resid_post:5")
    with pytest.raises(StoreError, match="chunk_rows must be >= 1"):
        next(store.iter_chunks(SITE, chunk_rows=0))


def test_non_store_folder_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="non-empty folder"):
        _synthetic(tmp_path)
    assert os.listdir(tmp_path / "s") == ["notes.txt"]


CHILD = textwrap.dedent("""
    import os, signal, sys, time
    os.environ["HF_HUB_OFFLINE"] = "1"
    import heldout.activations.cache as cache
    import heldout.activations.writer as writer
    from heldout.data import load_dataset
    from heldout.models import load_model

    mode, model_dir, data, out = sys.argv[1:5]
    if mode == "slow":   # the parent kills us from outside while shards are being written
        original = cache.forward_selected
        def slow(*args, **kwargs):
            time.sleep(0.05)
            return original(*args, **kwargs)
        cache.forward_selected = slow
    else:                # kill ourselves between a shard's rename and the manifest update
        original_json = writer.write_json_atomic
        calls = []
        def dying(path, data):
            calls.append(path)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            original_json(path, data)
        writer.write_json_atomic = dying
    model = load_model(model_dir, device="cpu")
    cache.cache_activations(model, load_dataset(data), "resid_post:0-2", out=out,
                            select=sys.argv[5], batch_size=2, shard_rows=4, progress=False)
""")


@pytest.mark.parametrize("mode, select", [("slow", "last"), ("self", "tokens")])
def test_sigkill_mid_cache_then_resume_gives_every_row_once(
        mode: str, select: str, tmp_path: Path, tiny_checkpoints: dict[str, Path],
        chat_dataset, gpt2_model) -> None:  # type: ignore[no-untyped-def]
    from heldout.activations.cache import cache_activations

    data = tmp_path / "data.jsonl"
    chat_dataset.to_jsonl(data)
    out = tmp_path / "store"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    args = [sys.executable, str(script), mode, str(tiny_checkpoints["gpt2"]), str(data),
            str(out), select]
    child = subprocess.Popen(args, env={**os.environ, "PYTHONPATH": os.getcwd()})
    if mode == "slow":
        deadline = time.time() + 120
        while time.time() < deadline and child.poll() is None:
            manifest = out / "manifest.json"
            if manifest.exists() and len(json.loads(manifest.read_text())["shards"]) >= 2:
                child.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    assert child.wait(timeout=120) == -signal.SIGKILL
    partial = ActivationStore.open(out, allow_incomplete=True)
    assert 0 < partial.rows_done < partial.n_rows
    with pytest.raises(StoreError, match="unfinished"):
        ActivationStore.open(out)

    resumed = cache_activations(gpt2_model, chat_dataset, "resid_post:0-2", out=out,
                                select=select, batch_size=2, shard_rows=4, progress=False)
    clean = cache_activations(gpt2_model, chat_dataset, "resid_post:0-2", out=tmp_path / "c",
                              select=select, batch_size=2, shard_rows=4, progress=False)
    assert resumed.ids == clean.ids == chat_dataset.ids
    assert [s["rows"] for s in resumed.manifest["shards"]] == \
        [[lo, min(lo + 4, len(chat_dataset))] for lo in range(0, len(chat_dataset), 4)]
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    for site in clean.sites:
        if select == "tokens":
            for a, b in zip(resumed.read_tokens(site), clean.read_tokens(site)):
                np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_array_equal(resumed.read(site), clean.read(site))


def test_read_tokens_refused_on_row_store(tmp_path: Path) -> None:
    store, _ = _synthetic(tmp_path)
    with pytest.raises(StoreError, match="cache with --select tokens"):
        store.read_tokens(SITE)
