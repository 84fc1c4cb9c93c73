from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from heldout.errors import ModelLoadError
from heldout.models import load_model, model_fingerprint


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_local_checkpoint_matches_hf_logits(arch: str, tiny_checkpoints: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    bridge = load_model(tiny_checkpoints[arch], device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(tiny_checkpoints[arch])
    ids = torch.tensor([[2, 9, 12, 15, 20]])
    with torch.no_grad():
        expected = hf(ids).logits
    assert torch.allclose(bridge(ids), expected, atol=1e-4)
    assert bridge.tokenizer.chat_template


def test_in_memory_model_and_native_config(tiny_checkpoints: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_checkpoints["gpt2"]
    hf = AutoModelForCausalLM.from_pretrained(path)
    ids = torch.tensor([[2, 9, 12, 15, 20]])
    with torch.no_grad():
        expected = hf(ids).logits  # before bridging: the bridge wraps hf in place
    bridge = load_model(hf, tokenizer=AutoTokenizer.from_pretrained(path), device="cpu")
    assert bridge.cfg.n_layers == 3
    assert torch.allclose(bridge(ids), expected, atol=1e-4)
    config = {"n_layers": 2, "d_model": 16, "n_ctx": 32, "d_head": 8, "n_heads": 2,
              "d_vocab": 40, "act_fn": "gelu", "d_mlp": 32}
    tokens = torch.tensor([[1, 2, 3]])
    native, same, other = (load_model({**config, "seed": seed}, device="cpu")(tokens)
                           for seed in (0, 0, 1))
    assert native.shape == (1, 3, 40)
    assert torch.equal(native, same) and not torch.allclose(native, other)  # seeded weights
    with pytest.raises(ModelLoadError, match="needs its tokenizer"):
        load_model(hf)


def test_missing_pieces_are_named(tmp_path: Path, tiny_checkpoints: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoints["gpt2"], broken)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).unlink()
    with pytest.raises(ModelLoadError, match="no tokenizer files"):
        load_model(broken)
    (broken / "model.safetensors").rename(broken / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickle"):
        load_model(broken)
    (broken / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(broken)


def test_fingerprint_tracks_weights(gpt2_model) -> None:  # type: ignore[no-untyped-def]
    before = model_fingerprint(gpt2_model)
    assert model_fingerprint(gpt2_model) == before
    param = next(p for n, p in gpt2_model.named_parameters() if "mlp" in n)
    with torch.no_grad():
        param.view(-1)[len(param.view(-1)) // 2] += 0.5
    try:
        assert model_fingerprint(gpt2_model) != before
    finally:
        with torch.no_grad():
            param.view(-1)[len(param.view(-1)) // 2] -= 0.5


def test_a_given_tokenizer_is_used_for_a_folder(tiny_checkpoints: dict[str, Path]) -> None:
    from heldout.models import tokenizer_fingerprint
    from heldout.tiny import WORDS, build_word_tokenizer

    words = WORDS + [str(i) for i in range(10)]
    shuffled = build_word_tokenizer(list(reversed(words)))  # in memory, never saved
    own = load_model(tiny_checkpoints["llama"], device="cpu").tokenizer
    given = load_model(tiny_checkpoints["llama"], tokenizer=shuffled, device="cpu").tokenizer
    body = lambda tok: [t for t in tok("the cat")["input_ids"] if t != tok.bos_token_id]
    assert body(given) == shuffled("the cat")["input_ids"] != body(own)
    assert tokenizer_fingerprint(given) != tokenizer_fingerprint(own)
    assert tokenizer_fingerprint(given) == tokenizer_fingerprint(
        load_model(tiny_checkpoints["llama"], tokenizer=shuffled, device="cpu").tokenizer)


def test_weights_that_do_not_fill_the_architecture_are_refused(
        tmp_path: Path, tiny_checkpoints: dict[str, Path], gpt2_model) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import save_file

    bridged = tmp_path / "bridged"
    shutil.copytree(tiny_checkpoints["gpt2"], bridged)
    save_file({n: p.detach().clone().contiguous() for n, p in gpt2_model.named_parameters()},
              str(bridged / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="(?s)missing keys: .*TransformerBridge parameter"):
        load_model(bridged)
    with pytest.raises(ModelLoadError, match="unexpected keys: .*_original_component"):
        load_model(bridged)


def test_tied_embeddings_are_not_missing_weights(tmp_path: Path) -> None:
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from heldout.tiny import WORDS, build_word_tokenizer

    tok = build_word_tokenizer(WORDS)
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1,
                                      vocab_size=len(tok), tie_word_embeddings=True))
    hf.save_pretrained(tmp_path / "tied")
    tok.save_pretrained(tmp_path / "tied")
    with safe_open(str(tmp_path / "tied" / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()  # legitimately absent: tied to the embeddings
    ids = torch.tensor([[2, 9, 12]])
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(tmp_path / "tied")(ids).logits
    assert torch.allclose(load_model(tmp_path / "tied", device="cpu")(ids), expected, atol=1e-5)
