"""Load models as TransformerLens 4 ``TransformerBridge`` objects.

Four sources, one function: a local Hugging Face checkpoint folder (loaded offline),
a GGUF file (dequantized in memory, see heldout.gguf), an in-memory Hugging Face model
plus its tokenizer, or a TransformerLens native config dict (a small random model).
TransformerLens is imported here, lazily, because importing it takes seconds and
``import heldout`` must stay fast.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heldout.errors import ModelLoadError

if TYPE_CHECKING:
    import torch
    from transformer_lens.model_bridge import TransformerBridge

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
_DTYPES = ("float32", "bfloat16", "float16")


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}", fix=f"use one of {', '.join(_DTYPES)}")
    return getattr(torch, dtype)  # type: ignore[no-any-return]


def check_checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` is a loadable local HF checkpoint, before any loading work.

    Raises ModelLoadError naming what is missing: the folder, ``config.json``,
    safetensors weights, or tokenizer files.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {str(folder)!r} does not exist",
                             fix="pass the folder that holds config.json, the weights and "
                                 "the tokenizer files (models are never downloaded here)")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{str(folder)!r} has no config.json",
                             fix="save the model with model.save_pretrained(folder)")
    if not any(folder.glob("*.safetensors")):
        hint = " (only pickle .bin weights were found)" if any(folder.glob("*.bin")) else ""
        raise ModelLoadError(f"{str(folder)!r} has no safetensors weights{hint}",
                             fix="save with model.save_pretrained(folder, safe_serialization=True); "
                                 "heldout never loads pickled weights")
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelLoadError(f"{str(folder)!r} has no tokenizer files",
                             fix="save the tokenizer beside the weights: "
                                 "tokenizer.save_pretrained(folder)")
    return folder


def load_model(source: str | os.PathLike[str] | dict[str, Any] | Any, *,
               tokenizer: Any = None, device: str | None = None,
               dtype: str | torch.dtype = "float32") -> TransformerBridge:
    """Return a ``TransformerBridge`` for ``source``.

    source : a local HF checkpoint folder (str or Path), a ``.gguf`` file or a folder
        holding one and no config.json, an in-memory ``transformers.PreTrainedModel``
        (pass its ``tokenizer``), or a dict of TransformerLens native config fields
        (``n_layers``, ``d_model``, ...).
    device : ``"cpu"``, ``"cuda"``, ...; default CUDA when available, else CPU.
    dtype : ``"float32"``, ``"bfloat16"`` or ``"float16"``.
    """
    import torch

    torch_dtype = _torch_dtype(dtype)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(source, dict):
        from transformer_lens.model_bridge import TransformerBridge

        try:
            return TransformerBridge.boot_native(dict(source), tokenizer=tokenizer,
                                                 device=device, dtype=torch_dtype)
        except (ValueError, TypeError, KeyError) as err:
            raise ModelLoadError(f"TransformerLens rejected the native config: {err}",
                                 fix="give n_layers, d_model, n_heads, d_head, d_mlp, "
                                     "n_ctx, d_vocab and act_fn") from err
    if isinstance(source, (str, os.PathLike)):
        from heldout import gguf

        if gguf.is_gguf_source(source):
            hf_model, gguf_tokenizer = gguf.load_gguf(source)
            return load_model(hf_model, tokenizer=gguf_tokenizer if tokenizer is None else tokenizer,
                              device=device, dtype=dtype)
        folder = check_checkpoint_dir(source)
        # A local folder needs no hub; stay offline so nothing is fetched by accident.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformer_lens.model_bridge import TransformerBridge
        from transformers.utils import logging as hf_logging

        # transformers' "Loading weights" bar for a local folder would bury heldout's own
        # progress lines (a notebook shows one per load)
        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            return TransformerBridge.boot_transformers(str(folder), device=device,
                                                       dtype=torch_dtype, tokenizer=tokenizer)
        finally:
            if shown:
                hf_logging.enable_progress_bar()
    if hasattr(source, "config") and hasattr(source, "state_dict"):
        if tokenizer is None:
            raise ModelLoadError("an in-memory model needs its tokenizer",
                                 fix="call load_model(model, tokenizer=tokenizer)")
        from transformer_lens.model_bridge import TransformerBridge

        name = getattr(source.config, "_name_or_path", "") or "in-memory"
        return TransformerBridge.boot_transformers(name, hf_model=source, tokenizer=tokenizer,
                                                   device=device, dtype=torch_dtype)
    raise ModelLoadError(f"cannot load a model from a {type(source).__name__}",
                         fix="pass a checkpoint folder, an HF model with tokenizer=, "
                             "or a native config dict")


def model_fingerprint(model: Any) -> str:
    """A short hash of the model's config and weights, cheap even for large models.

    Per parameter it hashes the name, shape, dtype, a few hundred values and the sum,
    so any fine-tuning step changes it without reading every byte twice.
    """
    import torch

    digest = hashlib.sha256()
    cfg = model.cfg
    cfg_fields = {k: str(getattr(cfg, k, None)) for k in
                  ("n_layers", "d_model", "n_heads", "d_vocab", "n_ctx", "architecture")}
    digest.update(json.dumps(cfg_fields, sort_keys=True).encode())
    with torch.no_grad():
        for name, param in model.named_parameters():
            flat = param.detach().reshape(-1)
            sample = torch.cat([flat[:256], flat[-256:]]).to("cpu", torch.float64)
            digest.update(f"{name}|{tuple(param.shape)}|{param.dtype}".encode())
            digest.update(sample.numpy().tobytes())
            digest.update(repr(float(flat.to(torch.float64).sum())).encode())
    return digest.hexdigest()[:16]
