"""Training checkpoints: safetensors + JSON, never pickle, written atomically.

One folder per checkpoint, ``<run>/checkpoints/step-000050/``:

- ``model.safetensors``: every parameter of the model, by ``named_parameters`` name
  (a LoRA run: only the adapter tensors);
- ``optimizer.safetensors`` + ``optimizer.json``: the optimizer's ``state_dict``, its
  tensors flattened to ``state.<param index>.<key>`` and everything else (param groups,
  non-tensor state) in the JSON index;
- ``rng.safetensors``: torch CPU (and CUDA) RNG states, the data-order generator,
  NumPy's Mersenne-Twister key;
- ``state.json``: step, config, config fingerprint, Python and NumPy RNG scalars,
  anything else the trainer records. Written last.

The folder is built under a temporary name and renamed into place, so a crash never
leaves a half-written checkpoint that a resume could pick up.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from heldout.errors import TrainingError

_STEP_DIR = re.compile(r"^step-(\d{6,})$")


def _step_dir(step: int) -> str:
    return f"step-{step:06d}"


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer ``state_dict`` into (tensors, JSON index)."""
    tensors: dict[str, torch.Tensor] = {}
    index: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, entry in state["state"].items():
        slot: dict[str, Any] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                name = f"state.{pid}.{key}"
                tensors[name] = value.detach().cpu().clone(memory_format=torch.contiguous_format)
                slot[key] = {"tensor": name}
            else:
                slot[key] = {"value": value}
        index["state"][str(pid)] = slot
    return tensors, index


def unflatten_optimizer(tensors: dict[str, torch.Tensor], index: dict[str, Any]
                        ) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for pid, slot in index["state"].items():
        state[int(pid)] = {key: tensors[v["tensor"]] if "tensor" in v else v["value"]
                           for key, v in slot.items()}
    return {"state": state, "param_groups": index["param_groups"]}


def capture_rng(data_generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG state a run depends on, as (tensors, JSON)."""
    tensors = {"torch_cpu": torch.get_rng_state(), "data": data_generator.get_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda.{i}"] = s
    kind, key, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_key"] = torch.from_numpy(np.asarray(key, dtype=np.int64))
    version, internal, gauss = random.getstate()
    json_state = {"numpy": [kind, int(pos), int(has_gauss), float(cached)],
                  "python": [version, list(internal), gauss]}
    return tensors, json_state


def restore_rng(tensors: dict[str, torch.Tensor], json_state: dict[str, Any],
                data_generator: torch.Generator) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(tensors["torch_cpu"])
    data_generator.set_state(tensors["data"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("torch_cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = json_state["numpy"]
    np.random.set_state((kind, tensors["numpy_key"].numpy().astype(np.uint32), pos,
                         has_gauss, cached))
    version, internal, gauss = json_state["python"]
    random.setstate((version, tuple(internal), gauss))


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read back from disk."""

    path: Path
    """Its folder."""
    step: int
    """Optimizer steps completed when it was written."""
    model: dict[str, torch.Tensor]
    """Parameters by ``named_parameters`` name."""
    optimizer: dict[str, Any]
    """The optimizer ``state_dict``, ready for ``load_state_dict``."""
    rng_tensors: dict[str, torch.Tensor]
    """RNG state tensors (see :func:`restore_rng`)."""
    state: dict[str, Any]
    """``state.json``: step, config, fingerprint, RNG scalars, trainer extras."""


@contextmanager
def written_atomically(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final`` to write into; on success it replaces
    ``final`` in one rename, on failure it is removed: a reader never sees half a folder."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_checkpoint(run_dir: str | os.PathLike[str], step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, data_generator: torch.Generator,
                    state: dict[str, Any], keep: int = 2,
                    parameters: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``<run_dir>/checkpoints/step-NNNNNN`` atomically; keep the ``keep`` newest.

    parameters : the tensors to save by name; default every ``named_parameters`` of
        ``model`` (a LoRA run passes only its adapters).
    """
    final = Path(run_dir) / "checkpoints" / _step_dir(step)
    with written_atomically(final) as tmp:
        # clone: some bridge parameters are views of a joint QKV tensor (shared memory)
        chosen = dict(model.named_parameters()) if parameters is None else parameters
        params = {n: p.detach().cpu().clone(memory_format=torch.contiguous_format)
                  for n, p in chosen.items()}
        save_file(params, str(tmp / "model.safetensors"))
        opt_tensors, opt_index = flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(opt_index), encoding="utf-8")
        rng_tensors, rng_json = capture_rng(data_generator)
        save_file({k: v.contiguous() for k, v in rng_tensors.items()},
                  str(tmp / "rng.safetensors"))
        full = {**state, "step": step, "rng": rng_json, "format": "heldout.checkpoint/1"}
        (tmp / "state.json").write_text(json.dumps(full, indent=2), encoding="utf-8")
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)
             and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint folder; TrainingError if a file is missing or unreadable."""
    folder = Path(path)
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        model = load_file(str(folder / "model.safetensors"))
        opt_index = json.loads((folder / "optimizer.json").read_text(encoding="utf-8"))
        optimizer = unflatten_optimizer(load_file(str(folder / "optimizer.safetensors")),
                                        opt_index)
        rng = load_file(str(folder / "rng.safetensors"))
    except (OSError, ValueError, KeyError) as err:
        raise TrainingError(f"checkpoint {folder} is unreadable ({err})",
                            fix="delete that folder to resume from an older checkpoint, "
                                "or start the run afresh") from err
    return Checkpoint(path=folder, step=int(state["step"]), model=model, optimizer=optimizer,
                      rng_tensors=rng, state=state)


def load_model_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor],
                       names: set[str] | None = None) -> None:
    """Copy saved parameters into ``model``: the names in ``weights`` must be exactly
    ``names`` (default every parameter of the model; a LoRA run: its adapters)."""
    params = {n: p for n, p in model.named_parameters() if names is None or n in names}
    missing = sorted(set(params) - set(weights))
    extra = sorted(set(weights) - set(params))
    if missing or extra:
        raise TrainingError(f"checkpoint parameters do not match the model (missing "
                            f"{missing[:3]}, unexpected {extra[:3]})",
                            fix="resume with the model the run was started from")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name].to(param.device, param.dtype))
