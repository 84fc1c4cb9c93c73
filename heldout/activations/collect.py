"""Collect activations in memory: the cache's numbers, without a store on disk.

For small sets (a notebook, a probe fit on a few thousand examples, a monitor's
evaluation split) ``collect`` runs the same batched forward as ``cache_activations``
(the same tokenization, padding, early stop and token selection, see
``heldout.activations.cache``) and keeps the result as an :class:`Activations`
object. For sets that do not fit in memory, or that should survive the process,
cache them to disk instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from heldout.activations.sites import HookSite
from heldout.errors import ConfigError, SiteError

if TYPE_CHECKING:
    import numpy as np

    from heldout.data import Dataset

# numpy, torch and the cache load when ``collect`` runs: ``heldout.activations`` imports
# this module eagerly (a lazy export would be shadowed by the submodule of the same
# name), and ``import heldout`` must stay light.


@dataclass(frozen=True, eq=False)
class Activations:
    """Activations of one dataset at some hook sites, under one token selection.

    Rows follow the dataset's order. For ``last`` / ``mean`` / ``token:K`` each site
    holds one row per example (:meth:`get`); for ``tokens`` each site holds every
    response token, example ``i`` at ``values[offsets[i]:offsets[i + 1]]``
    (:meth:`get_tokens`).
    """

    sites: tuple[HookSite, ...]
    """The sites held, sorted."""
    selection: str
    """The token selection: ``last`` | ``mean`` | ``tokens`` | ``token:K``."""
    labels: np.ndarray
    """int64 array of shape (n_examples,): the dataset's 0/1 labels."""
    ids: tuple[str, ...]
    """The examples' ids, in row order."""
    values: Mapping[HookSite, np.ndarray]
    """``{site: float32 array}`` of shape (n_examples, d_model), or (n_tokens, d_model)
    for ``tokens``."""
    offsets: np.ndarray | None
    """int64 array of shape (n_examples + 1,) for ``tokens``; None otherwise."""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def d_model(self) -> int:
        """Width of every site's rows."""
        return int(next(iter(self.values.values())).shape[1])

    def _site(self, site: HookSite | str) -> HookSite:
        key = site if isinstance(site, HookSite) else HookSite.parse(site)
        if key not in self.values:
            raise SiteError(f"no site {key} in these activations "
                            f"(have: {', '.join(map(str, self.sites))})",
                            fix="collect it, or pick one of the sites listed")
        return key

    def get(self, site: HookSite | str) -> np.ndarray:
        """One row per example: float32 array of shape (n_examples, d_model)."""
        key = self._site(site)
        if self.offsets is not None:
            raise ConfigError("these activations hold every response token "
                              "(selection 'tokens'), not one row per example",
                              fix="use get_tokens(site), or collect with select='last' "
                                  "or 'mean'")
        return self.values[key]

    def get_tokens(self, site: HookSite | str) -> tuple[np.ndarray, np.ndarray]:
        """Per-token activations: ``(values (n_tokens, d_model) float32, offsets
        (n_examples + 1,))``; example ``i`` is ``values[offsets[i]:offsets[i + 1]]``."""
        key = self._site(site)
        if self.offsets is None:
            raise ConfigError(f"these activations hold one row per example (selection "
                              f"{self.selection!r}), not per-token activations",
                              fix="use get(site), or collect with select='tokens'")
        return self.values[key], self.offsets


def collect(model: Any, data: Dataset, sites: str | HookSite | Sequence[str | HookSite],
            select: str = "last", *, batch_size: int = 64, progress: bool = False,
            max_length: int | None = None, truncate: bool = False) -> Activations:
    """Run ``data`` through ``model`` and return activations at ``sites`` in memory.

    model : a TransformerBridge (see ``heldout.models.load_model``).
    data : a labeled ``heldout.data.Dataset``.
    sites : e.g. ``"resid_post:0-3"``, or a list of sites / HookSite.
    select : ``last`` | ``mean`` | ``tokens`` | ``token:K`` (see
        ``heldout.activations.selection``).
    max_length, truncate : as in ``cache_activations`` (default: the model's context;
        longer examples raise DataError unless ``truncate=True``).

    The numbers are those ``cache_activations`` stores in float32 for the same inputs.
    Sites, selection, batch size and every example are checked before the first
    forward pass (SiteError, ConfigError, DataError). Single-process: under
    ``torchrun`` every rank computes the whole set.
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from heldout.activations.cache import iter_selected, prepare_forward

    inputs = prepare_forward(model, data, sites, select, batch_size=batch_size,
                             max_length=max_length, truncate=truncate)

    n = len(data)
    placed: dict[HookSite, list[torch.Tensor | None]] = {s: [None] * n for s in inputs.sites}
    with tqdm(total=n, desc=f"collect {inputs.select}", unit="ex",
              disable=not progress) as bar:
        for rows, selected in iter_selected(model, inputs, range(n), batch_size=batch_size):
            for site, chunks in selected.items():
                for row, chunk in zip(rows, chunks):
                    placed[site][row] = chunk
            bar.update(len(rows))
    values = {site: torch.cat([c for c in chunks if c is not None]).numpy()
              for site, chunks in placed.items()}
    offsets = None
    if inputs.select == "tokens":
        offsets = np.concatenate([[0], np.cumsum([t.n_response for t in inputs.tokens])]
                                 ).astype(np.int64)
    return Activations(sites=tuple(inputs.sites), selection=inputs.select,
                       labels=np.asarray(data.labels, dtype=np.int64), ids=tuple(data.ids),
                       values=values, offsets=offsets)
