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
    if (folder / "steps.jsonl").is_file() and (folder / "evals.jsonl").is_file():
        raise ModelLoadError(f"{str(folder)!r} is a heldout run folder, not a model folder",
                             fix=_run_folder_hint(folder))
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


def _run_folder_hint(folder: Path) -> str:
    """The fix for a heldout run folder passed where a model folder is expected."""
    if (folder / "final" / "config.json").is_file():
        return f"pass the run's final model folder {str(folder / 'final')!r}"
    return ("this run trained a model with no Hugging Face form (a native TransformerLens "
            "config), so its weights are only in model.safetensors under bridge names: "
            "load_model(native_config) and copy them with "
            "heldout.training.checkpoint.load_model_weights")


def check_weights_cover_architecture(folder: Path) -> None:
    """Refuse a checkpoint whose safetensors keys do not fill the architecture its
    config.json names: missing or unexpected keys, or wrong shapes (e.g. weights saved
    under TransformerBridge names beside an HF config). transformers matches the keys
    on the meta device (no tensor is read), so tied weights, a missing base-model
    prefix and renamed legacy keys count as covered, exactly as a real load would.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report would print every key
    try:
        _, info = AutoModelForCausalLM.from_pretrained(str(folder), device_map="meta",
                                                       output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelLoadError(f"transformers cannot read the checkpoint in {str(folder)!r}: "
                             f"{err}", fix="save it with model.save_pretrained(folder)") from err
    finally:
        hf_logging.set_verbosity(verbosity)
    problems = []
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(k if isinstance(k, str) else k[0]) for k in info.get(kind) or ())
        if keys:
            more = f" (+{len(keys) - 4} more)" if len(keys) > 4 else ""
            problems.append(f"{len(keys)} {kind.replace('_', ' ')}: {', '.join(keys[:4])}{more}")
    if problems:
        bridged = any("_original_component" in p or "blocks." in p for p in problems)
        raise ModelLoadError(
            f"the weights in {str(folder)!r} do not match the architecture in its "
            f"config.json ({'; '.join(problems)}); loading would leave random weights",
            fix=("these are TransformerBridge parameter names: export the model with "
                 "heldout.training.export.save_hf_folder (a run writes RUN/final)" if bridged
                 else "save the weights and config together with "
                      "model.save_pretrained(folder)"))


def checkpoint_layers(folder: str | os.PathLike[str]) -> int | None:
    """The number of blocks a checkpoint folder's config.json declares (None: not found),
    read without loading the model, so ``resid_post:all`` is checked before the load."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for key in ("num_hidden_layers", "n_layer", "n_layers", "num_layers"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


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
        tokenizer = bridgeable_tokenizer(tokenizer)
        from transformer_lens.model_bridge import TransformerBridge
        from transformers.utils import logging as hf_logging

        # transformers' "Loading weights" bar for a local folder would bury heldout's own
        # progress lines (a notebook shows one per load)
        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            check_weights_cover_architecture(folder)
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
        return TransformerBridge.boot_transformers(name, hf_model=source,
                                                   tokenizer=bridgeable_tokenizer(tokenizer),
                                                   device=device, dtype=torch_dtype)
    raise ModelLoadError(f"cannot load a model from a {type(source).__name__}",
                         fix="pass a checkpoint folder, an HF model with tokenizer=, "
                             "or a native config dict")


def bridgeable_tokenizer(tokenizer: Any) -> Any:
    """``tokenizer`` in a form TransformerLens accepts. The bridge reloads a tokenizer
    from its ``name_or_path`` (to turn on ``add_bos_token``), which fails for one built
    in memory; such a tokenizer is saved to a temporary folder and reloaded from there,
    so it behaves exactly as if it had been loaded from disk."""
    if tokenizer is None or getattr(tokenizer, "bos_token", None) is None \
            or tokenizer.init_kwargs.get("name_or_path"):
        return tokenizer
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="heldout-tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        # what the bridge itself does to a tokenizer loaded from a folder
        reloaded = AutoTokenizer.from_pretrained(tmp, add_bos_token=True)
    reloaded.padding_side = tokenizer.padding_side
    return reloaded


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash of what decides token ids: the vocabulary, the special tokens and
    their ids, the BOS/EOS settings and the chat template. Two tokenizers with the same
    fingerprint turn the same chat into the same ids."""
    if tokenizer is None:
        return "none"
    digest = hashlib.sha256()
    vocab = tokenizer.get_vocab()
    digest.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    special = {str(k): str(v) for k, v in tokenizer.special_tokens_map.items()}
    digest.update(json.dumps(special, sort_keys=True).encode())
    settings = {"add_bos_token": getattr(tokenizer, "add_bos_token", None),
                "add_eos_token": getattr(tokenizer, "add_eos_token", None),
                "chat_template": str(getattr(tokenizer, "chat_template", None)),
                "bos_ids": tokenizer("x", add_special_tokens=True)["input_ids"]
                if vocab else []}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


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
