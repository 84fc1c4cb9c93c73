"""A run's final folder is an ordinary HF checkpoint holding exactly the trained weights."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from heldout.errors import ModelLoadError
from heldout.models import load_model, tokenizer_fingerprint
from heldout.training.export import save_hf_folder
from heldout.training.trainer import Trainer

IDS = torch.tensor([[2, 9, 12, 15, 20, 7]])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_final_folder_loads_the_trained_weights(arch: str, tiny_config,  # type: ignore[no-untyped-def]
                                                tiny_checkpoints: dict[str, Path]) -> None:
    config = tiny_config.replace(model=str(tiny_checkpoints[arch]), steps=2, eval_every=2,
                                 lr=1e-2)
    trainer = Trainer(config, progress=False)
    trainer.train()
    final = Path(config.out) / "final"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in final.iterdir()}
    assert not (Path(config.out) / "model.safetensors").exists()
    trainer.model.eval()
    loaded = load_model(final, device="cpu")
    base = load_model(tiny_checkpoints[arch], device="cpu")
    with torch.no_grad():
        want, got = trainer.model(IDS), loaded(IDS)
        assert (want - base(IDS)).abs().max() > 1e-3  # training moved the weights
    assert (want - got).abs().max() <= 1e-5
    assert tokenizer_fingerprint(loaded.tokenizer) == tokenizer_fingerprint(trainer.model.tokenizer)


def test_cache_command_reads_a_run(tiny_config, tiny_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tiny_config.replace(steps=1, eval_every=1)
    Trainer(config, progress=False).train()
    run = Path(config.out)
    with pytest.raises(ModelLoadError, match="pass the run's final model folder"):
        load_model(run)
    done = subprocess.run([sys.executable, "-m", "heldout", "cache", "--model", str(run / "final"),
                           "--data", str(tiny_data["eval"]), "--sites", "resid_post:1",
                           "--out", str(tmp_path / "acts")],
                          capture_output=True, text=True, env={"HELDOUT_THREADS": "1",
                                                               "HF_HUB_OFFLINE": "1",
                                                               "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "acts" / "manifest.json").is_file()


def test_native_model_has_no_hf_form(tmp_path: Path) -> None:
    native = load_model({"n_layers": 1, "d_model": 16, "n_ctx": 16, "d_head": 8, "n_heads": 2,
                         "d_vocab": 40, "act_fn": "gelu", "d_mlp": 32}, device="cpu")
    with pytest.raises(ModelLoadError, match="no HF checkpoint form"):
        save_hf_folder(native, tmp_path / "final")
    assert not (tmp_path / "final").exists()
    shutil.rmtree(tmp_path, ignore_errors=True)
