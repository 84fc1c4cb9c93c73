"""Save and load probes: one ``.safetensors`` file per probe, never a pickle.

The file holds the probe's tensors; its string metadata holds one JSON document
(key ``"heldout"``) with the probe kind, hyper-parameters, non-tensor fitted state,
site, selection, calibrated threshold, model and data fingerprints, the heldout
version, and a SHA-256 over the tensors (names, dtypes, shapes, bytes) so that an
edited file is refused. Writes go to a temporary name in the same folder and are
renamed into place, so a crash never leaves a half-written probe.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from heldout.errors import ProbeError
from heldout.probes.attention import AttentionProbe, TokenLinearProbe
from heldout.probes.base import BaseProbe
from heldout.probes.linear import DiffMeansProbe, LDAProbe, LogisticProbe
from heldout.probes.mlp import MLPProbe
from heldout.probes.multimax import MultiMaxProbe, RollingAttentionProbe

FORMAT = "heldout.probe"
FORMAT_VERSION = 1

PROBES: dict[str, type[BaseProbe]] = {
    cls.kind: cls for cls in (LogisticProbe, DiffMeansProbe, LDAProbe, MLPProbe,
                              AttentionProbe, TokenLinearProbe, MultiMaxProbe,
                              RollingAttentionProbe)
}
"""Probe classes by ``kind`` (the name used in files and on the command line)."""


@dataclass(frozen=True)
class ProbeMeta:
    """Where a saved probe came from; attached to loaded probes as ``probe.meta_``."""

    site: str | None
    """Hook site the probe reads, e.g. ``"resid_post:2"``."""
    selection: str | None
    """Token selection of its training activations: ``last``, ``mean`` or ``tokens``."""
    model_fingerprint: str | None
    """Fingerprint of the model whose activations trained it."""
    data_fingerprint: str | None
    """Fingerprint of the dataset it was trained on."""
    heldout_version: str
    """heldout version that wrote the file."""
    calibration: str | None = None
    """Which rows set the saved threshold, e.g. "threshold at 0.01 FPR from 40 held-out
    negatives of split 'train' (not trained on)"."""


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _json_params(probe: BaseProbe) -> dict[str, Any]:
    params = probe.get_params(deep=False)
    try:
        json.dumps(params)
    except TypeError as err:
        raise ProbeError(f"{type(probe).__name__} has a parameter that cannot be saved "
                         f"as JSON ({err})", fix="use plain numbers and strings as "
                         "hyper-parameters") from err
    return params


def save_probe(probe: BaseProbe, path: str | os.PathLike[str], *, site: Any = None,
               selection: str | None = None, threshold: float | None = None,
               model_fingerprint: str | None = None, data_fingerprint: str | None = None,
               calibration: str | None = None) -> Path:
    """Write a fitted probe to ``path`` (a ``.safetensors`` file), atomically.

    ``threshold`` defaults to the probe's calibrated ``threshold_`` if it has one;
    ``site`` may be a HookSite or its string. Returns the path written.
    """
    from heldout import __version__

    probe._check_fitted()
    if type(probe).kind not in PROBES:
        raise ProbeError(f"{type(probe).__name__} is not a heldout probe kind",
                         fix=f"save one of: {', '.join(PROBES)}")
    tensors, extras = probe._state()
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    if threshold is None and hasattr(probe, "threshold_"):
        threshold = float(probe.threshold_)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": type(probe).kind,
        "params": _json_params(probe), "extras": extras,
        "n_features_in": int(probe.n_features_in_),
        "threshold": None if threshold is None else float(threshold),
        "site": None if site is None else str(site), "selection": selection,
        "model_fingerprint": model_fingerprint, "data_fingerprint": data_fingerprint,
        "heldout_version": __version__, "checksum": _checksum(tensors),
        **({"calibration": calibration} if calibration is not None else {}),
    }
    return write_atomic(path, lambda tmp: save_file(tensors, tmp,
                                                    metadata={"heldout": json.dumps(meta)}))


def write_atomic(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place:
    an interrupted save leaves the old file (or none), never half of a new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_probe(path: str | os.PathLike[str]) -> BaseProbe:
    """Read a probe written by :func:`save_probe`. The result is fitted, carries
    ``threshold_`` if one was saved, and ``meta_`` (:class:`ProbeMeta`)."""
    path = Path(path)
    fix = "re-create it with `heldout fit` or save_probe()"
    if not path.is_file():
        raise ProbeError(f"no probe file at {path}", fix="check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("heldout")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ProbeError(f"{path} is not a readable safetensors file ({err})", fix=fix) from err
    if raw is None:
        raise ProbeError(f"{path} is a safetensors file but not a heldout probe "
                         "(no 'heldout' metadata)", fix=fix)
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ProbeError(f"{path} has unreadable probe metadata ({err})", fix=fix) from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ProbeError(f"{path} is not a heldout probe file", fix=fix)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ProbeError(f"{path} has probe format version {meta.get('format_version')}, "
                         f"this heldout reads version {FORMAT_VERSION}",
                         fix="load it with the heldout version that wrote it "
                             f"({meta.get('heldout_version')}) or refit")
    if meta.get("checksum") != _checksum(tensors):
        raise ProbeError(f"{path} was modified after it was written: its tensors do not "
                         "match the checksum in its metadata", fix=fix)
    cls = PROBES.get(meta.get("kind", ""))
    if cls is None:
        raise ProbeError(f"{path} holds an unknown probe kind {meta.get('kind')!r}",
                         fix=f"known kinds: {', '.join(PROBES)}")
    try:
        probe = cls(**meta["params"])
        probe._set_state(tensors, meta.get("extras") or {})
    except (TypeError, KeyError) as err:
        raise ProbeError(f"{path} does not match the {cls.__name__} layout ({err})",
                         fix=fix) from err
    if probe.n_features_in_ != meta.get("n_features_in"):
        raise ProbeError(f"{path} is inconsistent: tensors give {probe.n_features_in_} "
                         f"features, metadata {meta.get('n_features_in')}", fix=fix)
    if meta.get("threshold") is not None:
        probe.threshold_ = float(meta["threshold"])
    probe.meta_ = ProbeMeta(site=meta.get("site"), selection=meta.get("selection"),
                            model_fingerprint=meta.get("model_fingerprint"),
                            data_fingerprint=meta.get("data_fingerprint"),
                            heldout_version=str(meta.get("heldout_version")),
                            calibration=meta.get("calibration"))
    return probe


def check_probe(probe: BaseProbe, *, site: Any = None, selection: str | None = None,
                model_fingerprint: str | None = None, d_model: int | None = None) -> None:
    """Raise ProbeError if a loaded probe does not belong to the given site, token
    selection, model or width. Arguments left as None are not checked; nor is a
    field the probe's file did not record."""
    meta: ProbeMeta | None = getattr(probe, "meta_", None)
    name = type(probe).__name__
    if d_model is not None and probe.n_features_in_ != d_model:
        raise ProbeError(f"the activations have {d_model} features, but {name} is "
                         f"expecting {probe.n_features_in_} features as input",
                         fix="use a probe fitted on this model's activations")
    if meta is None:
        return
    checks = [("site", None if site is None else str(site), meta.site,
               "use the probe fitted at this site, or read the probe's own site"),
              ("token selection", selection, meta.selection,
               "cache activations with the probe's selection"),
              ("model", model_fingerprint, meta.model_fingerprint,
               "use activations of the model the probe was fitted on, or say that "
               "applying it to another model (e.g. a fine-tuned copy) is intended")]
    for what, want, have, fix in checks:
        if want is not None and have is not None and want != have:
            raise ProbeError(f"the probe was fitted for {what} {have!r}, but is used with "
                             f"{what} {want!r}", fix=fix)


def probe_info(probe: BaseProbe) -> dict[str, Any]:
    """Metadata of a loaded probe as a plain dict (for reports and logs)."""
    meta = getattr(probe, "meta_", None)
    out: dict[str, Any] = {"kind": type(probe).kind, "params": probe.get_params(deep=False),
                           "threshold": getattr(probe, "threshold_", None)}
    if meta is not None:
        out.update(asdict(meta))
    return out


__all__ = ["PROBES", "ProbeMeta", "check_probe", "load_probe", "probe_info", "save_probe"]
