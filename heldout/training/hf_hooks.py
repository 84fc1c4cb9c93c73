"""Read a plain Hugging Face causal LM through PyTorch hooks, as the monitor reads a bridge.

heldout's monitor, probes and rewards read activations through the small part of the
``TransformerBridge`` interface they use: ``cfg``, ``tokenizer``, ``hook_dict`` (site
aliases → canonical names), ``run_with_hooks`` and ``embed``. :class:`HFHookedModel`
gives the same interface over an ordinary HF model, a peft model or a policy inside a
TRL trainer, with forward hooks on its decoder blocks, and without wrapping the model
in place: a TransformerBridge replaces the model's modules with bridge components,
which changes what HF ``generate`` (and so a TRL trainer) runs.

Canonical names match the bridge's, so a probe bound on a bridge binds here unchanged:
``resid_pre`` = the input of block i (``blocks.{i}.hook_in``), ``resid_post`` = its
output (``blocks.{i}.hook_out``), ``attn_out`` / ``mlp_out`` = the output of its
attention / MLP module. ``resid_mid`` has no module boundary in HF blocks and is
refused (SiteError from :meth:`HookSite.resolve`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from torch import Tensor, nn

from heldout.errors import ConfigError, ModelLoadError

_ATTN_NAMES = ("self_attn", "attn", "attention")
_MLP_NAMES = ("mlp", "feed_forward")


class _Stop(Exception):
    """Ends a forward pass early, once every requested activation was read."""


@dataclass(frozen=True)
class HookName:
    """What a hook function receives as ``hook`` (it reads ``hook.name``)."""

    name: str


def decoder_blocks(model: nn.Module, n_layers: int) -> nn.ModuleList:
    """The model's list of decoder blocks: the ModuleList with ``n_layers`` entries
    (found through peft and other wrappers). ModelLoadError if there is none or several."""
    found = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers]
    found = [m for m in found if not any(m is not f and any(x is m for x in f.modules())
                                         for f in found)]  # outermost lists only
    if len(found) != 1:
        raise ModelLoadError(f"cannot find the decoder blocks of this "
                             f"{type(model).__name__}: {len(found)} module lists have "
                             f"{n_layers} entries (config.num_hidden_layers)",
                             fix="read it through a TransformerBridge instead "
                                 "(heldout.models.load_model)")
    return found[0]


def _child(block: nn.Module, names: Sequence[str]) -> nn.Module | None:
    return next((getattr(block, n) for n in names if isinstance(getattr(block, n, None),
                                                                nn.Module)), None)


def _first(output: Any) -> Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output  # type: ignore[no-any-return]


class HFHookedModel(nn.Module):
    """A Hugging Face causal LM read through hooks (see the module docstring).

    model : an HF causal LM, or a peft model around one (LoRA layers apply).
    tokenizer : the model's tokenizer (HF models carry none).

    The wrapped model is a submodule: ``eval()`` / ``train()`` and ``parameters()``
    reach it. ``hf_model`` is the model :func:`heldout.generation.generate` runs.
    """

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "num_hidden_layers"):
            raise ModelLoadError(f"a {type(model).__name__} has no Hugging Face config",
                                 fix="pass an HF causal LM (AutoModelForCausalLM) or a peft "
                                     "model around one")
        if tokenizer is None:
            raise ConfigError("an HF model read through hooks needs its tokenizer",
                              fix="pass tokenizer= (the one the model was trained with)")
        self.model = model
        self.tokenizer = tokenizer
        n_layers = int(config.num_hidden_layers)
        self.blocks = list(decoder_blocks(model, n_layers))
        n_ctx = getattr(config, "n_positions", None) or getattr(
            config, "max_position_embeddings", None) or 2048
        self.cfg = SimpleNamespace(n_layers=n_layers, d_model=int(config.hidden_size),
                                   n_ctx=int(n_ctx), d_vocab=int(config.vocab_size),
                                   architecture=type(self.hf_model).__name__)
        self._targets: dict[str, tuple[nn.Module, bool]] = {}
        self.hook_dict: dict[str, HookName] = {}
        for i, block in enumerate(self.blocks):
            self._add(i, "resid_pre", f"blocks.{i}.hook_in", block, pre=True)
            self._add(i, "resid_post", f"blocks.{i}.hook_out", block, pre=False)
            attn, mlp = _child(block, _ATTN_NAMES), _child(block, _MLP_NAMES)
            if attn is not None:
                self._add(i, "attn_out", f"blocks.{i}.attn.hook_out", attn, pre=False)
            if mlp is not None:
                self._add(i, "mlp_out", f"blocks.{i}.mlp.hook_out", mlp, pre=False)

    def _add(self, layer: int, kind: str, name: str, module: nn.Module, *, pre: bool) -> None:
        self.hook_dict[f"blocks.{layer}.hook_{kind}"] = HookName(name)
        self._targets[name] = (module, pre)

    @property
    def hf_model(self) -> Any:
        """The HF model that generates: the peft model's base (adapters injected in
        place still apply), else the model itself."""
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if callable(get_base) else self.model

    @property
    def embed(self) -> nn.Module:
        """The input embedding (the monitor counts forward calls on it)."""
        return self.hf_model.get_input_embeddings()  # type: ignore[no-any-return]

    def run_with_hooks(self, ids: Tensor, *, fwd_hooks: Sequence[tuple[str, Callable[..., Any]]]
                       = (), attention_mask: Tensor | None = None,
                       stop_after_hooks: bool = False) -> Tensor | None:
        """Logits of ``ids`` (batch, pos, vocab); each ``(name, fn)`` sees the activation
        at ``name`` as ``fn(acts, hook=HookName(name))``. Hooks read, never replace:
        a hook that returns a value raises NotImplementedError. With
        ``stop_after_hooks`` the forward pass ends once every hook has fired (the later
        blocks and the unembedding never run) and None is returned."""
        handles = []
        pending = {name for name, _ in fwd_hooks}

        def fired(name: str) -> None:
            pending.discard(name)
            if stop_after_hooks and not pending:
                raise _Stop

        try:
            for name, fn in fwd_hooks:
                if name not in self._targets:
                    raise ConfigError(f"no hook named {name!r} on this HF model",
                                      fix="resolve names with HookSite.resolve(model)")
                module, pre = self._targets[name]
                handles.append(self._register(module, pre, name, fn, fired))
            out = self.model(input_ids=ids, attention_mask=attention_mask, use_cache=False)
        except _Stop:
            return None
        finally:
            for h in handles:
                h.remove()
        return out.logits  # type: ignore[no-any-return]

    def forward(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.run_with_hooks(ids, attention_mask=attention_mask)  # type: ignore[return-value]

    @staticmethod
    def _register(module: nn.Module, pre: bool, name: str, fn: Callable[..., Any],
                  fired: Callable[[str], None]) -> Any:
        hook = HookName(name)

        def call(acts: Tensor) -> None:
            if fn(acts, hook=hook) is not None:
                raise NotImplementedError("HFHookedModel hooks only read activations; "
                                          "edit activations through a TransformerBridge")
            fired(name)

        if pre:
            def pre_hook(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                call(args[0] if args else kwargs["hidden_states"])
            return module.register_forward_pre_hook(pre_hook, with_kwargs=True)

        def post_hook(_mod: nn.Module, _args: Any, output: Any) -> None:
            call(_first(output))
        return module.register_forward_hook(post_hook)


def frozen_copy(model: Any) -> Any:
    """A deep copy of an HF model (peft adapters merged in) with gradients off, in eval
    mode: the base model a run is compared against, safe from later in-place changes
    (TRL and peft inject LoRA layers into the model object they are given)."""
    import copy

    clone = copy.deepcopy(model)
    if hasattr(clone, "merge_and_unload"):
        clone = clone.merge_and_unload()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone.eval()


def as_reader(model: Any, tokenizer: Any = None) -> Any:
    """``model`` if it is a TransformerBridge (or already a reader), else an
    :class:`HFHookedModel` over it with ``tokenizer``."""
    if isinstance(model, HFHookedModel) or getattr(model, "original_model", None) is not None:
        return model
    return HFHookedModel(model, tokenizer)


__all__ = ["HFHookedModel", "HookName", "as_reader", "decoder_blocks", "frozen_copy"]
