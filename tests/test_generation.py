"""KV-cache generation on the un-bridged twin: exact agreement, shared weights, sampling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from heldout.errors import ConfigError, ModelLoadError
from heldout.generation import generate, unbridged_twin

ARCHS = ("gpt2", "llama")
# Prompts of different lengths in one batch, so left padding is exercised.
PROMPTS = [[2, 10, 11, 12, 13, 14, 15, 16, 17], [2, 20], [2, 30, 31, 32, 33], [2, 40, 41]]
N_NEW = 12


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Any:
    """One thread: tiny matmuls gain nothing from more, and a busy machine slows them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny checkpoints with large random weights: the default init (std 0.02) makes a
    model repeat its last token forever, which would hide position or padding bugs."""
    from transformers import AutoModelForCausalLM

    from heldout.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("gen-checkpoints")
    out = {}
    for arch in ARCHS:
        folder = write_tiny_checkpoint(root / arch, arch=arch, n_layers=2, seed=3)
        hf = AutoModelForCausalLM.from_pretrained(folder)
        gen = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for p in hf.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        hf.save_pretrained(folder, safe_serialization=True)
        out[arch] = folder
    return out


def _bridge(folder: Path) -> Any:
    from heldout.models import load_model

    return load_model(folder, device="cpu")


@pytest.fixture(scope="module")
def bridges(checkpoints: dict[str, Path]) -> dict[str, Any]:
    return {arch: _bridge(folder) for arch, folder in checkpoints.items()}


def _hf(folder: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).eval()


def _hf_reference(hf: Any, prompts: list[list[int]], n: int) -> list[list[int]]:
    """HF ``generate`` one prompt at a time (no padding at all), greedy, no eos."""
    out = []
    for p in prompts:
        ids = torch.tensor([p])
        seq = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                          do_sample=False, eos_token_id=None, pad_token_id=0, top_k=None)
        out.append(seq[0, len(p):].tolist())
    return out


def _cacheless(bridge: Any, prompts: list[list[int]], n: int) -> list[list[int]]:
    """Full forward pass on the bridge per new token, one prompt at a time."""
    out = []
    with torch.no_grad():
        for p in prompts:
            seq = torch.tensor([p])
            for _ in range(n):
                nxt = bridge(seq, return_type="logits")[:, -1].argmax(-1)
                seq = torch.cat([seq, nxt[:, None]], dim=1)
            out.append(seq[0, len(p):].tolist())
    return out


def _greedy(model: Any, prompts: list[list[int]] = PROMPTS, n: int = N_NEW,
            **kw: Any) -> list[list[int]]:
    return [rows[0] for rows in generate(model, prompts, max_new_tokens=n, **kw)]


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_equals_hf_generate_on_an_unbridged_copy(arch: str, checkpoints: dict[str, Path],
                                                        bridges: dict[str, Any]) -> None:
    reference = _hf_reference(_hf(checkpoints[arch]), PROMPTS, N_NEW)
    assert len({tuple(r) for r in reference}) == len(PROMPTS)  # outputs really vary
    assert all(len(set(r)) > 2 for r in reference)
    assert _greedy(bridges[arch]) == reference
    assert _greedy(bridges[arch], batch_size=1) == reference
    assert _greedy(_hf(checkpoints[arch])) == reference  # a plain HF model works too


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_equals_a_cacheless_loop_on_the_bridge(arch: str,
                                                      bridges: dict[str, Any]) -> None:
    assert _greedy(bridges[arch]) == _cacheless(bridges[arch], PROMPTS, N_NEW)


def test_eos_cuts_and_greedy_samples_repeat(bridges: dict[str, Any]) -> None:
    bridge = bridges["llama"]
    full = _greedy(bridge)
    eos = full[0][3]
    out = generate(bridge, PROMPTS, max_new_tokens=N_NEW, eos_id=eos, num_return_sequences=2)
    for rows, ref in zip(out, full):
        cut = ref[:ref.index(eos)] if eos in ref else ref
        assert rows == [cut, cut]
    assert len(out[0][0]) <= 3 < N_NEW


@pytest.mark.parametrize("arch", ARCHS)
def test_twin_shares_the_bridge_storage(arch: str, bridges: dict[str, Any]) -> None:
    bridge = bridges[arch]
    twin = unbridged_twin(bridge)
    assert unbridged_twin(bridge) is twin  # built once
    bridge_ptrs = {p.data_ptr() for p in bridge.parameters()}
    assert all(p.data_ptr() in bridge_ptrs for p in twin.parameters())
    for name, buf in twin.named_buffers():  # rotary inv_freq: real values, not meta
        assert not buf.is_meta and torch.isfinite(buf).all(), name
    before = _greedy(bridge)
    weight = next(p for n, p in bridge.named_parameters() if "embed" in n or "wte" in n)
    with torch.no_grad():  # an in-place change to the bridge, as an optimizer step makes
        weight.mul_(-1.0)
    try:
        assert unbridged_twin(bridge) is twin
        after = _greedy(bridge)
        assert after != before
        assert after == _cacheless(bridge, PROMPTS, N_NEW)
    finally:
        with torch.no_grad():
            weight.mul_(-1.0)  # exact: the module's other tests see the original weights
    assert _greedy(bridge) == before


def test_dropout_is_off_and_modes_are_restored(checkpoints: dict[str, Path],
                                               bridges: dict[str, Any]) -> None:
    bridge = bridges["gpt2"]  # GPT-2's config has dropout 0.1
    reference = _cacheless(bridge, PROMPTS, 4)
    bridge.train()
    try:
        assert _greedy(bridge, n=4) == reference
        assert bridge.training and all(m.training for m in bridge.modules())
    finally:
        bridge.eval()
    hf = _hf(checkpoints["gpt2"]).train()
    assert _greedy(hf, n=4) == reference
    assert all(m.training for m in hf.modules())
    hf.eval()
    _greedy(hf, n=2)
    assert not any(m.training for m in hf.modules())


def test_unmatched_twin_parameters_are_refused(checkpoints: dict[str, Path]) -> None:
    hf = _hf(checkpoints["gpt2"])

    class FakeBridge(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cfg = object()
            inner = torch.nn.Module()
            inner.config = hf.config
            inner.renamed = torch.nn.Linear(2, 2)
            self.original_model = inner

    with pytest.raises(ModelLoadError, match="transformer.wte.weight"):
        unbridged_twin(FakeBridge())


def test_a_twin_that_disagrees_with_the_bridge_is_refused(checkpoints: dict[str, Path],
                                                          bridges: dict[str, Any]) -> None:
    from heldout.generation import _check_agreement

    other = _hf(checkpoints["llama"])
    _check_agreement(bridges["llama"], other)  # same weights: agrees
    with torch.no_grad():
        other.lm_head.weight.mul_(1.5)
    with pytest.raises(ModelLoadError, match="differ from the bridge"):
        _check_agreement(bridges["llama"], other)


@pytest.mark.parametrize("arch", ARCHS)
def test_sampling_is_seeded_and_limits_to_greedy(arch: str, bridges: dict[str, Any]) -> None:
    bridge = bridges[arch]
    torch.manual_seed(11)
    first = generate(bridge, PROMPTS, max_new_tokens=8, temperature=1.0,
                     num_return_sequences=3)
    torch.manual_seed(11)
    again = generate(bridge, PROMPTS, max_new_tokens=8, temperature=1.0,
                     num_return_sequences=3)
    assert first == again
    assert all(len(rows) == 3 for rows in first)
    assert len({tuple(r) for rows in first for r in rows}) > len(PROMPTS)  # really samples
    greedy = _greedy(bridge, n=8)
    assert [r[0] for r in generate(bridge, PROMPTS, max_new_tokens=8, temperature=1e-4)] \
        == greedy
    assert [r[0] for r in generate(bridge, PROMPTS, max_new_tokens=8, temperature=1.0,
                                   top_p=1e-6)] == greedy


def test_top_p_keeps_samples_in_the_nucleus(bridges: dict[str, Any]) -> None:
    bridge = bridges["llama"]
    prompt = PROMPTS[2]
    with torch.no_grad():
        probs = torch.softmax(bridge(torch.tensor([prompt]), return_type="logits")[0, -1], -1)
    sorted_p, order = probs.sort(descending=True)
    top_p = 0.5
    keep = int((sorted_p.cumsum(0) < top_p).sum()) + 1  # smallest set reaching top_p
    nucleus = set(order[:keep].tolist())
    assert keep < len(probs) // 2
    torch.manual_seed(5)
    draws = generate(bridge, [prompt], max_new_tokens=1, temperature=1.0, top_p=top_p,
                     num_return_sequences=200)[0]
    firsts = {d[0] for d in draws}
    assert firsts <= nucleus
    if keep > 1:
        assert len(firsts) > 1


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"temperature": -0.5}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"prompts": [[2, 3], []]}, "prompt 1 is empty"),
    ({"prompts": [[2, 10_000]]}, "outside the vocabulary"),
    ({"max_new_tokens": 64}, "positions"),
])
def test_bad_input_is_refused(kwargs: dict[str, Any], match: str,
                              bridges: dict[str, Any]) -> None:
    args: dict[str, Any] = {"prompts": PROMPTS, "max_new_tokens": 4, **kwargs}
    with pytest.raises(ConfigError, match=match) as info:
        generate(bridges["gpt2"], args.pop("prompts"), **args)
    assert info.value.fix


def test_greedy_generate_uses_the_cache(bridges: dict[str, Any]) -> None:
    from heldout.organism import greedy_generate

    bridge = bridges["llama"]
    tok = bridge.tokenizer
    convs = [[{"role": "user", "content": "the cat is red"}],
             [{"role": "user", "content": "why"}]]
    texts = greedy_generate(bridge, None, convs, max_new_tokens=6)
    from heldout.organism.tokenizer import prompt_ids

    prompts = [prompt_ids(tok, c) for c in convs]
    expected = []
    for ids in _cacheless(bridge, prompts, 6):
        if tok.eos_token_id in ids:
            ids = ids[:ids.index(tok.eos_token_id)]
        expected.append(tok.decode(ids, skip_special_tokens=True).strip())
    assert texts == expected


def test_lora_layers_are_shared_so_adapters_apply(checkpoints: dict[str, Path]) -> None:
    import copy

    peft = pytest.importorskip("peft")
    from heldout.models import load_model

    hf = _hf(checkpoints["llama"])
    peft_model = peft.get_peft_model(hf, peft.LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    reference = copy.deepcopy(peft_model).eval()  # before bridging: the bridge wraps in place
    bridge = load_model(peft_model.base_model.model, tokenizer=_bridge_tokenizer(checkpoints),
                        device="cpu")
    twin = unbridged_twin(bridge)
    lora_ptrs = {p.data_ptr() for n, p in bridge.named_parameters() if "lora_" in n}
    assert lora_ptrs and lora_ptrs <= {p.data_ptr() for p in twin.parameters()}
    plain = _greedy(_hf(checkpoints["llama"]))
    out = _greedy(bridge)
    assert out == _greedy(reference) == _cacheless(bridge, PROMPTS, N_NEW)
    assert out != plain  # the adapter changed the text


def _bridge_tokenizer(checkpoints: dict[str, Path]) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoints["llama"])


def test_native_bridge_falls_back_to_a_cacheless_loop() -> None:
    from heldout.models import load_model

    bridge = load_model({"n_layers": 2, "d_model": 16, "n_ctx": 32, "d_head": 8, "n_heads": 2,
                         "d_mlp": 32, "d_vocab": 40, "act_fn": "gelu", "seed": 0}, device="cpu")
    with pytest.raises(ModelLoadError, match="no un-bridged twin"):
        unbridged_twin(bridge)
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8]]
    assert _greedy(bridge, prompts, 5) == _cacheless(bridge, prompts, 5)
    torch.manual_seed(2)
    first = generate(bridge, prompts, max_new_tokens=5, temperature=1.0, top_p=0.9,
                     num_return_sequences=2)
    torch.manual_seed(2)
    assert generate(bridge, prompts, max_new_tokens=5, temperature=1.0, top_p=0.9,
                    num_return_sequences=2) == first
    assert [r[0] for r in generate(bridge, prompts, max_new_tokens=5, temperature=1.0,
                                   top_p=1e-6)] == _greedy(bridge, prompts, 5)
