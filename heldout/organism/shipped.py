"""Organisms shipped inside the package, so nobody waits for training to see a result.

``heldout/organism/shipped/<fingerprint>/`` holds what training that config writes
(model, tokenizer, ``organism.json``), for the default config, for ``give_in=0.5`` and
for organism v2 as the atlas runs it (``heldout.atlas.grids.V2_ORGANISM``).
``load_organism`` installs a shipped organism into the cache instead of training it,
after checking the weights' SHA-256 against ``organism.json``; ``retrain=True`` trains
from scratch as before. The shipped weights are what ``train_organism`` writes for the
config on one thread (its fixed count); :func:`verify_shipped` retrains the first steps
on this machine and compares weight fingerprints, so the claim "the same config gives
the same model" is checked without training for minutes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heldout.activations.store import sha256_file
from heldout.errors import ModelLoadError
from heldout.organism.config import OrganismConfig
from heldout.organism.train import TRAJECTORY_STEPS, train_organism

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
"""Where shipped organisms live inside the installed package."""

WEIGHTS = "model.safetensors"
RECORD = "organism.json"


def shipped_folder(config: OrganismConfig, root: Path = SHIPPED_DIR) -> Path | None:
    """The shipped checkpoint for ``config``, or None when none is shipped."""
    folder = root / config.fingerprint()
    return folder if (folder / RECORD).is_file() and (folder / WEIGHTS).is_file() else None


def read_shipped_record(folder: Path) -> dict[str, Any]:
    try:
        record: dict[str, Any] = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"shipped organism {str(folder)!r} has an unreadable {RECORD} "
                             f"({err})", fix="reinstall heldout, or call "
                             "load_organism(retrain=True) to train it") from err
    return record


def install_shipped(folder: Path, dest: Path) -> dict[str, Any]:
    """Copy the shipped checkpoint ``folder`` into ``dest`` (an empty temporary folder)
    after checking its weights' checksum; returns its training record (without writing
    ``organism.json``: the caller writes it last, to mark the checkpoint complete)."""
    record = read_shipped_record(folder)
    expected, actual = record.get("sha256"), sha256_file(folder / WEIGHTS)
    if expected != actual:
        raise ModelLoadError(f"the shipped organism's weights {str(folder / WEIGHTS)!r} do "
                             f"not match their checksum (expected {expected}, got {actual})",
                             fix="reinstall heldout, or call load_organism(retrain=True) "
                                 "to train the organism instead")
    for path in folder.iterdir():
        if path.is_file() and path.name != RECORD:
            shutil.copy2(path, dest / path.name)
    return {**record, "source": "shipped"}


def ship(checkpoint: Path, root: Path = SHIPPED_DIR) -> Path:
    """Copy a trained organism checkpoint (a ``load_organism`` folder) into ``root`` with
    the checksum of its weights; returns the shipped folder. For maintainers."""
    record = read_shipped_record(checkpoint)
    if record.get("source") == "shipped":
        raise ModelLoadError(f"{str(checkpoint)!r} was itself installed from a shipped copy",
                             fix="ship a checkpoint trained with load_organism(retrain=True)")
    out = root / str(record["fingerprint"])
    out.mkdir(parents=True, exist_ok=True)
    for path in checkpoint.iterdir():
        if path.is_file() and path.name != RECORD:
            shutil.copy2(path, out / path.name)
    record = {**record, "sha256": sha256_file(out / WEIGHTS)}
    record.pop("source", None)
    (out / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n",
                              encoding="utf-8")
    return out


@dataclass(frozen=True)
class Verification:
    """A short retraining compared with the shipped organism's recorded trajectory."""

    steps: int
    """Training steps retrained."""
    max_relative_difference: float
    """Largest |norm retrained - norm shipped| / norm shipped over all parameters."""
    tolerance: float
    """What counts as equal: float-reduction noise, far below training divergence."""

    @property
    def ok(self) -> bool:
        return self.max_relative_difference <= self.tolerance


def verify_shipped(config: OrganismConfig | None = None, *, root: Path = SHIPPED_DIR,
                   tolerance: float = 1e-4, progress: bool = False) -> Verification:
    """Retrain the first steps of ``config`` here and compare with the shipped record."""
    config = config or OrganismConfig()
    folder = shipped_folder(config, root)
    if folder is None:
        raise ModelLoadError(f"no organism is shipped for this config (fingerprint "
                             f"{config.fingerprint()})", fix="verify the default config, give_in=0.5 or "
                             "the atlas's v2 config; other configs are trained, not shipped")
    recorded = read_shipped_record(folder).get("trajectory", {})
    steps = max(TRAJECTORY_STEPS)
    if str(steps) not in recorded:
        raise ModelLoadError(f"the shipped organism {str(folder)!r} records no weights at "
                             f"step {steps}", fix="reinstall heldout")
    fresh = train_organism(config, None, progress=progress, stop_after=steps)["trajectory"]
    want, got = recorded[str(steps)], fresh[str(steps)]
    if set(want) != set(got):
        raise ModelLoadError("the shipped organism's parameters differ from the ones this "
                             "code builds", fix="reinstall heldout")
    worst = max(abs(got[k] - want[k]) / max(abs(want[k]), 1e-12) for k in want)
    return Verification(steps=steps, max_relative_difference=worst, tolerance=tolerance)


__all__ = [
    "SHIPPED_DIR",
    "Verification",
    "install_shipped",
    "read_shipped_record",
    "sha256_file",
    "ship",
    "shipped_folder",
    "verify_shipped",
]
