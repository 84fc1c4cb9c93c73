"""Export a trained TransformerBridge as an ordinary Hugging Face checkpoint folder.

A bridge's parameter names are its own (``transformer.h.0._original_component.attn...``),
so its ``named_parameters`` saved beside an HF config load nowhere. The bridge keeps
the original HF module, and :func:`heldout.generation.unbridged_twin` rebuilds a plain
HF model sharing every tensor with it; this module saves that twin with
``save_pretrained``: ``config.json``, ``model.safetensors`` under the HF names, the
tokenizer files. ``load_model(folder)`` then gives exactly the trained weights.

peft LoRA layers are merged on export (``W + B·A·scale``, the adapter's own
``get_delta_weight``); the adapter alone is written by :mod:`heldout.training.lora`.
The folder is built under a temporary name and renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from heldout.errors import ModelLoadError
from heldout.training.checkpoint import written_atomically


def is_hf_backed(model: Any) -> bool:
    """True when ``model`` is a bridge over a Hugging Face ``PreTrainedModel``."""
    from transformers import PreTrainedModel

    return isinstance(getattr(model, "original_model", None), PreTrainedModel)


def merged_state_dict(hf_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``hf_model``'s state dict under plain HF names, peft LoRA layers merged in:
    ``x.base_layer.weight`` + the adapters' delta becomes ``x.weight``; adapter
    tensors (``lora_*``) are left out. CPU copies, contiguous."""
    merged: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in hf_model.named_modules():
            base = getattr(module, "base_layer", None)
            if base is None or not hasattr(module, "get_delta_weight"):
                continue
            weight = base.weight.detach().clone()
            if not getattr(module, "merged", False):  # merged adapters are already in W
                for adapter in getattr(module, "active_adapters", ()):
                    if adapter in getattr(module, "lora_A", {}):
                        weight += module.get_delta_weight(adapter).to(weight.dtype)
            merged[f"{name}.weight"] = weight
        out: dict[str, torch.Tensor] = {}
        for key, value in hf_model.state_dict().items():
            if ".lora_" in key:
                continue
            plain = key.replace(".base_layer.", ".")
            tensor = merged.get(plain, value) if plain != key else value
            out[plain] = tensor.detach().to("cpu").clone(memory_format=torch.contiguous_format)
    return out


def save_hf_folder(model: Any, folder: str | os.PathLike[str]) -> Path:
    """Write ``model`` (a TransformerBridge over an HF model, LoRA layers merged) and its
    tokenizer to ``folder`` as an HF checkpoint; returns the folder.

    ModelLoadError, before anything is written, for a bridge with no HF model under
    it (a native TransformerLens config): it has no HF form.
    """
    from heldout.generation import unbridged_twin

    if not is_hf_backed(model):
        raise ModelLoadError(f"this {type(model).__name__} wraps no Hugging Face model (a "
                             "native TransformerLens config), so it has no HF checkpoint form",
                             fix="fine-tune a model loaded from an HF checkpoint folder to get "
                                 "a loadable final folder")
    twin = unbridged_twin(model)
    state = merged_state_dict(twin)
    final = Path(folder)
    with written_atomically(final) as tmp:
        twin.save_pretrained(str(tmp), state_dict=state, safe_serialization=True)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(str(tmp))
    return final
