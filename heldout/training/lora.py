"""LoRA fine-tuning through ``peft``, under a TransformerBridge.

A TransformerBridge replaces the HF model's modules with bridge components, so peft
cannot find its target layers in a booted bridge. The adapters are therefore injected
into the plain HF model first (``peft.inject_adapter_in_model``: LoRA layers with an
``base_layer`` and ``lora_A``/``lora_B``), and the bridge is booted on that model: each
bridge component wraps a LoRA layer, the bridge's hooks fire as before, and gradients
of the task loss and the probe penalties reach the adapters.

Only adapter tensors (``lora_`` in the name) train, go into the optimizer and into
checkpoints. :func:`save_adapter` writes them in peft's own format
(``adapter_config.json`` + ``adapter_model.safetensors``), loadable with
``peft.PeftModel.from_pretrained(base, folder)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from heldout.errors import ConfigError

ADAPTER_MARK = "lora_"
"""Every adapter tensor's name holds this; no base weight's does."""


def lora_config(config: Any, base: str) -> Any:
    """The ``peft.LoraConfig`` of a :class:`TrainConfig` with ``lora_rank > 0``."""
    from peft import LoraConfig

    targets: Any = list(config.lora_target_modules) or "all-linear"
    return LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=targets, bias="none",
                      base_model_name_or_path=base, task_type="CAUSAL_LM")


def adaptable_names(model: nn.Module) -> list[str]:
    """Leaf names of the layers LoRA can wrap in ``model`` (linear and GPT-2 Conv1D
    layers), sorted; the output head is excluded, as peft's ``all-linear`` does."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return sorted({name.rpartition(".")[2] for name, m in model.named_modules()
                   if isinstance(m, (nn.Linear, Conv1D)) and m is not head})


def check_targets(config: Any, model: nn.Module) -> None:
    """ConfigError naming the layers that exist when a target module name does not."""
    names = adaptable_names(model)
    unknown = [t for t in config.lora_target_modules if t not in names]
    if unknown:
        raise ConfigError(f"LoRA target module(s) {', '.join(unknown)} do not exist in this "
                          f"{type(model).__name__}",
                          fix=f"choose among {', '.join(names)} (or [] for all of them)")


def load_lora_model(folder: str | os.PathLike[str], config: Any, *, device: str | None,
                    dtype: str) -> Any:
    """A TransformerBridge over the HF checkpoint in ``folder`` with fresh LoRA adapters
    (seeded by ``config.seed``; B = 0, so it computes the base model at first)."""
    from peft import inject_adapter_in_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from heldout.models import (
        check_checkpoint_dir,
        check_weights_cover_architecture,
        load_model,
    )

    path = check_checkpoint_dir(folder)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    check_weights_cover_architecture(path)
    hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    check_targets(config, hf)
    torch.manual_seed(config.seed)
    inject_adapter_in_model(lora_config(config, str(path)), hf)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    hf.to(device)
    for name, param in hf.named_parameters():  # adapters in float32 even on a bf16 base
        if ADAPTER_MARK in name:
            param.data = param.data.float()
    return load_model(hf, tokenizer=AutoTokenizer.from_pretrained(str(path)), device=device,
                      dtype=dtype)


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The adapter parameters of a bridge (or HF model) by ``named_parameters`` name."""
    return {n: p for n, p in model.named_parameters() if ADAPTER_MARK in n}


def describe(config: Any, model: nn.Module) -> str:
    """One line for the start of a run: what trains, out of how many parameters."""
    total = sum(p.numel() for n, p in model.named_parameters() if ADAPTER_MARK not in n)
    if not config.lora_rank:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return f"full fine-tuning: {trainable / 1e6:.2f} M trainable of {total / 1e6:.0f} M " \
               f"parameters"
    trainable = sum(p.numel() for p in adapter_parameters(model).values())
    where = ",".join(config.lora_target_modules) or "all linear layers"
    return f"LoRA r={config.lora_rank} on {where}: {trainable / 1e6:.2f} M trainable of " \
           f"{total / 1e6:.0f} M parameters"


def save_adapter(model: Any, config: Any, folder: str | os.PathLike[str]) -> Path:
    """Write the bridge's adapters in peft's format: ``adapter_config.json`` and
    ``adapter_model.safetensors`` (keys ``base_model.model.<HF name>.lora_A.weight``)."""
    from safetensors.torch import save_file

    from heldout.generation import unbridged_twin

    twin = unbridged_twin(model)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, param in twin.named_parameters():
        if ADAPTER_MARK in name:
            key = name.replace(".default.", ".").replace(".default", "")
            tensors[f"base_model.model.{key}"] = param.detach().cpu().contiguous()
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    base = str(getattr(twin.config, "_name_or_path", "") or "")
    settings = lora_config(config, base)
    settings.target_modules = sorted({n.rpartition(".")[2] for n, m in twin.named_modules()
                                      if hasattr(m, "base_layer")})
    settings.save_pretrained(str(out))
    return out
