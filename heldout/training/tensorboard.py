"""The training scalars as TensorBoard events too (``TrainConfig.tensorboard``).

The run's logs stay ``steps.jsonl`` and ``evals.jsonl``; with ``tensorboard=True`` the
trainer hands each record it appends there to :class:`TensorBoardLog` as well, which
writes its numeric leaves to ``<out>/tensorboard`` with
``torch.utils.tensorboard.SummaryWriter`` (``tensorboard --logdir <out>``):

- a step record: ``loss/total``, ``loss/<term>`` (``loss/task``, ``loss/penalty/<probe>``,
  ``loss/kl``), ``metrics/<name>`` (``metrics/lr``, ``metrics/grad_norm``, ...);
- an evaluation record: ``eval/<figure>`` (``eval/misbehavior_rate``,
  ``eval/task_accuracy``, ``eval/kl_to_base``, ...), ``monitor/<name>/<path>``
  (``monitor/l1/own/recall_base``, ``monitor/l1/threshold_base``, ...) and the other
  mappings by their path (``retrained/<site>/<selection>/auroc``, ``pca90/...``).
  None and booleans are left out.

Every writing session (one ``Trainer.train`` call) opens a new event file whose
``purge_step`` is the step of its first record: TensorBoard then drops the events of
earlier files at or past that step. A resumed run therefore appends, and the steps a
crashed run logged after its last checkpoint (which the trainer also cuts from its
JSONL logs) are not shown twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from heldout.errors import ConfigError

FOLDER = "tensorboard"
"""The event files' folder inside the run folder."""
INSTALL = "pip install 'heldout[tensorboard]'"


def scalars(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a nested mapping by its ``/``-joined path (None and
    booleans left out)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            out.update(scalars(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def step_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The tags and values of a ``steps.jsonl`` record."""
    return {"loss/total": float(record["loss"]), **scalars(record["losses"], "loss/"),
            **scalars(record["metrics"], "metrics/")}


def eval_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The tags and values of an ``evals.jsonl`` record."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "step":
            continue
        if key == "monitors":
            out.update(scalars(value, "monitor/"))
        elif isinstance(value, Mapping):
            out.update(scalars(value, f"{key}/"))
        else:
            out.update(scalars({key: value}, "eval/"))
    return out


def require_tensorboard() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``; ConfigError naming the fix when the
    ``tensorboard`` package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ConfigError(f"tensorboard=True needs the tensorboard package ({err})",
                          fix=f"{INSTALL}, or turn tensorboard off") from err
    return SummaryWriter


class TensorBoardLog:
    """Writes the records of a run's JSONL logs as TensorBoard scalars.

    run : the run folder; the event files go to ``<run>/tensorboard``, created on the
        first record, so a process that never logs (a DDP rank other than 0) writes
        nothing.

    ConfigError at construction when the ``tensorboard`` package is missing.
    """

    def __init__(self, run: str | Path) -> None:
        self._make = require_tensorboard()
        self.folder = Path(run) / FOLDER
        self._writer: Any = None

    def write(self, log: str, record: Mapping[str, Any]) -> None:
        """Add ``record``, a line of the run's ``log`` (``steps.jsonl``: its losses and
        metrics; ``evals.jsonl``: its figures, then flush)."""
        step = int(record["step"])
        if self._writer is None:
            self._writer = self._make(log_dir=str(self.folder), purge_step=step)
        values = step_scalars(record) if log == "steps.jsonl" else eval_scalars(record)
        for tag, value in values.items():
            self._writer.add_scalar(tag, value, step)
        if log != "steps.jsonl":
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (a later record opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
