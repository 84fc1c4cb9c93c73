"""Fast, correct generation with a KV cache, for TransformerLens bridges and HF models.

A ``TransformerBridge`` wraps its Hugging Face model in place, and neither
``bridge.generate(use_past_kv_cache=True)`` nor HF ``generate`` on
``bridge.original_model`` gives the right text (TransformerLens 4.3 / transformers 5).
So generation runs on an *un-bridged twin*: a plain HF causal LM built from the same
config whose parameters are the bridge's own ``Parameter`` objects (shared storage, not
copies), so training the bridge changes the twin with no syncing. The twin is built
once per bridge (on the meta device, so it costs no memory) and rebuilt only when the
bridge's parameter or buffer objects are replaced (``.to(device)`` moves buffers, peft
swaps modules).

A new twin is checked once against the bridge (one short forward pass, logits must
agree), so a naming or structural mismatch fails loudly instead of generating from
wrong weights. Bridges over TransformerLens native models have no HF twin; for them
:func:`generate` falls back to a slow cache-less loop on the bridge.

Caveats: hooks added to the bridge do not fire during :func:`generate` (the twin never
runs the bridge's modules, except peft LoRA layers, which it shares so adapters
apply). With TransformerLens 4.3, a LoRA adapter on GPT-2's fused ``c_attn`` is ignored
by the bridge's own forward (it splits the base weight into q/k/v) but applied by the
twin, so the two disagree once that adapter is non-zero; adapters on separate
projections (Llama's ``q_proj``...) agree.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from heldout.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    import torch

_WRAPPED = "_original_component"
_TWINS: weakref.WeakKeyDictionary[Any, tuple[tuple[int, ...], Any]] = weakref.WeakKeyDictionary()


def _strip(name: str) -> str:
    """The HF name of a bridge path: drop every ``._original_component`` level."""
    parts = [p for p in name.split(".") if p != _WRAPPED]
    return ".".join(parts)


def _is_bridge(model: Any) -> bool:
    return getattr(model, "original_model", None) is not None and hasattr(model, "cfg")


def _hf_backed(bridge: Any) -> bool:
    """Whether the bridge wraps a Hugging Face model (not a TransformerLens native one)."""
    from transformers import PretrainedConfig

    return isinstance(getattr(bridge.original_model, "config", None), PretrainedConfig)


def _signature(original: Any) -> tuple[int, ...]:
    """Identity of every parameter and buffer object: changes when one is replaced."""
    return (tuple(id(p) for p in original.parameters())
            + tuple(id(b) for b in original.buffers()))


def _index_bridge(original: Any) -> tuple[dict[str, list[Any]], dict[str, list[Any]],
                                          dict[str, Any]]:
    """HF-named views of the bridged model: parameters, buffers, and unwrapped modules.

    TransformerLens adds alias components (``ln1``, ``attn.q``, ``mlp.in``, ...) that
    share storage with the real ones; several bridge paths may strip to one HF name,
    so each name maps to every distinct tensor found under it.
    """
    params: dict[str, list[Any]] = {}
    buffers: dict[str, list[Any]] = {}
    for name, p in original.named_parameters(remove_duplicate=False):
        bucket = params.setdefault(_strip(name), [])
        if not any(q is p for q in bucket):
            bucket.append(p)
    for name, b in original.named_buffers(remove_duplicate=False):
        bucket = buffers.setdefault(_strip(name), [])
        if not any(q is b for q in bucket):
            bucket.append(b)
    modules: dict[str, Any] = {}
    for name, mod in original.named_modules(remove_duplicate=False):
        if not hasattr(mod, _WRAPPED):  # the innermost original, not a bridge wrapper
            modules.setdefault(_strip(name), mod)
    return params, buffers, modules


def _same_tensor(tensors: list[Any]) -> bool:
    first = tensors[0]
    return all(t.data_ptr() == first.data_ptr() and t.shape == first.shape
               and t.stride() == first.stride() and t.dtype == first.dtype
               for t in tensors[1:])


def _build_twin(bridge: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    original = bridge.original_model
    config = copy.deepcopy(original.config)
    config.output_attentions = False  # the bridge turns this on; it forces eager attention
    with torch.device("meta"):
        twin = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    params, buffers, modules = _index_bridge(original)

    # peft LoRA layers (``q_proj.base_layer.weight`` + ``q_proj.lora_A...``): share the
    # whole layer, so the adapter applies in the twin too.
    shared_modules: dict[str, Any] = {}
    for name, _ in twin.named_parameters(remove_duplicate=False):
        prefix, _, leaf = name.rpartition(".")
        if name in params or prefix in shared_modules:
            continue
        if f"{prefix}.base_layer.{leaf}" in params and hasattr(modules.get(prefix), "base_layer"):
            shared_modules[prefix] = modules[prefix]
    for path, mod in shared_modules.items():
        parent, _, child = path.rpartition(".")
        setattr(twin.get_submodule(parent) if parent else twin, child, mod)

    def covered(name: str) -> bool:
        return any(name == path or name.startswith(path + ".") for path in shared_modules)

    missing: list[str] = []
    ambiguous: list[str] = []
    for mod_name, mod in twin.named_modules(remove_duplicate=False):
        if covered(mod_name):
            continue
        for key in [k for k, v in mod._parameters.items() if v is not None]:
            full = f"{mod_name}.{key}" if mod_name else key
            found = params.get(full)
            if not found:
                missing.append(full)
            elif not _same_tensor(found):
                ambiguous.append(full)
            else:
                mod._parameters[key] = found[0]
        for key in [k for k, v in mod._buffers.items() if v is not None]:
            full = f"{mod_name}.{key}" if mod_name else key
            found = buffers.get(full)
            if not found:
                missing.append(f"{full} (buffer)")
            elif not _same_tensor(found):
                ambiguous.append(f"{full} (buffer)")
            else:
                mod._buffers[key] = found[0]
    if missing or ambiguous:
        raise ModelLoadError(
            f"cannot build an un-bridged twin of the {type(original).__name__} for generation: "
            + (f"no bridge tensor for {', '.join(missing[:12])}"
               + (f" (+{len(missing) - 12} more)" if len(missing) > 12 else "") if missing else "")
            + ("; " if missing and ambiguous else "")
            + (f"different bridge tensors claim {', '.join(ambiguous[:12])}" if ambiguous else ""),
            fix="the bridge's parameter names (with '._original_component' dropped) must match "
                "the HF model's; pass the HF model itself to heldout.generation.generate")
    still_meta = [n for n, t in list(twin.named_parameters()) + list(twin.named_buffers())
                  if t.is_meta]
    if still_meta:
        raise ModelLoadError(f"the un-bridged twin kept uninitialised tensors: "
                             f"{', '.join(still_meta[:12])}",
                             fix="report this: the bridge holds no tensor for these names")
    # Extra bridge buffers the twin does not use must not change the function (the
    # bridge adds a zero ``lm_head.bias``); refuse when one holds non-zero values.
    twin_buffers = {n for n, _ in twin.named_buffers(remove_duplicate=False)}
    twin_params = {n for n, _ in twin.named_parameters(remove_duplicate=False)}
    for name, found in buffers.items():
        if name not in twin_buffers and name.endswith(".bias") and name not in twin_params \
                and not covered(name) and any(bool(b.detach().ne(0).any()) for b in found):
            raise ModelLoadError(f"the bridge holds a non-zero {name} that the HF model has no "
                                 "place for, so the twin would generate differently",
                                 fix="generate with the bridge's own forward pass")
    twin.generation_config = GenerationConfig()
    twin.eval()
    _check_agreement(bridge, twin)
    return twin


def _check_agreement(bridge: Any, twin: Any) -> None:
    """One short forward pass through both: the twin must compute the bridge's logits."""
    import torch

    modes = [(m, m.training) for m in bridge.modules()]
    param = next(twin.parameters())
    ids = (torch.arange(1, 7) % int(twin.config.vocab_size))[None].to(param.device)
    try:
        for m, _ in modes:
            m.training = False
        with torch.inference_mode():
            want = bridge(ids, return_type="logits").float()
            got = twin(input_ids=ids).logits.float()
    finally:
        for m, mode in modes:
            m.training = mode
    tol = (1e-3 if param.dtype == torch.float32 else 5e-2) * (1.0 + float(want.abs().max()))
    diff = float((want - got).abs().max()) if want.shape == got.shape else float("inf")
    if not diff <= tol:
        raise ModelLoadError(f"the un-bridged twin's logits differ from the bridge's by {diff:.3g} "
                             f"(tolerance {tol:.3g}), so generation would not match the model",
                             fix="report this with the model's architecture; meanwhile pass the "
                                 "HF model itself to heldout.generation.generate")


def unbridged_twin(model: Any) -> Any:
    """A plain HF causal LM computing what ``model`` computes, for fast ``generate``.

    model : a ``TransformerBridge`` (its twin shares every parameter tensor: training
        the bridge changes the twin), a Hugging Face causal LM (returned as it is), or
        an :class:`~heldout.training.hf_hooks.HFHookedModel` (its ``hf_model``).

    Cached per bridge; rebuilt only when a parameter or buffer object of the bridge
    was replaced. Raises ModelLoadError naming the keys when a twin tensor has no
    counterpart in the bridge (never falls back to random weights), and when one
    forward pass of the new twin does not reproduce the bridge's logits.
    """
    if not _is_bridge(model):
        if getattr(model, "hf_model", None) is not None:  # an HFHookedModel reader
            return model.hf_model
        if not hasattr(model, "generate"):
            raise ModelLoadError(f"cannot generate with a {type(model).__name__}",
                                 fix="pass a TransformerBridge or a Hugging Face causal LM")
        return model
    if not _hf_backed(model):
        raise ModelLoadError(f"this bridge wraps a {type(model.original_model).__name__}, not a "
                             "Hugging Face model, so it has no un-bridged twin",
                             fix="load the model from an HF checkpoint (or an in-memory HF "
                                 "model); heldout.generation.generate falls back to a slow "
                                 "cache-less loop for such bridges")
    signature = _signature(model.original_model)
    cached = _TWINS.get(model)
    if cached is not None and cached[0] == signature:
        return cached[1]
    twin = _build_twin(model)
    _TWINS[model] = (signature, twin)
    return twin


def _check_args(prompts: Sequence[Sequence[int]], vocab: int | None, *, max_new_tokens: int,
                temperature: float, top_p: float, pad_id: int, batch_size: int,
                num_return_sequences: int, max_positions: int | None) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}",
                          fix="ask for at least one new token")
    if not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature!r}",
                          fix="use 0 for greedy decoding or a positive temperature to sample")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p!r}",
                          fix="use 1.0 to sample from the whole distribution")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}",
                          fix="use e.g. batch_size=64")
    if not isinstance(num_return_sequences, int) or num_return_sequences < 1:
        raise ConfigError(f"num_return_sequences must be an integer >= 1, "
                          f"got {num_return_sequences!r}", fix="use 1 or more")
    if vocab is not None and not 0 <= pad_id < vocab:
        raise ConfigError(f"pad_id {pad_id} is outside the vocabulary (0-{vocab - 1})",
                          fix="pass the tokenizer's pad_token_id (any valid id works: padded "
                              "positions are masked)")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ConfigError(f"prompt {i} is empty",
                              fix="give every prompt at least one token (e.g. <bos>)")
        if vocab is not None and not all(0 <= t < vocab for t in p):
            bad = next(t for t in p if not 0 <= t < vocab)
            raise ConfigError(f"prompt {i} has token id {bad}, outside the vocabulary "
                              f"(0-{vocab - 1})", fix="encode prompts with the model's tokenizer")
        if max_positions is not None and len(p) + max_new_tokens > max_positions:
            raise ConfigError(f"prompt {i} has {len(p)} tokens; with {max_new_tokens} new "
                              f"tokens that passes the model's {max_positions} positions",
                              fix="shorten the prompt or lower max_new_tokens")


def generate(model: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
             temperature: float = 0.0, top_p: float = 1.0, eos_id: int | None = None,
             pad_id: int = 0, batch_size: int = 64,
             num_return_sequences: int = 1) -> list[list[list[int]]]:
    """New token ids per prompt and per sample, up to and excluding ``eos_id``.

    model : a ``TransformerBridge`` (generation runs on its :func:`unbridged_twin`) or a
        Hugging Face causal LM.
    prompts : token ids; prompts of different lengths are batched with left padding
        (``pad_id``) and an attention mask, sorted by length to pad little.
    temperature : 0 decodes greedily; > 0 samples with that temperature and nucleus
        ``top_p``, drawing from torch's global RNG (so restoring the RNG state
        reproduces the samples).
    batch_size : sequences decoded at once (prompts x ``num_return_sequences``).

    Returns ``out[i][s]`` = sample ``s`` of prompt ``i`` (greedy samples are identical).
    Every module that runs is in eval mode (no dropout) during the call and gets its
    own mode back afterwards. Samples depend on ``batch_size`` (it sets which rows draw
    from the RNG together), not only on the seed.
    """
    import torch
    from transformers import GenerationConfig

    native = _is_bridge(model) and not _hf_backed(model)
    hf = model if native else unbridged_twin(model)
    if native:
        vocab, max_positions = int(model.cfg.d_vocab), int(model.cfg.n_ctx)
    else:
        vocab = getattr(hf.config, "vocab_size", None)
        max_positions = getattr(hf.config, "n_positions", None)  # absolute positions (GPT-2)
    prompts = [list(p) for p in prompts]
    _check_args(prompts, vocab, max_new_tokens=max_new_tokens, temperature=temperature,
                top_p=top_p, pad_id=pad_id, batch_size=batch_size,
                num_return_sequences=num_return_sequences, max_positions=max_positions)
    out: list[list[list[int]]] = [[] for _ in prompts]
    if not prompts:
        return out
    sample = temperature > 0
    per_row = num_return_sequences if sample else 1
    if native:
        out = _generate_cacheless(model, prompts, max_new_tokens=max_new_tokens,
                                  temperature=temperature, top_p=top_p, eos_id=eos_id,
                                  batch_size=batch_size, per_row=per_row)
        if not sample and num_return_sequences > 1:
            out = [[list(r[0]) for _ in range(num_return_sequences)] for r in out]
        return out
    settings: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens, min_new_tokens=0, do_sample=sample, num_beams=1,
        use_cache=True, top_k=0, pad_token_id=pad_id, eos_token_id=eos_id,
        bos_token_id=None, num_return_sequences=per_row, repetition_penalty=1.0)
    if sample:
        settings.update(temperature=float(temperature), top_p=float(top_p))
    gen_config = GenerationConfig(**settings)
    device = next(hf.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    chunk_size = max(1, batch_size // per_row)

    # Eval mode (no dropout) for every module that runs, i.e. the twin's (shared LoRA
    # layers included); each module's own flag is restored afterwards. A bridge's own
    # modules do not run, so they are left alone.
    modes = [(m, m.training) for m in hf.modules()]
    saved_gen_config = hf.generation_config
    hf.generation_config = GenerationConfig()  # no checkpoint defaults (eos, top_k, ...)
    try:
        for m, _ in modes:
            m.training = False
        with torch.inference_mode():
            for start in range(0, len(order), chunk_size):
                chunk = order[start:start + chunk_size]
                width = max(len(prompts[i]) for i in chunk)
                ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):
                    n = len(prompts[i])
                    ids[row, width - n:] = torch.tensor(prompts[i], dtype=torch.long)
                    mask[row, width - n:] = 1
                seqs = hf.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                   generation_config=gen_config)
                for j, row_ids in enumerate(seqs[:, width:].tolist()):
                    if eos_id is not None and eos_id in row_ids:
                        row_ids = row_ids[:row_ids.index(eos_id)]
                    out[chunk[j // per_row]].append(row_ids)
    finally:
        hf.generation_config = saved_gen_config
        for m, mode in modes:
            m.training = mode
    if not sample and num_return_sequences > 1:
        out = [[list(r[0]) for _ in range(num_return_sequences)] for r in out]
    return out



def _generate_cacheless(bridge: Any, prompts: list[list[int]], *, max_new_tokens: int,
                        temperature: float, top_p: float, eos_id: int | None,
                        batch_size: int, per_row: int) -> list[list[list[int]]]:
    """Fallback for bridges over TransformerLens native models (no HF twin): prompts of
    equal length decoded together, one full forward pass per new token (slow)."""
    import torch

    out: list[list[list[int]]] = [[] for _ in prompts]
    device = next(bridge.parameters()).device
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    modes = [(m, m.training) for m in bridge.modules()]
    try:
        for m, _ in modes:
            m.training = False
        with torch.inference_mode():
            for length, rows in sorted(by_len.items()):
                step = max(1, batch_size // per_row)
                for start in range(0, len(rows), step):
                    chunk = rows[start:start + step]
                    seq = torch.tensor([prompts[i] for i in chunk for _ in range(per_row)],
                                       dtype=torch.long, device=device)
                    done = torch.zeros(len(seq), dtype=torch.bool, device=device)
                    for _ in range(max_new_tokens):
                        logits = bridge(seq, return_type="logits")[:, -1].float()
                        if temperature > 0:
                            probs = torch.softmax(logits / temperature, -1)
                            if top_p < 1:
                                sorted_p, order = probs.sort(-1, descending=True)
                                drop = sorted_p.cumsum(-1) - sorted_p >= top_p
                                sorted_p = sorted_p.masked_fill(drop, 0.0)
                                probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
                            nxt = torch.multinomial(probs, 1).squeeze(1)
                        else:
                            nxt = logits.argmax(-1)
                        if eos_id is not None:
                            nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                            done |= nxt == eos_id
                        seq = torch.cat([seq, nxt[:, None]], dim=1)
                        if eos_id is not None and bool(done.all()):
                            break
                    for j, row_ids in enumerate(seq[:, length:].tolist()):
                        if eos_id is not None and eos_id in row_ids:
                            row_ids = row_ids[:row_ids.index(eos_id)]
                        out[chunk[j // per_row]].append(row_ids)
    finally:
        for m, mode in modes:
            m.training = mode
    return out
