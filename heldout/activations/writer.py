"""Writing a store: create or resume, one atomic shard at a time.

The writer refuses to touch a folder that holds another run's store (a different model,
dataset, site list, selection, dtype, ...), so a resumed run never mixes rows of two
runs. Identity is checked before any shard is written.

Several processes (``torchrun``) write one store without racing on ``manifest.json``:
rank 0 owns it (:class:`StoreWriter`), every other rank records the shards it finishes
in a sidecar of its own, ``shards-rank-NNNNN.json`` (:meth:`StoreWriter.attach`),
rewritten atomically after each shard. Rank 0 merges the sidecars into the manifest at
the end; a run killed before that loses nothing, because opening a store for writing
(single process or rank 0) first merges every sidecar it finds, keeping the shards
whose checksums verify.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from heldout.activations.sites import HookSite
from heldout.activations.store import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    ActivationStore,
    sha256_file,
    shard_name,
    write_json_atomic,
)
from heldout.activations.store import IDENTITY_FIELDS as STORE_IDENTITY_FIELDS
from heldout.errors import CorruptShardError, StoreError, StoreMismatchError

IDENTITY_FIELDS = STORE_IDENTITY_FIELDS + ("tokenizer_fingerprint",)
"""Fields that must match for a run to append to an existing store. The tokenizer is
part of it: another tokenizer turns the same text into other tokens. A store written
before the field existed still reads, but no run resumes into it (its tokenizer is
unknown)."""


def _describe_mismatch(old: dict[str, Any], new: dict[str, Any]) -> str:
    diffs = []
    for key in IDENTITY_FIELDS:
        if old.get(key) != new.get(key):
            a, b = str(old.get(key)), str(new.get(key))
            diffs.append(f"{key}: store has {a[:60]}, this run has {b[:60]}")
    return "; ".join(diffs)


SIDECAR_GLOB = "shards-rank-*.json"


def sidecar_name(rank: int) -> str:
    """The file where rank ``rank`` (> 0) of a torchrun job lists its finished shards."""
    return f"shards-rank-{rank:05d}.json"


def _shard_ok(path: Path, entry: dict[str, Any], verify: bool) -> bool:
    file = path / entry["file"]
    return (file.is_file() and file.stat().st_size == entry["bytes"]
            and (not verify or sha256_file(file) == entry["sha256"]))


def _matching_manifest(path: Path, identity: dict[str, Any], fix: str) -> dict[str, Any]:
    """The manifest of the store at ``path``; StoreMismatchError if another run wrote it."""
    existing = ActivationStore.open(path, allow_incomplete=True, verify=False).manifest
    old_identity = {k: existing.get(k) for k in IDENTITY_FIELDS}
    if old_identity != identity:
        raise StoreMismatchError(f"{str(path)!r} already holds a store from another run "
                                 f"({_describe_mismatch(old_identity, identity)})", fix=fix)
    return existing


class StoreWriter:
    """Creates a store folder or reopens one for resuming.

    identity : the IDENTITY_FIELDS of this run (fingerprints, sites, selection, ...).
    """

    def __init__(self, path: Path, identity: dict[str, Any], *, labels: list[int],
                 ids: list[str], splits: list[str | None] | None,
                 groups: list[str | None] | None, hook_names: dict[str, str]) -> None:
        from heldout import __version__

        self.path = path
        if identity["shard_rows"] < 1:
            raise StoreError(f"shard_rows must be >= 1, got {identity['shard_rows']}",
                             fix="pass a positive shard size")
        if path.exists() and not path.is_dir():
            raise StoreError(f"{str(path)!r} exists and is not a folder",
                             fix="choose another --out path")
        manifest_path = path / MANIFEST
        if manifest_path.is_file():
            self.manifest = _matching_manifest(
                path, identity,
                fix="use a new --out folder, or delete the old store to start over")
            self._drop_bad_shards()
            self.merge_sidecars(verify=True)
        else:
            if path.is_dir() and any(p for p in path.iterdir() if not p.name.startswith(".")):
                raise StoreError(f"{str(path)!r} is a non-empty folder that is not a store",
                                 fix="choose a new or empty --out folder")
            self.manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                             "heldout_version": __version__, **identity,
                             "hook_names": hook_names, "labels": labels, "ids": ids,
                             "splits": splits, "groups": groups, "shards": []}
            path.mkdir(parents=True, exist_ok=True)
            write_json_atomic(manifest_path, self.manifest)
        for stale in path.glob(".*.tmp-*"):
            stale.unlink(missing_ok=True)
        self.sidecar: Path | None = None  # None: this writer records shards in the manifest
        self._sidecar_shards: list[dict[str, Any]] = []

    @classmethod
    def attach(cls, path: Path, identity: dict[str, Any], rank: int) -> StoreWriter:
        """A writer for rank ``rank`` > 0 of a torchrun job, once rank 0 has created or
        resumed the store: it reads the manifest (never writes it) and lists the shards
        it writes in its own sidecar file."""
        existing = _matching_manifest(
            path, identity,
            fix="give every rank the same arguments and the same model and dataset")
        writer = cls.__new__(cls)
        writer.path = path
        writer.manifest = existing
        writer.sidecar = path / sidecar_name(rank)
        writer._sidecar_shards = []
        return writer

    def merge_sidecars(self, verify: bool = True) -> int:
        """Move the shards listed in rank sidecars into the manifest; returns how many.

        A listed shard is kept if it is one of this store's shards (same rows) and its
        file has the listed size and, with ``verify``, checksum; the others are redone
        by the next run. Merged sidecars are deleted after the manifest is written.
        """
        files = sorted(self.path.glob(SIDECAR_GLOB))
        if not files:
            return 0
        expected = {shard_name(i): list(self.shard_rows_range(i)) for i in range(self.n_shards)}
        identity = {k: self.manifest.get(k) for k in IDENTITY_FIELDS}
        listed = {s["file"] for s in self.manifest["shards"]}
        added = []
        for file in files:
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
                entries = data["shards"] if data.get("identity") == identity else []
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                entries = []  # unreadable: its shards are simply redone
            for entry in entries:
                try:
                    ok = (entry["file"] not in listed and expected.get(entry["file"])
                          == entry["rows"] and _shard_ok(self.path, entry, verify))
                except (KeyError, TypeError):
                    ok = False
                if ok:
                    added.append(entry)
                    listed.add(entry["file"])
        if added:
            self.manifest["shards"] = sorted(self.manifest["shards"] + added,
                                             key=lambda s: s["rows"][0])
            write_json_atomic(self.path / MANIFEST, self.manifest)
        for file in files:
            file.unlink(missing_ok=True)
        return len(added)

    def _drop_bad_shards(self) -> None:
        """Forget listed shards whose file is missing, truncated or fails its checksum."""
        good = [shard for shard in self.manifest["shards"] if _shard_ok(self.path, shard, True)]
        if len(good) != len(self.manifest["shards"]):
            self.manifest["shards"] = good
            write_json_atomic(self.path / MANIFEST, self.manifest)

    @property
    def n_shards(self) -> int:
        rows, per = self.manifest["n_rows"], self.manifest["shard_rows"]
        return (rows + per - 1) // per

    def shard_rows_range(self, index: int) -> tuple[int, int]:
        per = self.manifest["shard_rows"]
        return index * per, min((index + 1) * per, self.manifest["n_rows"])

    def pending_shards(self) -> list[int]:
        done = {s["file"] for s in self.manifest["shards"]}
        return [i for i in range(self.n_shards) if shard_name(i) not in done]

    def write_shard(self, index: int, arrays: dict[HookSite, Any],
                    offsets: np.ndarray | None = None) -> None:
        """Write shard ``index`` atomically, then record it in the manifest (or, for a
        rank > 0 of a torchrun job, in its sidecar).

        arrays : {site: tensor or array (rows or tokens, d_model)}, cast to the store dtype.
        """
        import torch
        from safetensors.torch import save_file

        lo, hi = self.shard_rows_range(index)
        dtype = getattr(torch, self.manifest["dtype"])
        tensors: dict[str, torch.Tensor] = {}
        for site, value in arrays.items():
            tensor = torch.as_tensor(value).detach().to("cpu", dtype).contiguous()
            if offsets is None and tensor.shape[0] != hi - lo:
                raise CorruptShardError(f"shard {index} got {tensor.shape[0]} rows for {site}, "
                                        f"expected {hi - lo}", fix="this is a bug in heldout")
            tensors[site.key] = tensor
        if offsets is not None:
            tensors["offsets"] = torch.as_tensor(np.asarray(offsets, dtype=np.int64))
        final = self.path / shard_name(index)
        tmp = self.path / f".{final.name}.tmp-{os.getpid()}"
        # one metadata key: safetensors writes a metadata map in random order, and one
        # key keeps a shard's bytes (so its checksum) the same in every run
        save_file(tensors, str(tmp), metadata={
            "heldout": json.dumps({"format": FORMAT, "rows": [lo, hi]}, sort_keys=True)})
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, final)
        entry = {"file": final.name, "rows": [lo, hi], "bytes": final.stat().st_size,
                 "sha256": digest}
        if offsets is not None:
            entry["n_tokens"] = int(offsets[-1])
        if self.sidecar is not None:
            self._sidecar_shards.append(entry)
            identity = {k: self.manifest.get(k) for k in IDENTITY_FIELDS}
            write_json_atomic(self.sidecar, {"format": FORMAT, "identity": identity,
                                             "shards": self._sidecar_shards})
            return
        self.manifest["shards"] = [s for s in self.manifest["shards"] if s["file"] != final.name]
        self.manifest["shards"].append(entry)
        self.manifest["shards"].sort(key=lambda s: s["rows"][0])
        write_json_atomic(self.path / MANIFEST, self.manifest)
