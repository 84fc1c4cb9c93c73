"""``heldout cache`` under torchrun: N ranks write the store one process writes.

The slow tests launch real ``torchrun`` jobs (2 CPU processes, gloo); the others check
the pieces in one process: torchrun's environment, and rank sidecars that a killed job
leaves behind, which the next run (of any size) merges after checking their shards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from heldout.activations.cache import cache_activations
from heldout.activations.distributed import Ranks, agree, process_group, ranks_from_env
from heldout.activations.store import MANIFEST, ActivationStore
from heldout.activations.writer import IDENTITY_FIELDS, StoreWriter, sidecar_name
from heldout.data import Dataset
from heldout.errors import ConfigError, StoreMismatchError

SITES = "resid_pre:0,resid_post:1,mlp_out:2"
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def run_cache(nproc: int, model: Path, data: Path, out: Path, select: str,
              sites: str = SITES) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "heldout"] if nproc > 1
              else [sys.executable, "-m", "heldout"])
    args = ["cache", "--model", str(model), "--data", str(data), "--sites", sites,
            "--select", select, "--out", str(out), "--shard-rows", "4", "--batch-size", "3",
            "--device", "cpu"]
    return subprocess.run(launch + args, capture_output=True, text=True, env=env,
                          timeout=600, check=False)


def assert_same_store(a: Path, b: Path) -> None:
    """Same manifest (ids, labels, shard rows and checksums), same shard bytes, same values."""
    sa, sb = ActivationStore.open(a), ActivationStore.open(b)
    assert sa.manifest == sb.manifest
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for shard in sa.manifest["shards"]:
        assert (a / shard["file"]).read_bytes() == (b / shard["file"]).read_bytes()
    for site in sa.sites:
        if sa.selection == "tokens":
            for x, y in zip(sa.read_tokens(site), sb.read_tokens(site)):
                np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_array_equal(sa.read(site), sb.read(site))


@pytest.fixture()
def data_file(chat_dataset: Dataset, tmp_path: Path) -> Path:
    chat_dataset.to_jsonl(tmp_path / "data.jsonl")
    return tmp_path / "data.jsonl"


@pytest.mark.slow
@pytest.mark.parametrize("select", ["last", "tokens"])
def test_torchrun_writes_the_single_process_store(select: str, tiny_checkpoints: dict[str, Path],
                                                  gpt2_model, data_file: Path,  # type: ignore[no-untyped-def]
                                                  tmp_path: Path) -> None:
    model = tiny_checkpoints["gpt2"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks run (OMP_NUM_THREADS=1)
    try:  # the single-process store, written here (what `heldout cache` writes)
        cache_activations(gpt2_model, Dataset.from_jsonl(data_file), SITES, select=select,
                          out=tmp_path / "single", shard_rows=4, batch_size=3, progress=False)
    finally:
        torch.set_num_threads(threads)
    multi = run_cache(2, model, data_file, tmp_path / "multi", select)
    assert multi.returncode == 0, multi.stderr
    assert multi.stdout.count("wrote ActivationStore") == 1  # rank 0 reports, once
    store = ActivationStore.open(tmp_path / "multi")
    assert store.n_rows == 23 and len(store.manifest["shards"]) == 6
    assert not list((tmp_path / "multi").glob("shards-rank-*"))  # sidecars merged
    assert_same_store(tmp_path / "single", tmp_path / "multi")

    if select == "last":  # a bad resume fails on every rank, before any work
        before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "multi").iterdir()}
        bad = run_cache(2, model, data_file, tmp_path / "multi", select, sites="resid_post:0")
        assert bad.returncode != 0
        assert bad.stderr.count("already holds a store from another run") == 2, bad.stderr
        assert "found by rank 0" in bad.stderr and "fix: use a new --out folder" in bad.stderr
        assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "multi").iterdir()} == before


def test_ranks_from_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    assert ranks_from_env() == Ranks(0, 1, 0) and not ranks_from_env().distributed
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert ranks_from_env() == Ranks(3, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="inconsistent torchrun environment"):
        ranks_from_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not an integer"):
        ranks_from_env()


def test_one_process_needs_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    with process_group("cpu") as ranks:
        assert ranks == Ranks()
        assert not torch.distributed.is_initialized()
        agree(None)
        with pytest.raises(ConfigError, match="boom"):
            agree(ConfigError("boom", fix="none"))


def _as_killed_job(out: Path, rank_of: dict[int, int]) -> dict[str, object]:
    """Rewrite a finished store as a torchrun job killed before rank 0's merge: shard i
    is listed only in the sidecar of rank ``rank_of[i]`` (rank 0 lists in the manifest)."""
    manifest = json.loads((out / MANIFEST).read_text())
    original = json.loads(json.dumps(manifest))
    identity = {k: manifest[k] for k in IDENTITY_FIELDS}
    sidecars: dict[int, list[object]] = {}
    kept = []
    for index, shard in enumerate(manifest["shards"]):
        rank = rank_of.get(index, 0)
        (kept if rank == 0 else sidecars.setdefault(rank, [])).append(shard)
    manifest["shards"] = kept
    (out / MANIFEST).write_text(json.dumps(manifest))
    for rank, shards in sidecars.items():
        (out / sidecar_name(rank)).write_text(json.dumps(
            {"format": "heldout-activations", "identity": identity, "shards": shards}))
    return original


def test_a_killed_job_loses_no_finished_shard(gpt2_model, chat_dataset: Dataset,  # type: ignore[no-untyped-def]
                                              tmp_path: Path) -> None:
    reference = tmp_path / "ref"
    cache_activations(gpt2_model, chat_dataset, "resid_post:1", out=reference, shard_rows=4,
                      progress=False)
    out = tmp_path / "s"
    shutil.copytree(reference, out)
    original = _as_killed_job(out, {1: 1, 3: 1, 4: 2, 5: 3})
    assert not ActivationStore.open(out, allow_incomplete=True).complete
    # shard 4 was damaged after rank 2 listed it; shard 5's file never got written
    damaged = out / "shard-00004.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"\0" * 8)
    (out / "shard-00005.safetensors").unlink()
    kept = {f: (out / f).stat().st_mtime_ns for f in
            ("shard-00000.safetensors", "shard-00001.safetensors", "shard-00003.safetensors")}

    store = cache_activations(gpt2_model, chat_dataset, "resid_post:1", out=out, shard_rows=4,
                              progress=False)  # one process resumes a two-process job
    assert store.manifest == original
    assert {f: (out / f).stat().st_mtime_ns for f in kept} == kept  # not recomputed
    assert not list(out.glob("shards-rank-*"))
    assert_same_store(reference, out)


def test_a_rank_lists_its_shards_in_its_own_sidecar(gpt2_model, chat_dataset: Dataset,  # type: ignore[no-untyped-def]
                                                    tmp_path: Path) -> None:
    out = tmp_path / "s"
    store = cache_activations(gpt2_model, chat_dataset, "resid_post:0", out=out, shard_rows=8,
                              progress=False)
    manifest_before = (out / MANIFEST).read_bytes()
    identity = {k: store.manifest[k] for k in IDENTITY_FIELDS}
    worker = StoreWriter.attach(out, identity, rank=1)
    lo, hi = worker.shard_rows_range(2)
    worker.write_shard(2, {store.sites[0]: store.read("resid_post:0")[lo:hi]})
    assert (out / MANIFEST).read_bytes() == manifest_before  # only rank 0 writes it
    listed = json.loads((out / sidecar_name(1)).read_text())["shards"]
    assert [s["file"] for s in listed] == ["shard-00002.safetensors"]
    with pytest.raises(StoreMismatchError, match="sites"):
        StoreWriter.attach(out, {**identity, "sites": ["resid_post:1"]}, rank=1)
