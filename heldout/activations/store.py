"""The activation store: shards of safetensors plus ``manifest.json``, on disk.

Layout of a store folder::

    manifest.json            identity (model, dataset, sites, selection, dtype), rows,
                             labels/ids/splits, one entry per finished shard + checksum
    shard-00000.safetensors  one tensor per site named ``site.key`` (rows x d_model);
                             the ``tokens`` selection adds ``offsets`` (rows + 1)

Shard k always holds dataset rows ``[k * shard_rows, (k + 1) * shard_rows)`` in dataset
order, so a resumed run knows exactly what is left. Shards are written under a temp
name, fsynced and renamed; the manifest is rewritten (same way) after every shard. A
shard on disk that the manifest does not list is an interrupted write and is redone.

Reading memory-maps the shard files (the safetensors header gives each tensor's byte
offset), so a store larger than RAM can be streamed chunk by chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from heldout.activations.sites import HookSite
from heldout.errors import CorruptShardError, DataError, StoreError

FORMAT = "heldout-activations"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STORE_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
_NUMPY_OF = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64}
# Fields that must match for a resumed run to append to an existing store.
IDENTITY_FIELDS = ("model_fingerprint", "dataset_fingerprint", "sites", "selection", "dtype",
                   "d_model", "n_rows", "shard_rows", "max_length", "truncate")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """Parse a safetensors header: ({name: {dtype, shape, data_offsets}}, data start)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise CorruptShardError(f"shard {path} is truncated ({size} bytes)",
                                    fix="re-run the same cache command to rewrite it")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise CorruptShardError(f"shard {path} is truncated (header of {n} bytes "
                                    f"in a {size}-byte file)",
                                    fix="re-run the same cache command to rewrite it")
        header = json.loads(fh.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) to float32: bfloat16 is the top half of a float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


class ActivationStore:
    """Read access to a finished (or partly finished) store. Open with :meth:`open`."""

    def __init__(self, path: Path, manifest: dict[str, Any], *, verify: bool = True) -> None:
        self.path = path
        self.manifest = manifest
        self.verify = verify
        self._verified: set[str] = set()
        self._headers: dict[str, tuple[dict[str, Any], int]] = {}

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, allow_incomplete: bool = False,
             verify: bool = True) -> ActivationStore:
        """Open a store; StoreError if it is missing, not ours, or unfinished.

        verify : check each shard's sha256 against the manifest the first time it is read.
        """
        folder = Path(path)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise StoreError(f"{str(folder)!r} is not an activation store (no {MANIFEST})",
                             fix="create one with `heldout cache ... --out DIR`")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise StoreError(f"{manifest_path} is not valid JSON ({err.msg})",
                             fix="delete the store folder and cache again") from err
        if manifest.get("format") != FORMAT:
            raise StoreError(f"{manifest_path} was not written by heldout",
                             fix="point at a folder made by `heldout cache`")
        if manifest.get("format_version", 0) > FORMAT_VERSION:
            raise StoreError(f"{folder} uses store format {manifest['format_version']}, "
                             f"newer than this heldout ({FORMAT_VERSION})",
                             fix="upgrade heldout")
        store = cls(folder, manifest, verify=verify)
        if not allow_incomplete and not store.complete:
            raise StoreError(f"store {str(folder)!r} is unfinished: {store.rows_done} of "
                             f"{store.n_rows} rows cached",
                             fix="re-run the same `heldout cache` command to resume it")
        if manifest["n_rows"] == 0:
            raise StoreError(f"store {str(folder)!r} has no rows", fix="cache a non-empty dataset")
        for shard in manifest["shards"]:
            file = folder / shard["file"]
            if not file.is_file() or file.stat().st_size != shard["bytes"]:
                raise CorruptShardError(
                    f"shard {file} is missing or truncated "
                    f"({file.stat().st_size if file.is_file() else 0} of {shard['bytes']} bytes)",
                    fix="re-run the same cache command: damaged shards are rewritten")
        return store

    # -- description -----------------------------------------------------------------
    @property
    def sites(self) -> list[HookSite]:
        return [HookSite.parse(s) for s in self.manifest["sites"]]

    @property
    def selection(self) -> str:
        return str(self.manifest["selection"])

    @property
    def dtype(self) -> str:
        return str(self.manifest["dtype"])

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    @property
    def n_rows(self) -> int:
        return int(self.manifest["n_rows"])

    @property
    def rows_done(self) -> int:
        return sum(s["rows"][1] - s["rows"][0] for s in self.manifest["shards"])

    @property
    def complete(self) -> bool:
        return self.rows_done == self.n_rows

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.manifest["labels"], dtype=np.int64)

    @property
    def ids(self) -> list[str]:
        return list(self.manifest["ids"])

    @property
    def splits(self) -> list[str | None]:
        return list(self.manifest.get("splits") or [None] * self.n_rows)

    @property
    def groups(self) -> list[str | None]:
        return list(self.manifest.get("groups") or [None] * self.n_rows)

    @property
    def nbytes(self) -> int:
        return sum(int(s["bytes"]) for s in self.manifest["shards"])

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.path)!r}, rows={self.n_rows}, "
                f"sites={[str(s) for s in self.sites]}, selection={self.selection!r}, "
                f"dtype={self.dtype})")

    # -- reading ---------------------------------------------------------------------
    def _check_site(self, site: HookSite | str) -> HookSite:
        site = HookSite.parse(site) if isinstance(site, str) else site
        if str(site) not in self.manifest["sites"]:
            raise StoreError(f"store {self.path} has no site {site}; it has "
                             f"{', '.join(self.manifest['sites'])}",
                             fix="pick one of the stored sites, or cache this site")
        return site

    def _tensor(self, shard: dict[str, Any], name: str) -> np.ndarray:
        """A read-only memory map of one tensor in one shard (raw dtype)."""
        file = self.path / shard["file"]
        if self.verify and shard["file"] not in self._verified:
            if sha256_file(file) != shard["sha256"]:
                raise CorruptShardError(f"shard {file} does not match its checksum",
                                        fix="re-run the same cache command: damaged shards "
                                            "are rewritten")
            self._verified.add(shard["file"])
        if shard["file"] not in self._headers:
            self._headers[shard["file"]] = _read_header(file)
        header, start = self._headers[shard["file"]]
        info = header[name]
        lo, hi = info["data_offsets"]
        dtype = _NUMPY_OF[info["dtype"]]
        shape = tuple(info["shape"])
        if hi == lo:
            return np.zeros(shape, dtype=dtype)
        return np.memmap(file, dtype=dtype, mode="r", offset=start + lo, shape=shape)

    @staticmethod
    def _to_float32(raw: np.ndarray, store_dtype: str) -> np.ndarray:
        if store_dtype == "bfloat16":
            return bf16_to_float32(np.asarray(raw))
        return np.asarray(raw, dtype=np.float32)

    def _select_shards(self, rows: tuple[int, int]) -> Iterator[tuple[dict[str, Any], int, int]]:
        lo, hi = rows
        for shard in sorted(self.manifest["shards"], key=lambda s: s["rows"][0]):
            s_lo, s_hi = shard["rows"]
            if s_hi <= lo or s_lo >= hi:
                continue
            yield shard, max(lo, s_lo) - s_lo, min(hi, s_hi) - s_lo

    def _row_range(self, rows: Sequence[int] | slice | None) -> tuple[int, int]:
        if rows is None:
            return 0, self.rows_done
        if isinstance(rows, slice):
            lo, hi, step = rows.indices(self.n_rows)
            if step != 1:
                raise StoreError("row slices must be contiguous", fix="use rows=slice(lo, hi)")
            return lo, hi
        raise StoreError("rows must be None or a slice", fix="index the returned array instead")

    def iter_chunks(self, site: HookSite | str, chunk_rows: int = 4096,
                    rows: slice | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(X, y)``: X float32 of shape (<= chunk_rows, d_model), y int64 labels.

        Only ``last``/``mean`` stores; memory use is one chunk, whatever the store size.
        """
        site = self._check_site(site)
        if self.selection == "tokens":
            raise StoreError("iter_chunks reads one row per example; this store holds "
                             "per-token activations", fix="use read_tokens(site)")
        if chunk_rows < 1:
            raise StoreError(f"chunk_rows must be >= 1, got {chunk_rows}", fix="pass a positive size")
        labels = self.labels
        for shard, lo, hi in self._select_shards(self._row_range(rows)):
            raw = self._tensor(shard, site.key)
            base = shard["rows"][0]
            for start in range(lo, hi, chunk_rows):
                stop = min(start + chunk_rows, hi)
                yield (self._to_float32(raw[start:stop], self.dtype),
                       labels[base + start:base + stop])

    def read(self, site: HookSite | str, rows: slice | None = None) -> np.ndarray:
        """All rows of one site as a float32 array of shape (n_rows, d_model)."""
        chunks = [x for x, _ in self.iter_chunks(site, chunk_rows=1 << 30, rows=rows)]
        if not chunks:
            return np.zeros((0, self.d_model), dtype=np.float32)
        return np.concatenate(chunks) if len(chunks) > 1 else np.ascontiguousarray(chunks[0])

    def read_tokens(self, site: HookSite | str, rows: slice | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-token activations: ``(values (n_tokens, d_model) float32, offsets (n+1,))``.

        Example ``i``'s response tokens are ``values[offsets[i]:offsets[i + 1]]``.
        """
        site = self._check_site(site)
        if self.selection != "tokens":
            raise StoreError(f"store {self.path} holds one row per example "
                             f"(selection {self.selection!r}), not per-token activations",
                             fix="use read(site), or cache with --select tokens")
        values, offsets, total = [], [np.zeros(1, dtype=np.int64)], 0
        for shard, lo, hi in self._select_shards(self._row_range(rows)):
            local = np.asarray(self._tensor(shard, "offsets"))
            raw = self._tensor(shard, site.key)
            values.append(self._to_float32(raw[local[lo]:local[hi]], self.dtype))
            offsets.append(local[lo + 1:hi + 1] - local[lo] + total)
            total += int(local[hi] - local[lo])
        stacked = np.concatenate(values) if values else np.zeros((0, self.d_model), np.float32)
        return stacked, np.concatenate(offsets)

    def verify_all(self) -> None:
        """Check every shard's checksum now (CorruptShardError on the first bad one)."""
        for shard in self.manifest["shards"]:
            self._tensor(shard, "offsets" if self.selection == "tokens"
                         else HookSite.parse(self.manifest["sites"][0]).key)


def write_store(path: str | os.PathLike[str], arrays: dict[HookSite, np.ndarray],
                labels: Sequence[int] | np.ndarray, *, selection: str = "last",
                ids: Sequence[str] | None = None, offsets: np.ndarray | None = None,
                splits: Sequence[str | None] | None = None,
                groups: Sequence[str | None] | None = None, shard_rows: int = 65536,
                dtype: str = "float32", model_fingerprint: str = "synthetic",
                dataset_fingerprint: str | None = None) -> ActivationStore:
    """Write arrays already in memory as a store (synthetic data, tests, benchmarks).

    arrays : {site: array of shape (n_rows, d_model)}, or (n_tokens, d_model) with
        ``offsets`` (n_rows + 1,) for ``selection="tokens"``.
    """
    from heldout.activations.writer import StoreWriter

    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if not arrays:
        raise DataError("no site arrays were given", fix="pass {site: array}")
    if selection == "tokens" and offsets is None:
        raise DataError("selection 'tokens' needs offsets", fix="pass offsets of shape (n_rows + 1,)")
    ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    sites = sorted(arrays)
    d_model = int(next(iter(arrays.values())).shape[1])
    identity = {
        "model_fingerprint": model_fingerprint,
        "dataset_fingerprint": dataset_fingerprint or hashlib.sha256(
            labels.tobytes() + json.dumps(ids).encode()).hexdigest()[:16],
        "sites": [str(s) for s in sites], "selection": selection, "dtype": dtype,
        "d_model": d_model, "n_rows": n, "shard_rows": shard_rows,
        "max_length": None, "truncate": False,
    }
    writer = StoreWriter(Path(path), identity, labels=labels.tolist(), ids=ids,
                         splits=list(splits) if splits is not None else None,
                         groups=list(groups) if groups is not None else None,
                         hook_names={})
    for index in writer.pending_shards():
        lo, hi = writer.shard_rows_range(index)
        if selection == "tokens":
            assert offsets is not None
            t_lo, t_hi = int(offsets[lo]), int(offsets[hi])
            shard = {s: np.asarray(arrays[s][t_lo:t_hi]) for s in sites}
            writer.write_shard(index, shard, offsets=np.asarray(offsets[lo:hi + 1]) - t_lo)
        else:
            writer.write_shard(index, {s: np.asarray(arrays[s][lo:hi]) for s in sites})
    return ActivationStore.open(path)
