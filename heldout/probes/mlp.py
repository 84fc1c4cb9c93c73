"""A one-hidden-layer MLP probe, and the small torch training loop it shares with the
attention probe (Adam, minibatches, early stopping on a held-out validation split)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from heldout.errors import ProbeError
from heldout.probes.base import BaseProbe, default_device

Forward = Callable[[dict[str, Tensor], tuple[Tensor, ...]], Tensor]
"""``forward(params, inputs) -> logits (batch,)``; ``inputs`` are row-aligned tensors."""


def train_logits(forward: Forward, params: dict[str, Tensor], inputs: tuple[Tensor, ...],
                 y: np.ndarray, *, lr: float, weight_decay: float, max_epochs: int,
                 batch_size: int, validation_fraction: float, patience: int,
                 seed: int) -> tuple[dict[str, Tensor], int]:
    """Minimize mean log-loss with Adam; stop when the validation loss has not improved
    for ``patience`` epochs and return the best parameters and epochs run.

    The validation split is a seeded stratified slice of ``validation_fraction``; with
    fewer than 5 examples of a class in it, there is too little to stop on and all
    rows train for ``max_epochs``.
    """
    for name, value in (("lr", lr), ("max_epochs", max_epochs), ("batch_size", batch_size)):
        if not value > 0:
            raise ProbeError(f"{name} must be positive, got {value!r}",
                             fix=f"leave {name} at its default")
    if not 0 <= validation_fraction < 1:
        raise ProbeError(f"validation_fraction must be in [0, 1), got {validation_fraction}",
                         fix="use validation_fraction=0.2")
    rng = np.random.default_rng(seed)
    val = np.zeros(len(y), dtype=bool)
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        val[rng.permutation(idx)[: int(len(idx) * validation_fraction)]] = True
    if min((y[val] == 0).sum(), (y[val] == 1).sum()) < 5:
        val[:] = False
    train = rng.permutation(np.flatnonzero(~val))
    dev = inputs[0].device
    target = torch.as_tensor(y, dtype=torch.float32, device=dev)
    opt = torch.optim.Adam(list(params.values()), lr=lr, weight_decay=weight_decay)
    val_idx = torch.as_tensor(np.flatnonzero(val), device=dev)
    best, best_loss, stale, epoch = _copy(params), math.inf, 0, 0
    for epoch in range(1, max_epochs + 1):
        for start in range(0, len(train), batch_size):
            idx = torch.as_tensor(train[start:start + batch_size], device=dev)
            loss = F.binary_cross_entropy_with_logits(
                forward(params, tuple(t[idx] for t in inputs)), target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        train = rng.permutation(train)
        if len(val_idx) == 0:
            continue
        with torch.no_grad():
            vloss = float(F.binary_cross_entropy_with_logits(
                forward(params, tuple(t[val_idx] for t in inputs)), target[val_idx]))
        if vloss < best_loss - 1e-6:
            best, best_loss, stale = _copy(params), vloss, 0
        else:
            stale += 1
            if stale >= patience:
                break
    return (best if len(val_idx) else _copy(params)), epoch


def _copy(params: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in params.items()}


def standardizer(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (std 0 → 1) of ``X : array of shape (rows, d_model)``."""
    mean = X.mean(0, dtype=np.float64)
    scale = X.std(0, dtype=np.float64)
    scale[scale < 1e-12] = 1.0
    return mean, scale


def init_normal(gen: torch.Generator, *shape: int, fan_in: int) -> Tensor:
    """He-style initial weights from a seeded generator (the global RNG is untouched)."""
    return torch.randn(*shape, generator=gen) * math.sqrt(2.0 / fan_in)


class TorchStateProbe(BaseProbe):
    """A probe whose fitted state is a dict of float tensors ``params_`` (kept on CPU)."""

    def _forward(self, params: dict[str, Tensor], inputs: tuple[Tensor, ...]) -> Tensor:
        raise NotImplementedError

    def _train(self, params: dict[str, Tensor], mean: np.ndarray, scale: np.ndarray,
               inputs: tuple[Tensor, ...], y: np.ndarray, dev: torch.device) -> None:
        """Fit the trainable ``params`` (standardization ``mean``/``scale`` held fixed)
        with early stopping; sets ``params_`` (best weights, on CPU) and ``n_epochs_``.
        Needs the estimator parameters lr, weight_decay, max_epochs, batch_size,
        validation_fraction, patience and random_state."""
        trainable = {k: v.to(dev).requires_grad_(True) for k, v in params.items()}
        fixed = {"mean": torch.as_tensor(mean, dtype=torch.float32, device=dev),
                 "scale": torch.as_tensor(scale, dtype=torch.float32, device=dev)}

        def forward(p: dict[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
            return self._forward({**p, **fixed}, batch)

        best, self.n_epochs_ = train_logits(
            forward, trainable, inputs, y, lr=self.lr, weight_decay=self.weight_decay,
            max_epochs=self.max_epochs, batch_size=self.batch_size,
            validation_fraction=self.validation_fraction, patience=self.patience,
            seed=int(self.random_state or 0))
        self.params_ = {k: v.cpu() for k, v in {**best, **fixed}.items()}

    def _params_like(self, like: Tensor) -> dict[str, Tensor]:
        return {k: v.to(device=like.device, dtype=like.dtype) for k, v in self.params_.items()}

    def _state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return dict(self.params_), {"n_epochs_": self.n_epochs_}

    def _set_state(self, tensors: dict[str, Tensor], extras: dict[str, Any]) -> None:
        self.params_ = {k: v.clone() for k, v in tensors.items()}
        self.n_epochs_ = int(extras.get("n_epochs_", 0))
        self.n_features_in_ = int(tensors["mean"].shape[0])
        self.classes_ = np.array([0, 1])


class MLPProbe(TorchStateProbe):
    """One hidden ReLU layer on standardized features: ``w₂ · relu(W₁ z + b₁) + b₂``.

    Trained with Adam on log-loss, early-stopped on a seeded validation split
    (``validation_fraction``; ``patience`` epochs without improvement), restoring the
    best weights. Fitted: ``params_`` (``mean``, ``scale``, ``W1`` (hidden, d_model),
    ``b1``, ``w2`` (hidden,), ``b2``), ``n_epochs_``.
    """

    kind = "mlp"

    def __init__(self, hidden: int = 64, lr: float = 1e-2, weight_decay: float = 1e-4,
                 max_epochs: int = 200, batch_size: int = 256, validation_fraction: float = 0.2,
                 patience: int = 10, random_state: int = 0, device: str | None = None) -> None:
        self.hidden = hidden
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state
        self.device = device

    def _forward(self, params: dict[str, Tensor], inputs: tuple[Tensor, ...]) -> Tensor:
        z = (inputs[0] - params["mean"]) / params["scale"]
        h = F.relu(z @ params["W1"].T + params["b1"])
        return h @ params["w2"] + params["b2"][0]

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        if not (isinstance(self.hidden, int) and self.hidden > 0):
            raise ProbeError(f"hidden must be a positive integer, got {self.hidden!r}",
                             fix="use hidden=64")
        dev = default_device(self.device)
        gen = torch.Generator().manual_seed(int(self.random_state or 0))
        d = X.shape[1]
        mean, scale = standardizer(X)
        params = {
            "W1": init_normal(gen, self.hidden, d, fan_in=d),
            "b1": torch.zeros(self.hidden),
            "w2": init_normal(gen, self.hidden, fan_in=self.hidden) / 2,
            "b2": torch.zeros(1),
        }
        Xt = torch.as_tensor(np.array(X, dtype=np.float32), device=dev)
        self._train(params, mean, scale, (Xt,), y, dev)

    def _decision(self, X: np.ndarray) -> np.ndarray:
        # float64 on CPU so that scores do not depend on the batch they come in
        X64 = torch.as_tensor(np.asarray(X, dtype=np.float64))
        with torch.no_grad():
            return self._forward(self._params_like(X64), (X64,)).numpy()

    def torch_logits(self, acts: Tensor) -> Tensor:
        """Logits of ``acts : Float[Tensor, "*batch d_model"]`` → ``Float[Tensor, "*batch"]``,
        differentiable in ``acts`` only."""
        self._check_fitted()
        if acts.shape[-1] != self.n_features_in_:
            raise ProbeError(f"acts has {acts.shape[-1]} features, but MLPProbe is "
                             f"expecting {self.n_features_in_} features as input",
                             fix="score activations from the site the probe was fitted on")
        return self._forward(self._params_like(acts), (acts,))
