"""LoRA runs on a tiny Llama checkpoint: only adapters train and are saved; the final
folder is the merged model; the adapter loads in peft; every channel trains them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from heldout.errors import ConfigError
from heldout.models import load_model
from heldout.training.checkpoint import latest_checkpoint
from heldout.training.trainer import Trainer

IDS = torch.tensor([[2, 9, 12, 15, 20, 7]])


@pytest.fixture()
def lora_config(tiny_config, tiny_checkpoints: dict[str, Path]) -> Any:  # type: ignore[no-untyped-def]
    return tiny_config.replace(model=str(tiny_checkpoints["llama"]), lora_rank=4,
                               lora_alpha=8.0, lora_target_modules=("q_proj", "v_proj"),
                               lr=3e-2, steps=6, eval_every=3, checkpoint_every=3)


def _split(model: Any) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    base, lora = {}, {}
    for n, p in model.named_parameters():
        (lora if "lora_" in n else base)[n] = p.detach().clone()
    return base, lora


def test_lora_trains_only_adapters_and_exports_the_merged_model(
        lora_config, tiny_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    trainer = Trainer(lora_config, progress=True)
    assert "LoRA r=4 on q_proj,v_proj: 0.00 M trainable of 0 M parameters" in capsys.readouterr().out
    base0, lora0 = _split(trainer.model)
    n_adapters = 2 * 2 * 3  # A and B, on q_proj and v_proj, in 3 blocks
    assert len(lora0) == n_adapters and len(trainer.params) == n_adapters
    assert all(float(v.abs().max()) == 0 for k, v in lora0.items() if "lora_B" in k)
    result = trainer.train()
    losses = [s.losses["task"] for s in result.steps]
    assert losses[-1] < losses[0]
    base1, lora1 = _split(trainer.model)
    assert all(torch.equal(base0[k], base1[k]) for k in base0)  # bit for bit
    assert all(not torch.equal(lora0[k], lora1[k]) for k in lora0 if "lora_B" in k)
    saved = load_file(str(latest_checkpoint(lora_config.out) / "model.safetensors"))
    assert set(saved) == set(lora1)  # only adapter tensors in the checkpoint
    final = Path(lora_config.out) / "final"
    trainer.model.eval()
    with torch.no_grad():
        want = trainer.model(IDS)
        plain = load_model(tiny_checkpoints["llama"], device="cpu")(IDS)
        got = load_model(final, device="cpu")(IDS)
    assert (want - plain).abs().max() > 1e-3  # the adapters changed the function
    assert (want - got).abs().max() <= 1e-5   # the final folder is the merged model
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_checkpoints["llama"], attn_implementation="eager")
    peft_model = PeftModel.from_pretrained(hf, final / "adapter").eval()
    with torch.no_grad():
        assert (peft_model(IDS).logits - want).abs().max() <= 1e-5  # base + adapter = the run


def test_lora_resume_equals_uninterrupted(lora_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    whole = lora_config.replace(out=str(tmp_path / "whole"), steps=4, eval_every=2,
                                checkpoint_every=2)
    Trainer(whole, progress=False).train()
    split = whole.replace(out=str(tmp_path / "split"))
    Trainer(split, progress=False).train(until=2)
    resumed = Trainer(split, resume=True, progress=False)
    assert resumed.step_count == 2
    resumed.train()
    for name in ("model.safetensors",):
        a = load_file(str(tmp_path / "whole" / "final" / name))
        b = load_file(str(tmp_path / "split" / "final" / name))
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    a = load_file(str(tmp_path / "whole" / "final" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "split" / "final" / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_probe_penalty_alone_reaches_the_adapters(lora_config) -> None:  # type: ignore[no-untyped-def]
    trainer = Trainer(lora_config, task_loss=lambda batch: batch.logits.sum() * 0.0,
                      progress=False)
    result = trainer.step()
    assert result.losses["penalty/l1"] > 0
    grads = [p.grad for n, p in trainer.model.named_parameters() if "lora_" in n]
    assert any(g is not None and float(g.abs().max()) > 0 for g in grads)


@pytest.mark.parametrize("mode", ["reward", "intervention"])
def test_lora_trains_in_every_channel(mode: str, lora_config, tiny_env) -> None:  # type: ignore[no-untyped-def]
    trainer = Trainer(lora_config.replace(mode=mode), environment=tiny_env, progress=False)
    base0, lora0 = _split(trainer.model)
    trainer.step()
    trainer.step()
    base1, lora1 = _split(trainer.model)
    assert all(torch.equal(base0[k], base1[k]) for k in base0)
    assert any(not torch.equal(lora0[k], lora1[k]) for k in lora0)


def test_lora_settings_are_checked_up_front(lora_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="c_attn do not exist.*(?s:.*)choose among .*q_proj"):
        Trainer(lora_config.replace(lora_target_modules=("c_attn",)), progress=False)
    assert not Path(lora_config.out).exists()  # refused before anything was written
    with pytest.raises(ConfigError, match="lora_rank must be an integer >= 0"):
        lora_config.replace(lora_rank=-1)
    with pytest.raises(ConfigError, match="lora_rank is 0"):
        lora_config.replace(lora_rank=0)
    with pytest.raises(ConfigError, match="unknown dtype 'float64'"):
        lora_config.replace(dtype="float64")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        lora_config.replace(device="tpu")
    with pytest.raises(ConfigError, match="needs ``dropout=True``|unless dropout=True"):
        lora_config.replace(lora_dropout=0.1)
    with pytest.raises(ConfigError, match="already-loaded model"):
        Trainer(lora_config, model=object(), progress=False)
    # the fields round-trip through the run's config.json, comma strings included
    from heldout.training.config import TrainConfig

    again = TrainConfig.from_dict({**lora_config.to_dict(), "lora_target_modules": "q_proj, v_proj"})
    assert again.lora_target_modules == ("q_proj", "v_proj")
    assert again.fingerprint() == lora_config.fingerprint()
    assert TrainConfig.from_dict(lora_config.to_dict()) == lora_config


def test_train_command_and_config_files_take_the_lora_fields(lora_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from heldout.cli import build_parser
    from heldout.training.commands import build_config
    from heldout.training.config import TrainConfig

    saved = lora_config.replace(lora_rank=8).save(tmp_path / "run.json")
    args = build_parser().parse_args(
        ["train", "--config", str(saved), "--lora-rank", "16", "--lora-alpha", "32",
         "--lora-target-modules", "q_proj,k_proj", "--dtype", "bfloat16", "--device", "cpu"])
    config = build_config(args)
    assert (config.lora_rank, config.lora_alpha, config.lora_target_modules) == \
        (16, 32.0, ("q_proj", "k_proj"))
    assert (config.dtype, config.device) == ("bfloat16", "cpu")
    assert TrainConfig.load(config.save(tmp_path / "again.json")) == config


@pytest.mark.slow
def test_lora_on_smollm2_exports_a_loadable_merged_folder(tmp_path: Path) -> None:
    from heldout.gguf import smollm2_folder
    from heldout.training.config import TrainConfig
    from heldout.training.export import save_hf_folder
    from heldout.training.lora import describe, load_lora_model

    config = TrainConfig(out=str(tmp_path / "r"), probes=({"path": "p.safetensors"},),
                         lora_rank=16, lora_alpha=32.0, lora_target_modules=("q_proj", "v_proj"))
    model = load_lora_model(smollm2_folder(), config, device="cpu", dtype="float32")
    assert describe(config, model) == \
        "LoRA r=16 on q_proj,v_proj: 0.92 M trainable of 135 M parameters"
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter: B no longer zero
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02)
    model.eval()
    final = save_hf_folder(model, tmp_path / "final")
    ids = torch.tensor([[1, 504, 3458, 314, 260, 3575, 30]])
    with torch.no_grad():
        assert (model(ids) - load_model(final, device="cpu")(ids)).abs().max() <= 1e-4
