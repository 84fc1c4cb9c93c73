"""Cache activations of a dataset at chosen hook sites into a store on disk.

Examples are batched and right-padded, sorted by length inside each shard to waste
little compute on padding. The forward stops after the deepest requested block, and
hooks reduce activations to the selected tokens in place, so only those leave the
model. Each shard is written atomically; re-running the same call resumes.

Under ``torchrun`` the same call splits the work: every rank runs the same checks
(rank 0 also creates or resumes the store, and any rank's error stops all of them
before work starts), then rank r computes every world_size-th pending shard. Shard
contents do not depend on which rank computed them, so the store is the one a single
process writes. See ``heldout.activations.distributed`` and ``writer``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heldout.activations.distributed import Ranks, agree, barrier, process_group
from heldout.activations.selection import (
    check_prompt_positions,
    check_selection,
    select_tokens,
    token_index,
)
from heldout.activations.sites import HookSite, parse_sites
from heldout.activations.store import STORE_DTYPES, ActivationStore
from heldout.activations.writer import StoreWriter
from heldout.data import Dataset, TokenizedExample, tokenize_dataset
from heldout.errors import ConfigError, DataError


def pad_batch(batch: Sequence[TokenizedExample], pad_id: int, device: Any
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad token ids: (input_ids, attention_mask, response_mask), each (batch, pos)."""
    width = max(len(t.input_ids) for t in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    response = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, tok in enumerate(batch):
        n = len(tok.input_ids)
        ids[row, :n] = torch.tensor(tok.input_ids)
        attention[row, :n] = 1
        response[row, :n] = torch.tensor(tok.response_mask)
    return ids.to(device), attention.to(device), response.to(device)


def _model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


class AllSitesRead(Exception):
    """Raised by the last hook of a selected forward pass: nothing after it is needed."""


def forward_selected(model: Any, hook_names: dict[HookSite, str], stop_at_layer: int | None,
                     ids: torch.Tensor, attention: torch.Tensor, response: torch.Tensor,
                     select: str) -> dict[HookSite, torch.Tensor]:
    """One forward pass; returns {site: selected activations} (float32 on the model device)."""
    captured: dict[HookSite, torch.Tensor] = {}

    def make_hook(site: HookSite) -> Any:
        def hook(acts: torch.Tensor, hook: Any) -> None:
            captured[site] = select_tokens(acts.detach(), response, select).float()
            if len(captured) == len(hook_names):
                # stop_at_layer cannot stop after the last block: without this the final
                # norm and the unembedding (a fifth of the time on a 49k vocabulary) run
                raise AllSitesRead
        return hook

    fwd_hooks = [(name, make_hook(site)) for site, name in hook_names.items()]
    with torch.no_grad():
        try:
            model.run_with_hooks(ids, fwd_hooks=fwd_hooks, stop_at_layer=stop_at_layer,
                                 attention_mask=attention)
        except AllSitesRead:
            pass
    return captured


def stop_layer(model: Any, sites: Sequence[HookSite]) -> int | None:
    """The ``stop_at_layer`` that runs exactly the blocks the sites need."""
    deepest = max(s.layer for s in sites) + 1
    return deepest if deepest < int(model.cfg.n_layers) else int(model.cfg.n_layers)


@dataclass(frozen=True)
class ForwardInputs:
    """Checked inputs of a batched, selected forward pass (shared by the disk cache and
    the in-memory ``collect``); build it with :func:`prepare_forward`."""

    sites: list[HookSite]
    """The requested sites, parsed, range-checked, sorted and free of duplicates."""
    hook_names: dict[HookSite, str]
    """Each site's canonical hook name on the model."""
    tokens: list[TokenizedExample]
    """Every example, tokenized (and checked) in dataset order."""
    select: str
    """The token selection (``last`` | ``mean`` | ``tokens`` | ``token:K``)."""
    max_length: int
    """The longest sequence allowed: ``max_length`` capped by the model's ``n_ctx``."""


def prepare_forward(model: Any, dataset: Dataset,
                    sites: str | HookSite | Sequence[str | HookSite], select: str, *,
                    batch_size: int, max_length: int | None = None,
                    truncate: bool = False) -> ForwardInputs:
    """Validate a forward over ``dataset`` before any work: selection, batch size, sites
    (SiteError), a non-empty dataset, the tokenizer, every example's tokens (DataError
    when too long unless ``truncate``), and that ``token:K`` exists in every response."""
    select = check_selection(select)
    if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}",
                          fix="pass a positive size")
    site_list = parse_sites(sites if isinstance(sites, (str, HookSite)) else list(sites),
                            n_layers=int(model.cfg.n_layers))
    hook_names = {site: site.resolve(model) for site in site_list}
    if len(dataset) == 0:
        raise DataError("the dataset has no examples", fix="pass a non-empty dataset")
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ConfigError("the model has no tokenizer",
                          fix="load it with a tokenizer (load_model(..., tokenizer=...))")
    n_ctx = int(model.cfg.n_ctx)
    max_length = n_ctx if max_length is None else min(max_length, n_ctx)
    tokens = tokenize_dataset(dataset, tokenizer, max_length=max_length, truncate=truncate)
    index = token_index(select)
    if index is not None:
        short = [ex.id for ex, t in zip(dataset, tokens) if t.n_response <= index]
        if short:
            raise DataError(f"selection {select} reads response token {index}, but "
                            f"{len(short)} example(s) have fewer response tokens "
                            f"(first: {short[0]!r})",
                            fix="pick a smaller K, or drop the short examples")
    check_prompt_positions(select, list(dataset), [t.response_mask for t in tokens])
    return ForwardInputs(site_list, hook_names, tokens, select, max_length)


def iter_selected(model: Any, inputs: ForwardInputs, rows: Iterable[int], *, batch_size: int
                  ) -> Iterator[tuple[list[int], dict[HookSite, list[torch.Tensor]]]]:
    """Run ``rows`` (indices into ``inputs.tokens``) through ``model``, ``batch_size`` at
    a time, sorted by length (stable) so batches hold similar lengths; the forward
    stops after the deepest site.

    Yields ``(batch_rows, {site: one CPU float32 tensor per row})``: of shape
    (1, d_model) for ``last``/``mean``/``token:K``, (n_response, d_model) for ``tokens``.
    """
    tokenizer = model.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = _model_device(model)
    stop_at = stop_layer(model, inputs.sites)
    tokens, select = inputs.tokens, inputs.select
    order = sorted(rows, key=lambda r: len(tokens[r].input_ids))
    for start in range(0, len(order), batch_size):
        batch_rows = order[start:start + batch_size]
        batch = [tokens[r] for r in batch_rows]
        ids, attention, response = pad_batch(batch, pad_id, device)
        selected = forward_selected(model, inputs.hook_names, stop_at, ids, attention,
                                    response, select)
        sizes = [t.n_response for t in batch] if select == "tokens" else [1] * len(batch)
        yield batch_rows, {site: list(torch.split(selected[site].cpu(), sizes))
                           for site in inputs.sites}


def cache_activations(model: Any, dataset: Dataset, sites: str | Sequence[str | HookSite], *,
                      out: str | os.PathLike[str], select: str = "last",
                      dtype: str = "float32", batch_size: int = 32, shard_rows: int = 4096,
                      max_length: int | None = None, truncate: bool = False,
                      progress: bool = True) -> ActivationStore:
    """Run ``dataset`` through ``model`` and store activations at ``sites`` under ``out``.

    model : a TransformerBridge (see ``heldout.models.load_model``).
    sites : e.g. ``"resid_post:0-3"`` or a list of HookSite.
    select : ``last`` | ``mean`` | ``tokens`` (see ``heldout.activations.selection``).
    dtype : storage dtype, ``float32`` | ``bfloat16`` | ``float16``.
    max_length : defaults to the model's context ``cfg.n_ctx``; longer examples raise
        DataError unless ``truncate=True``.

    Everything is validated (sites, selection, dtype, every example's tokens, an existing
    store's identity) before the first forward pass. Re-running the same call resumes.
    Under ``torchrun`` (every rank calls this with the same arguments and its model on
    its own device) the ranks split the shards and write one store; every rank returns it.
    """
    with process_group(_model_device(model)) as ranks:
        error: BaseException | None = None
        plan = None
        try:
            plan = _prepare(model, dataset, sites, out=Path(out), select=select, dtype=dtype,
                            batch_size=batch_size, shard_rows=shard_rows,
                            max_length=max_length, truncate=truncate, owner=ranks.is_main)
        except Exception as err:  # noqa: BLE001  (shared with the other ranks, re-raised)
            error = err
        agree(error)  # rank 0 has created or resumed the store once this returns
        assert plan is not None
        if not ranks.is_main:
            try:
                plan.writer = StoreWriter.attach(Path(out), plan.identity, ranks.rank)
            except Exception as err:  # noqa: BLE001
                error = err
        agree(error)
        _run(model, plan, ranks, batch_size=batch_size, progress=progress)
        if ranks.distributed:
            barrier()  # every rank has listed its shards
            if ranks.is_main:
                plan.writer.merge_sidecars(verify=False)  # checksums were just computed
            barrier()
    return ActivationStore.open(out)


@dataclass
class _Plan:
    """What every rank needs to cache its shards, all checked before any work."""

    inputs: ForwardInputs
    identity: dict[str, Any]
    writer: Any  # StoreWriter; rank 0 makes it in _prepare, other ranks attach after


def _prepare(model: Any, dataset: Dataset, sites: str | Sequence[str | HookSite], *, out: Path,
             select: str, dtype: str, batch_size: int, shard_rows: int,
             max_length: int | None, truncate: bool, owner: bool) -> _Plan:
    """Validate everything; ``owner`` (rank 0, or a single process) also opens the store."""
    from heldout.models import model_fingerprint, tokenizer_fingerprint

    if dtype not in STORE_DTYPES:
        raise ConfigError(f"unknown storage dtype {dtype!r}",
                          fix=f"use one of {', '.join(STORE_DTYPES)}")
    inputs = prepare_forward(model, dataset, sites, select, batch_size=batch_size,
                             max_length=max_length, truncate=truncate)
    site_list, hook_names = inputs.sites, inputs.hook_names
    identity = {
        "model_fingerprint": model_fingerprint(model),
        "tokenizer_fingerprint": tokenizer_fingerprint(model.tokenizer),
        "dataset_fingerprint": dataset.fingerprint(),
        "sites": [str(s) for s in site_list], "selection": inputs.select, "dtype": dtype,
        "d_model": int(model.cfg.d_model), "n_rows": len(dataset), "shard_rows": shard_rows,
        "max_length": inputs.max_length, "truncate": truncate,
    }
    writer = None
    if owner:
        splits = [e.split for e in dataset]
        groups = [e.group for e in dataset]
        writer = StoreWriter(out, identity, labels=dataset.labels.tolist(), ids=dataset.ids,
                             splits=splits if any(s is not None for s in splits) else None,
                             groups=groups if any(g is not None for g in groups) else None,
                             hook_names={str(s): n for s, n in hook_names.items()})
    return _Plan(inputs, identity, writer)


def _run(model: Any, plan: _Plan, ranks: Ranks, *, batch_size: int, progress: bool) -> None:
    """Compute and write this rank's share of the pending shards."""
    writer, inputs = plan.writer, plan.inputs
    pending = writer.pending_shards()[ranks.rank::ranks.world_size]
    from tqdm.auto import tqdm

    desc = f"cache {inputs.select}" + (f" [rank {ranks.rank}/{ranks.world_size}]"
                                       if ranks.distributed else "")
    bar = tqdm(total=sum(np.subtract(*writer.shard_rows_range(i)[::-1]) for i in pending),
               desc=desc, unit="ex", disable=not progress or not ranks.is_main)
    for index in pending:
        lo, hi = writer.shard_rows_range(index)
        placed: dict[HookSite, dict[int, torch.Tensor]] = {s: {} for s in inputs.sites}
        for rows, selected in iter_selected(model, inputs, range(lo, hi), batch_size=batch_size):
            for site, chunks in selected.items():
                placed[site].update(zip(rows, chunks))
            bar.update(len(rows))
        arrays = {site: torch.cat([placed[site][r] for r in range(lo, hi)])
                  for site in inputs.sites}
        offsets = None
        if inputs.select == "tokens":
            offsets = np.concatenate(
                [[0], np.cumsum([inputs.tokens[r].n_response for r in range(lo, hi)])])
        writer.write_shard(index, arrays, offsets=offsets)
    bar.close()
