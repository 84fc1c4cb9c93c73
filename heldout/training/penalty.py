"""Probes bound to a model, their differentiable scores, and the penalty shapes.

A :class:`BoundProbe` is a fitted probe plus the canonical hook name of its site on
one model (resolved once, by ``HookSite.resolve``) and its token selection. Its
score is computed from activations captured by forward hooks during the *same*
forward pass that gives the task loss, so penalizing it costs no extra forward.
The probe's parameters are constants (the probe contract, ``torch_logits``), so the
gradient of a penalty reaches the model through the activations and never the probe.

Penalty shapes over the selected tokens of each example (p = sigmoid(logit)):

- ``mean``: mean p over the tokens, averaged over examples;
- ``max``: max p over the tokens, averaged over examples;
- ``neglog``: mean of -log(1 - p) = softplus(logit), unbounded as p → 1.

With the ``last`` and ``mean`` selections (and per-token probes, which pool inside
the probe) each example has one score, so ``mean`` and ``max`` coincide.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from torch.nn import functional as F

from heldout.activations.selection import check_selection, select_tokens
from heldout.activations.sites import HookSite
from heldout.errors import ConfigError, ProbeError, SiteError
from heldout.training.config import ProbeSpec


@dataclass
class BoundProbe:
    """A fitted probe attached to one model's hook site."""

    spec: ProbeSpec
    """How the run uses it (role, weight, penalty shape, name)."""
    probe: Any
    """The fitted probe (heldout probe contract: ``torch_logits``, ``decision_function``)."""
    site: HookSite
    """Where it reads."""
    hook_name: str
    """Canonical hook name of ``site`` on the model (``HookSite.resolve``)."""
    selection: str
    """Token selection: ``last`` | ``mean`` | ``tokens``."""

    @property
    def name(self) -> str:
        return self.spec.label

    @property
    def token_level(self) -> bool:
        return bool(getattr(type(self.probe), "token_level", False))

    def logits(self, acts: Float[Tensor, "batch pos d_model"],
               response_mask: Bool[Tensor, "batch pos"]) -> Tensor:
        """Differentiable logits: shape (batch,) for ``last``/``mean`` and per-token
        probes, (batch, pos) for a pooled probe on ``tokens`` (meaningful where
        ``response_mask``)."""
        acts = acts.float()
        if self.token_level:
            return self.probe.torch_logits(acts, response_mask)  # type: ignore[no-any-return]
        if self.selection == "tokens":
            return self.probe.torch_logits(acts)  # type: ignore[no-any-return]
        return self.probe.torch_logits(  # type: ignore[no-any-return]
            select_tokens(acts, response_mask, self.selection))

    def example_scores(self, acts: Tensor, response_mask: Tensor) -> Tensor:
        """One logit per example (batch,): per-token logits reduced by max (``max``
        penalty) or mean over response tokens."""
        logits = self.logits(acts, response_mask)
        if logits.ndim == 1:
            return logits
        if self.spec.penalty == "max":
            return logits.masked_fill(~response_mask, float("-inf")).max(dim=1).values
        w = response_mask.to(logits.dtype)
        return (logits * w).sum(1) / w.sum(1).clamp_min(1)

    def penalty(self, acts: Tensor, response_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(penalty scalar, mean probability) for this probe's shape (module docstring)."""
        return penalty_value(self.logits(acts, response_mask), response_mask, self.spec.penalty)


def penalty_value(logits: Tensor, response_mask: Tensor, shape: str
                  ) -> tuple[Tensor, Tensor]:
    """Reduce logits (batch,) or (batch, pos) to (penalty, mean probability)."""
    p = torch.sigmoid(logits)
    if logits.ndim == 1:
        mean_p = p.mean()
        value = F.softplus(logits).mean() if shape == "neglog" else mean_p
        return value, mean_p.detach()
    w = response_mask.to(logits.dtype)
    count = w.sum(1).clamp_min(1)
    mean_p = ((p * w).sum(1) / count).mean()
    if shape == "max":
        value = p.masked_fill(~response_mask, 0.0).max(dim=1).values.mean()
    elif shape == "neglog":
        value = ((F.softplus(logits) * w).sum(1) / count).mean()
    else:
        value = mean_p
    return value, mean_p.detach()


def bind_probe(spec: ProbeSpec, model: Any, probe: Any = None) -> BoundProbe:
    """Load ``spec.path`` (unless ``probe`` is given) and attach it to ``model``.

    Raises ProbeError when the probe's width differs from the model's d_model, its site
    is missing from the model, or it has no differentiable scoring.
    """
    if probe is None:
        from heldout.probes.io import load_probe

        probe = load_probe(spec.path)
    meta = getattr(probe, "meta_", None)
    site_text = spec.site or (meta.site if meta is not None else None)
    if site_text is None:
        raise ProbeError(f"probe {spec.label!r} ({spec.path}) records no site",
                         fix="give the site in its ProbeSpec, e.g. site='resid_post:2'")
    selection = spec.selection or (meta.selection if meta is not None else None) or "last"
    try:
        check_selection(selection)
    except ConfigError as err:
        raise ProbeError(f"probe {spec.label!r}: {err.cause}", fix=err.fix) from err
    if not hasattr(probe, "torch_logits"):
        raise ProbeError(f"probe {spec.label!r} ({type(probe).__name__}) has no torch_logits",
                         fix="use a heldout probe (heldout.probes), which scores tensors")
    try:
        site = HookSite.parse(site_text)
        hook_name = site.resolve(model)
    except SiteError as err:
        raise ProbeError(f"probe {spec.label!r} reads site {site_text}, which this model "
                         f"lacks: {err.cause}",
                         fix="use a probe fitted on this model, or fix its site") from err
    d_model = int(model.cfg.d_model)
    n_features = getattr(probe, "n_features_in_", None)
    if n_features != d_model:
        raise ProbeError(f"probe {spec.label!r} expects {n_features} features, but the model's "
                         f"d_model is {d_model}",
                         fix="use a probe fitted on activations of this model")
    return BoundProbe(spec=spec, probe=probe, site=site, hook_name=hook_name,
                      selection=selection)


def capture(names: Sequence[str], *, detach: bool = False
            ) -> tuple[list[tuple[str | Callable[..., Any], Callable[..., Any]]], dict[str, Tensor]]:
    """Forward hooks that store the activation of each hook name, and the dict they fill.

    Pass the hooks to ``model.run_with_hooks(..., fwd_hooks=hooks)``; without ``detach``
    the stored tensors stay in the autograd graph, so losses on them train the model.
    """
    captured: dict[str, Tensor] = {}

    def hook(acts: Tensor, hook: Any) -> None:
        captured[str(hook.name)] = acts.detach() if detach else acts

    hooks: list[tuple[str | Callable[..., Any], Callable[..., Any]]] = [
        (name, hook) for name in dict.fromkeys(names)]
    return hooks, captured
