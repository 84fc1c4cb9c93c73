"""Per-token probes that keep a signal on one token from being diluted by length
(Kramár et al. 2026, "Building Production-Ready Probes for Gemini").

Softmax attention pooling still averages: on a long sequence the weight of one
suspicious token shrinks as benign tokens pile up. Both probes here end in a hard max
instead, so one token (or one short run of tokens) can carry the whole score:

- :class:`MultiMaxProbe`: H heads, each a direction ``w_h``; the logit is the sum over
  heads of the largest per-token head score ``max_t z_t · w_h``.
- :class:`RollingAttentionProbe`: attention pooling inside every window of ``window``
  consecutive real tokens, then the largest window.

Same contract as :class:`~heldout.probes.attention.AttentionProbe`: ``X : array of
shape (n_samples, max_tokens, d_model)`` padded with all-NaN tokens, and
``torch_logits(acts (batch, pos, d_model), mask (batch, pos)) -> (batch,)`` pooling
only where ``mask`` is true. Training uses the straight max: its gradient reaches the
winning token (and window) only, which is enough for Adam to find the signal.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from heldout.errors import ProbeError
from heldout.probes.attention import PooledTokenProbe, standardized_tokens
from heldout.probes.mlp import init_normal


def _positive_int(name: str, value: object, default: int) -> None:
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0):
        raise ProbeError(f"{name} must be a positive integer, got {value!r}",
                         fix=f"use {name}={default}")


class MultiMaxProbe(PooledTokenProbe):
    """Sum over ``heads`` of the hard max over tokens of each head's score.

    For standardized tokens ``z_t``: ``logit = Σ_h max_t (z_t · w_h) + b``, the max over
    real tokens only. Each head is attention with its softmax replaced by a hard max;
    under a hard max the token a head picks and the value it reads coincide, so a head
    is one direction ``w_h`` (a separate query would receive no gradient). A sequence
    with no real token scores ``b``. Trained like
    :class:`~heldout.probes.attention.AttentionProbe` (Adam, early stopping).
    Fitted: ``params_`` (``mean``, ``scale``, ``w`` (heads, d_model), ``b``), ``n_epochs_``.
    """

    kind = "multimax"

    def __init__(self, heads: int = 4, lr: float = 1e-2, weight_decay: float = 1e-4,
                 max_epochs: int = 200, batch_size: int = 128,
                 validation_fraction: float = 0.2, patience: int = 10, random_state: int = 0,
                 device: str | None = None) -> None:
        self.heads = heads
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state
        self.device = device

    def _init_params(self, gen: torch.Generator, d: int) -> dict[str, Tensor]:
        _positive_int("heads", self.heads, 4)
        return {"w": init_normal(gen, int(self.heads), d, fan_in=d) * 0.1,
                "b": torch.zeros(1)}

    def _forward(self, params: dict[str, Tensor], inputs: tuple[Tensor, ...]) -> Tensor:
        acts, mask = inputs
        z = standardized_tokens(params, acts, mask)
        head = (z @ params["w"].T).masked_fill(~mask[..., None], float("-inf"))
        top = head.max(dim=1).values                      # (batch, heads)
        top = torch.where(mask.any(1, keepdim=True), top, torch.zeros_like(top))
        return top.sum(-1) + params["b"][0]


class RollingAttentionProbe(PooledTokenProbe):
    """Attention pooling within sliding windows of ``window`` real tokens, max over windows.

    For standardized tokens ``z_t`` in order (padding skipped, wherever it lies), every
    run of ``window`` consecutive real tokens ``S`` gives ``Σ_{t∈S} softmax_S(z_t · q)
    (z_t · w)``; the logit is the largest of these plus ``b``. A sequence shorter than
    ``window`` is one window. A short run of suspicious tokens therefore scores the same
    in a short or a long sequence, where plain attention pooling would spread its weight.
    Fitted: ``params_`` (``mean``, ``scale``, ``q``, ``w``, ``b``), ``n_epochs_``.
    """

    kind = "rolling_attention"

    def __init__(self, window: int = 4, lr: float = 1e-2, weight_decay: float = 1e-4,
                 max_epochs: int = 200, batch_size: int = 128,
                 validation_fraction: float = 0.2, patience: int = 10, random_state: int = 0,
                 device: str | None = None) -> None:
        self.window = window
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state
        self.device = device

    def _init_params(self, gen: torch.Generator, d: int) -> dict[str, Tensor]:
        _positive_int("window", self.window, 4)
        return {"q": init_normal(gen, d, fan_in=d) * 0.1,
                "w": init_normal(gen, d, fan_in=d) * 0.1, "b": torch.zeros(1)}

    def _forward(self, params: dict[str, Tensor], inputs: tuple[Tensor, ...]) -> Tensor:
        acts, mask = inputs
        z = standardized_tokens(params, acts, mask)
        W = int(self.window)
        # real tokens first, in their order, so that a window is W consecutive real tokens
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
        real = mask.gather(1, order)
        score, value = (z @ params["q"]).gather(1, order), (z @ params["w"]).gather(1, order)
        if real.shape[1] < W:
            pad = W - real.shape[1]
            score, value, real = F.pad(score, (0, pad)), F.pad(value, (0, pad)), \
                F.pad(real, (0, pad))
        score, value, real = (t.unfold(1, W, 1) for t in (score, value, real))
        # a finite floor, not -inf: an all-padding window must not turn into NaN
        attn = torch.softmax(score.masked_fill(~real, torch.finfo(score.dtype).min), dim=-1)
        pooled = (attn * value).sum(-1)                   # (batch, n_windows)
        whole = real.all(-1)
        whole[:, 0] = True  # the first window holds every real token of a short sequence
        return pooled.masked_fill(~whole, float("-inf")).max(-1).values + params["b"][0]
