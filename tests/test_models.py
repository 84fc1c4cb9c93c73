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
