"""Training under ``torchrun``: DistributedDataParallel over one global batch.

``torchrun --nproc_per_node=N -m heldout train ...`` starts N processes; ``heldout
train`` sees torchrun's variables and trains with :class:`DistributedTrainer`:

- the process group uses NCCL on GPUs and gloo on CPU
  (:mod:`heldout.activations.distributed`); each rank uses ``cuda:{LOCAL_RANK}`` when
  CUDA is available, else the CPU;
- ``batch_size`` is the **global** batch: every rank draws the same rows from the run's
  data-order generator and keeps its contiguous share (``batch_size / N`` rows), so a
  run on N processes sees exactly the data of a single-process run with the same
  config;
- every training forward goes through the ``DistributedDataParallel`` wrapper (hooks for
  probe penalties are installed on the wrapped model around it), which averages
  gradients over ranks during ``backward``; clipping, the optimizer and the schedule
  then act on identical gradients everywhere, so the weights stay identical;
- the logged losses and metrics are averaged over ranks; only rank 0 runs the monitor
  and writes logs, checkpoints, final weights, retrained probes and plots. A resume
  reads the checkpoint on every rank.

Per-rank losses are means over each rank's share; their average equals the
single-process mean over the global batch when every share holds the same number of
loss terms (e.g. equal response lengths), and differs slightly otherwise.
Errors found by any rank while setting up stop every rank with the same message.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from heldout.activations.distributed import (
    Ranks,
    agree,
    barrier,
    local_device,
    process_group,
    ranks_from_env,
)
from heldout.errors import ConfigError
from heldout.environments.resolve import model_source, resolve_environment
from heldout.training.config import TrainConfig
from heldout.training.trainer import StepResult, Trainer

_MAX_METRICS = ("seconds",)
_SAME_METRICS = ("lr", "grad_norm")


class DistributedTrainer(Trainer):
    """A :class:`~heldout.training.trainer.Trainer` for one rank of a torchrun job.

    ranks : this process's place (default from torchrun's environment).
    device : default :func:`heldout.activations.distributed.local_device`.
    Other keywords as for ``Trainer``. A world of one behaves like ``Trainer`` (with a
    DDP wrapper when a process group is initialized).
    """

    def __init__(self, config: TrainConfig, *, ranks: Ranks | None = None,
                 device: str | None = None, **kwargs: Any) -> None:
        from heldout.models import load_model

        self.ranks = ranks or ranks_from_env()
        self.device_name = device or local_device()
        error: BaseException | None = None
        try:
            world = self.ranks.world_size
            if config.batch_size % world:
                raise ConfigError(f"batch_size={config.batch_size} (the global batch) does "
                                  f"not split over {world} processes",
                                  fix=f"use a batch size divisible by {world}")
            if kwargs.get("environment") is None:
                if not self.ranks.is_main:
                    barrier()  # rank 0 resolves first (the organism trains once)
                kwargs["environment"] = resolve_environment(config)
                if self.ranks.is_main:
                    barrier()
            if kwargs.get("model") is None:
                source = model_source(config, kwargs["environment"])
                kwargs["model"] = load_model(source, device=self.device_name)
                if kwargs.get("reference") is None:
                    kwargs["reference"] = load_model(source, device=self.device_name)
            if not self.ranks.is_main:
                kwargs["progress"] = False
            super().__init__(config, **kwargs)
        except BaseException as err:  # every rank stops with the same message
            error = err
        agree(error)
        self.ddp = self._wrap()
        barrier()

    def _wrap(self) -> torch.nn.Module:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        if not (dist.is_available() and dist.is_initialized()):
            return self.model  # type: ignore[no-any-return]
        ids = [self.device.index] if self.device.type == "cuda" else None
        # find_unused_parameters: the bridge holds parameters that a forward may not use
        # (e.g. aliases of a joint QKV weight); DDP must not wait for their gradients
        return DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)

    # -- the pieces that differ from one process --------------------------------------
    def forward(self, ids: Tensor, attention: Tensor,
                hooks: list[tuple[Any, Any]] | None = None) -> Tensor:
        """The trained model's logits through the DDP wrapper (gradients are averaged
        over ranks during backward); hooks are installed on the wrapped model."""
        if hooks:
            with self.model.hooks(fwd_hooks=hooks):
                return self.ddp(ids, attention_mask=attention)  # type: ignore[no-any-return]
        return self.ddp(ids, attention_mask=attention)  # type: ignore[no-any-return]

    def draw_rows(self) -> list[int]:
        """This rank's contiguous share of the global batch (same rows on every rank)."""
        rows = super().draw_rows()
        share = len(rows) // self.ranks.world_size
        return rows[self.ranks.rank * share:(self.ranks.rank + 1) * share]

    def step(self) -> StepResult:
        """One synchronized step; losses and metrics averaged over ranks."""
        res = super().step()
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return res
        mean_keys = [k for k in res.metrics if k not in _MAX_METRICS + _SAME_METRICS]
        loss_keys = list(res.losses)  # same order on every rank (same code path)
        values = torch.tensor([res.loss] + [res.losses[k] for k in loss_keys] +
                              [res.metrics[k] for k in mean_keys], dtype=torch.float64,
                              device=self.device)
        dist.all_reduce(values)
        values /= dist.get_world_size()
        slow = torch.tensor([res.metrics.get(k, 0.0) for k in _MAX_METRICS],
                            dtype=torch.float64, device=self.device)
        dist.all_reduce(slow, op=dist.ReduceOp.MAX)
        v = values.tolist()
        metrics = dict(res.metrics)
        metrics.update(zip(mean_keys, v[1 + len(loss_keys):]))
        metrics.update(zip(_MAX_METRICS, slow.tolist()))
        return StepResult(step=res.step, loss=v[0], losses=dict(zip(loss_keys, v[1:1 + len(
            loss_keys)])), metrics=metrics)

    def evaluate(self) -> dict[str, Any]:
        """The monitor, on rank 0 only (the others get a stub record)."""
        if self.ranks.is_main:
            return super().evaluate()
        return {"step": self.step_count}

    def _append(self, name: str, record: dict[str, Any]) -> None:
        if self.ranks.is_main:
            super()._append(name, record)

    def save_checkpoint(self) -> Path:
        if self.ranks.is_main:
            return super().save_checkpoint()
        return self.out / "checkpoints"

    def finish(self) -> None:
        if self.ranks.is_main:
            super().finish()

    def train(self, until: int | None = None) -> Any:
        result = super().train(until)
        barrier()  # rank 0's last evaluation and files are done before anyone moves on
        return result

    def _truncate_logs(self, step: int) -> None:
        if self.ranks.is_main:  # only rank 0 writes the logs
            super()._truncate_logs(step)


def run_train_distributed(args: argparse.Namespace) -> int:
    """``heldout train`` under torchrun: the run (and its control) on every rank, the
    verdict and plots on rank 0."""
    from heldout.training.commands import build_config, train_with_control

    config = build_config(args)
    device = local_device()
    with process_group(device) as ranks:
        progress = not args.quiet and ranks.is_main
        if not ranks.is_main:
            barrier()  # rank 0 resolves the environment first (the organism trains once)
        env = resolve_environment(config)
        if ranks.is_main:
            barrier()
        train_with_control(
            args, config,
            lambda cfg, resume, e: DistributedTrainer(cfg, ranks=ranks, device=device,
                                                      resume=resume, progress=progress,
                                                      environment=e),
            is_main=ranks.is_main, processes=ranks.world_size, environment=env)
        barrier()
    return 0


__all__ = ["DistributedTrainer", "run_train_distributed"]
