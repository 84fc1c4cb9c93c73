"""Token selections: which positions leave the model, and how they are reduced.

- ``last``: the last response token of each example (one row per example);
- ``mean``: the mean over response tokens (one row per example);
- ``token:K``: the K-th response token, 0-based (one row per example): the position
  where a decision is made, when the response has a fixed format (e.g. the built-in
  organism's verdict is predicted at ``token:5``). A response shorter than K + 1
  tokens gives its last token (the cache refuses such examples up front);
- ``tokens``: every response token (ragged, with offsets);
- ``prompt_last``: the last PROMPT token, the position just before the response starts
  (one row per example): where probes in the literature read a statement given as the
  prompt. Examples whose prompt is empty (no messages, no prompt text: e.g. the
  ``statement,label`` CSVs, where the statement is the response) or was truncated
  away have no such position; :func:`check_prompt_positions` refuses them.

These run inside forward hooks, so only selected tokens are ever copied out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from heldout.errors import ConfigError, DataError

Selection = Literal["last", "mean", "tokens", "prompt_last"] | str
SELECTIONS: tuple[str, ...] = ("last", "mean", "tokens", "prompt_last")
"""The fixed selections; ``token:K`` is accepted besides these."""
_INDEXED = re.compile(r"^token:(\d+)$")


def token_index(select: str) -> int | None:
    """K for ``token:K``, else None."""
    match = _INDEXED.match(select)
    return int(match.group(1)) if match else None


def check_selection(select: str) -> str:
    """Return ``select`` if it is a known selection, else raise ConfigError."""
    if not isinstance(select, str) or (select not in SELECTIONS and token_index(select) is None):
        raise ConfigError(f"unknown token selection {select!r}",
                          fix=f"use one of {', '.join(SELECTIONS)}, or token:K for the "
                              "K-th response token (0-based)")
    return select


def check_prompt_positions(select: str, examples: Sequence[Any],
                           response_masks: Sequence[Sequence[bool]]) -> None:
    """For ``prompt_last``: DataError unless every example has a real prompt before its
    response (prompt text or chat messages, and at least one prompt token left after
    truncation). A prompt of only a BOS token would give every example the same
    activations, so an empty prompt is refused rather than read there."""
    if select != "prompt_last":
        return
    empty = [ex.id for ex, mask in zip(examples, response_masks)
             if (not mask or mask[0])
             or (getattr(ex, "messages", None) is None and not (ex.prompt or "").strip())]
    if empty:
        raise DataError(f"selection prompt_last reads the last prompt token, but "
                        f"{len(empty)} example(s) have no prompt before the response "
                        f"(first: {empty[0]!r}); in statement,label CSVs the statement "
                        "is the response",
                        fix="use --select last (the response's last token), or put the "
                            "statement in 'prompt' (JSONL) so that it precedes the response")


def select_tokens(acts: Float[Tensor, "batch pos d_model"],
                  response_mask: Bool[Tensor, "batch pos"],
                  select: str) -> Float[Tensor, "rows d_model"]:
    """Reduce activations to the selected response tokens.

    Returns (batch, d_model) for ``last``/``mean``/``token:K``/``prompt_last`` and
    (n_response_tokens, d_model), row-major by example then position, for ``tokens``.
    """
    if select == "tokens":
        return acts[response_mask]
    if select == "mean":
        weights = response_mask.to(acts.dtype)
        summed = torch.einsum("bp,bpd->bd", weights, acts.to(torch.float32) if
                              acts.dtype != torch.float32 else acts)
        return summed / response_mask.sum(dim=1, keepdim=True).to(summed.dtype)
    positions = torch.arange(response_mask.shape[1], device=response_mask.device)
    last = torch.where(response_mask, positions, -1).max(dim=1).values
    index = token_index(select)
    if index is not None or select == "prompt_last":
        first = torch.where(response_mask, positions, response_mask.shape[1]).min(dim=1).values
        # prompt_last: a row with no prompt (refused up front by the cache) reads position
        # 0 rather than wrapping round to the end of the row
        last = (torch.minimum(first + index, last) if index is not None
                else (first - 1).clamp(min=0))
    elif select != "last":
        check_selection(select)
    return acts[torch.arange(acts.shape[0], device=acts.device), last]
