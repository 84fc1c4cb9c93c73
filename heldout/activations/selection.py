"""Token selections: which response positions leave the model, and how they are reduced.

- ``last``: the last response token of each example (one row per example);
- ``mean``: the mean over response tokens (one row per example);
- ``tokens``: every response token (ragged, with offsets).

These run inside forward hooks, so only selected tokens are ever copied out.
"""

from __future__ import annotations

from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from heldout.errors import ConfigError

Selection = Literal["last", "mean", "tokens"]
SELECTIONS: tuple[str, ...] = ("last", "mean", "tokens")


def check_selection(select: str) -> str:
    if select not in SELECTIONS:
        raise ConfigError(f"unknown token selection {select!r}",
                          fix=f"use one of {', '.join(SELECTIONS)}")
    return select


def select_tokens(acts: Float[Tensor, "batch pos d_model"],
                  response_mask: Bool[Tensor, "batch pos"],
                  select: str) -> Float[Tensor, "rows d_model"]:
    """Reduce activations to the selected response tokens.

    Returns (batch, d_model) for ``last``/``mean`` and (n_response_tokens, d_model),
    row-major by example then position, for ``tokens``.
    """
    if select == "tokens":
        return acts[response_mask]
    if select == "mean":
        weights = response_mask.to(acts.dtype)
        summed = torch.einsum("bp,bpd->bd", weights, acts.to(torch.float32) if
                              acts.dtype != torch.float32 else acts)
        return summed / response_mask.sum(dim=1, keepdim=True).to(summed.dtype)
    # last response token: the highest position whose mask is set
    positions = torch.arange(response_mask.shape[1], device=response_mask.device)
    last = torch.where(response_mask, positions, -1).max(dim=1).values
    return acts[torch.arange(acts.shape[0], device=acts.device), last]
