"""Running one job as several processes under ``torchrun``: ranks, devices, agreement.

``torchrun --nproc_per_node=N ...`` starts N copies of a command and tells each its
place through environment variables: ``RANK`` (0..WORLD_SIZE-1, unique over all
machines), ``WORLD_SIZE`` and ``LOCAL_RANK`` (its index on this machine, which picks
its GPU). Without them a command is one process of a world of one, and nothing here
starts a process group or talks to another process.

The process group uses NCCL when the work runs on CUDA and gloo on CPU; it carries
only a few small messages (who failed, and when everyone is done), never activations.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import heldout.errors
from heldout.errors import ConfigError, HeldoutError

TIMEOUT = datetime.timedelta(hours=6)
"""How long a rank waits for the others at a collective: long enough for rank 0 to
verify a large store's checksums, or for a slow rank to finish its last shards."""


@dataclass(frozen=True)
class Ranks:
    """Where this process sits in a ``torchrun`` job."""

    rank: int = 0
    """Global index of this process, 0..world_size-1; rank 0 owns shared files."""
    world_size: int = 1
    """Number of processes in the job (over all machines)."""
    local_rank: int = 0
    """Index of this process on its machine: it uses GPU ``cuda:{local_rank}``."""

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer",
                          fix="launch with torchrun, or unset RANK, WORLD_SIZE and "
                              "LOCAL_RANK to run as one process") from None


def ranks_from_env() -> Ranks:
    """This process's :class:`Ranks`, from torchrun's variables (a world of one without)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"inconsistent torchrun environment: RANK={rank}, "
                          f"WORLD_SIZE={world}, LOCAL_RANK={local}",
                          fix="launch with torchrun, or unset RANK, WORLD_SIZE and "
                              "LOCAL_RANK to run as one process")
    return Ranks(rank, world, local)


def current_ranks() -> Ranks:
    """Ranks of the running process group if one is initialized, else from the env."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        env = ranks_from_env()
        return Ranks(dist.get_rank(), dist.get_world_size(), env.local_rank)
    return ranks_from_env()


def local_device(requested: str | None = None) -> str:
    """The device this rank should use.

    ``None``: ``cuda:{LOCAL_RANK}`` when CUDA is available, else ``cpu``; a bare
    ``"cuda"`` also becomes ``cuda:{LOCAL_RANK}``; anything else is kept as given.
    Under torchrun on CUDA the rank's GPU becomes the current device (NCCL needs it).
    """
    import torch

    ranks = ranks_from_env()
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for, but CUDA is not available",
                              fix="use --device cpu, or run on a machine with a GPU")
        if ranks.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"local rank {ranks.local_rank} has no GPU: this machine has "
                              f"{torch.cuda.device_count()}",
                              fix="start at most one process per GPU "
                                  "(torchrun --nproc_per_node=<number of GPUs>)")
        requested = f"cuda:{ranks.local_rank}"
    if requested.startswith("cuda") and ranks.distributed:
        torch.cuda.set_device(torch.device(requested))
    return requested


def backend_for(device: Any) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    import torch

    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@contextmanager
def process_group(device: Any = "cpu") -> Iterator[Ranks]:
    """Join torchrun's process group for the duration of the block; yields :class:`Ranks`.

    Outside torchrun (a world of one) this does nothing. A group that is already
    initialized (by the caller) is used as is and left running; one started here is
    destroyed on exit.
    """
    import torch
    import torch.distributed as dist

    ranks = ranks_from_env()
    started = False
    if dist.is_available() and dist.is_initialized():
        ranks = current_ranks()
    elif ranks.distributed:
        if not dist.is_available():
            raise ConfigError("this torch build has no torch.distributed",
                              fix="run as one process, or install a torch with distributed")
        backend = backend_for(device)
        if backend == "nccl" and torch.device(device).index is not None:
            torch.cuda.set_device(torch.device(device))  # NCCL talks through this GPU
        dist.init_process_group(backend, timeout=TIMEOUT)
        started = True
    try:
        yield ranks
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (no-op without a process group)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def agree(error: BaseException | None) -> None:
    """Collective: each rank reports whether its checks failed; if any did, raise on all.

    A rank that failed re-raises its own error; the others raise the first failing
    rank's error, of the same heldout error class, so that every rank stops before any
    work with the same clear message (and none waits forever for the others).
    Also a barrier. Without a process group it just re-raises ``error``.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        if error is not None:
            raise error
        return
    report: tuple[str, str, str | None] | None = None
    if isinstance(error, HeldoutError):
        report = (type(error).__name__, error.cause, error.fix)
    elif error is not None:
        report = ("", f"{type(error).__name__}: {error}", None)
    reports: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(reports, report)
    if error is not None:
        raise error
    for rank, found in enumerate(reports):
        if found is not None:
            name, cause, fix = found
            cls = getattr(heldout.errors, name, None) if name else None
            if not (isinstance(cls, type) and issubclass(cls, HeldoutError)):
                raise RuntimeError(f"rank {rank} failed: {cause}")
            raise cls(f"{cause} (found by rank {rank})", fix=fix)
