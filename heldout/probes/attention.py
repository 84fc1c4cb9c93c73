"""Per-token probes: learned attention pooling, and token-level linear probes whose
token scores are aggregated by mean or max.

Input: ``X : array of shape (n_samples, max_tokens, d_model)`` padded with all-NaN
tokens (see :mod:`heldout.probes.base`, :func:`~heldout.probes.base.pad_tokens`).
Differentiable scoring: ``torch_logits(acts (batch, pos, d_model), mask (batch, pos))
-> (batch,)``, pooling only where ``mask`` is true (:class:`TokenTorchScorer`).

Why these are not run through ``check_estimator``: its checks feed 2-D arrays only.
Their sklearn contract (params, clone, NotFittedError, feature-count errors) is tested
directly in ``tests/probes``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from heldout.errors import ProbeError
from heldout.probes.base import BaseProbe, default_device, token_mask
from heldout.probes.linear import LogisticProbe
from heldout.probes.mlp import TorchStateProbe, init_normal, standardizer


def check_token_acts(probe: BaseProbe, acts: Tensor, mask: Tensor) -> Tensor:
    """``mask`` as a bool tensor on ``acts``' device, after checking that ``probe`` is
    fitted and that ``acts`` is (batch, pos, d_model) with a matching mask (ProbeError)."""
    probe._check_fitted()
    if acts.ndim != 3 or acts.shape[-1] != probe.n_features_in_:
        raise ProbeError(f"acts has shape {tuple(acts.shape)}, but {type(probe).__name__} "
                         f"is expecting (batch, pos, {probe.n_features_in_})",
                         fix="pass per-token activations from the probe's site")
    if mask.shape != acts.shape[:2]:
        raise ProbeError(f"mask has shape {tuple(mask.shape)}, expected {tuple(acts.shape[:2])}",
                         fix="pass one bool per (sequence, position), True on response tokens")
    return mask.to(device=acts.device, dtype=torch.bool)


def zero_filled(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Padding replaced by zeros (NaN would poison matmuls even where masked)."""
    mask = token_mask(X)
    return np.where(mask[:, :, None], X, 0.0).astype(np.float32), mask


def standardized_tokens(params: dict[str, Tensor], acts: Tensor, mask: Tensor) -> Tensor:
    """Standardized tokens, zero where ``mask`` is false (padding may hold junk)."""
    z = (acts - params["mean"]) / params["scale"]
    return torch.where(mask[..., None], z, torch.zeros((), dtype=z.dtype, device=z.device))


class PooledTokenProbe(TorchStateProbe):
    """Learned pooling over tokens: fitting (Adam, early stopping, like
    :class:`~heldout.probes.mlp.MLPProbe`) and scoring shared by every per-token probe
    with trained parameters. Subclasses give ``_init_params(gen, d_model)`` and
    ``_forward(params, (acts, mask)) -> logits``."""

    token_level = True

    def _init_params(self, gen: torch.Generator, d: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        dev = default_device(self.device)
        filled, mask = zero_filled(X)
        mean, scale = standardizer(filled[mask])
        gen = torch.Generator().manual_seed(int(self.random_state or 0))
        params = self._init_params(gen, X.shape[2])
        inputs = (torch.as_tensor(filled, device=dev), torch.as_tensor(mask, device=dev))
        self._train(params, mean, scale, inputs, y, dev)

    def _decision(self, X: np.ndarray) -> np.ndarray:
        # float64 on CPU so that scores do not depend on the batch they come in
        filled, mask = zero_filled(X)
        acts = torch.as_tensor(filled, dtype=torch.float64)
        with torch.no_grad():
            return self._forward(self._params_like(acts), (acts, torch.as_tensor(mask))).numpy()

    def torch_logits(self, acts: Tensor, mask: Tensor) -> Tensor:
        """``acts : Float[Tensor, "batch pos d_model"]``, ``mask : Bool[Tensor, "batch pos"]``
        → ``Float[Tensor, "batch"]``, differentiable in ``acts`` only."""
        mask = check_token_acts(self, acts, mask)
        return self._forward(self._params_like(acts), (acts, mask))


class AttentionProbe(PooledTokenProbe):
    """Attention pooling over tokens, then a linear read-out.

    For standardized tokens ``z_t``: ``a = softmax_t(z_t · q)`` over real tokens,
    ``logit = (Σ_t a_t z_t) · w + b``. The query ``q`` learns which tokens matter, so
    a signal carried by one token among many is not diluted as in mean pooling.
    Trained like :class:`~heldout.probes.mlp.MLPProbe` (Adam, early stopping).
    Fitted: ``params_`` (``mean``, ``scale``, ``q``, ``w``, ``b``), ``n_epochs_``.
    """

    kind = "attention"

    def __init__(self, lr: float = 1e-2, weight_decay: float = 1e-4, max_epochs: int = 200,
                 batch_size: int = 128, validation_fraction: float = 0.2, patience: int = 10,
                 random_state: int = 0, device: str | None = None) -> None:
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state
        self.device = device

    def _init_params(self, gen: torch.Generator, d: int) -> dict[str, Tensor]:
        return {"q": init_normal(gen, d, fan_in=d) * 0.1,
                "w": init_normal(gen, d, fan_in=d) * 0.1, "b": torch.zeros(1)}

    def _forward(self, params: dict[str, Tensor], inputs: tuple[Tensor, ...]) -> Tensor:
        acts, mask = inputs
        z = standardized_tokens(params, acts, mask)
        scores = (z @ params["q"]).masked_fill(~mask, float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        pooled = (attn[..., None] * z).sum(-2)
        return pooled @ params["w"] + params["b"][0]


class TokenLinearProbe(BaseProbe):
    """A logistic probe fitted on every real token (each token carries its example's
    label), whose token logits are pooled per example by ``aggregate``: ``"mean"`` or
    ``"max"``. Parameters as :class:`~heldout.probes.linear.LogisticProbe`.
    Fitted: ``coef_`` (d_model,), ``intercept_`` (token-level logit = x · coef_ + intercept_).
    """

    kind = "token_linear"
    token_level = True

    def __init__(self, aggregate: Literal["mean", "max"] = "mean", C: float = 1.0,
                 max_iter: int = 100, tol: float = 1e-4, device: str | None = None) -> None:
        self.aggregate = aggregate
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.device = device

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        if self.aggregate not in ("mean", "max"):
            raise ProbeError(f"aggregate must be 'mean' or 'max', got {self.aggregate!r}",
                             fix="use aggregate='mean' or aggregate='max'")
        mask = token_mask(X)
        rows = np.repeat(np.arange(len(X)), mask.sum(1))
        inner = LogisticProbe(C=self.C, max_iter=self.max_iter, tol=self.tol,
                              device=self.device).fit(X[mask], y[rows])
        self.coef_, self.intercept_ = inner.coef_, inner.intercept_

    def _decision(self, X: np.ndarray) -> np.ndarray:
        filled, mask = zero_filled(X)
        tok = filled.astype(np.float64) @ self.coef_ + self.intercept_
        if self.aggregate == "max":
            return np.where(mask, tok, -np.inf).max(1)
        return (tok * mask).sum(1) / mask.sum(1)

    def torch_logits(self, acts: Tensor, mask: Tensor) -> Tensor:
        """``acts : Float[Tensor, "batch pos d_model"]``, ``mask : Bool[Tensor, "batch pos"]``
        → ``Float[Tensor, "batch"]``, differentiable in ``acts`` only."""
        mask = check_token_acts(self, acts, mask)
        w = torch.as_tensor(self.coef_, dtype=acts.dtype, device=acts.device)
        tok = acts @ w + float(self.intercept_)
        if self.aggregate == "max":
            return tok.masked_fill(~mask, float("-inf")).max(-1).values
        m = mask.to(acts.dtype)
        return (tok * m).sum(-1) / m.sum(-1).clamp_min(1)

    def _state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return {"coef": torch.as_tensor(self.coef_),
                "intercept": torch.tensor([self.intercept_], dtype=torch.float64)}, {}

    def _set_state(self, tensors: dict[str, Tensor], extras: dict[str, Any]) -> None:
        self.coef_ = tensors["coef"].numpy()
        self.intercept_ = float(tensors["intercept"][0])
        self.n_features_in_ = int(self.coef_.shape[0])
        self.classes_ = np.array([0, 1])
