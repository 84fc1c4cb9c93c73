"""Checkpoints: safetensors + JSON round trip, RNG states, atomic writes, pruning."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from heldout.training.checkpoint import (
    flatten_optimizer,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model_weights,
    restore_rng,
    save_checkpoint,
    unflatten_optimizer,
)


def _trained() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
    return model, opt


def test_optimizer_state_flattens_and_back() -> None:
    _, opt = _trained()
    tensors, index = flatten_optimizer(opt.state_dict())
    back = unflatten_optimizer(tensors, index)
    for pid, slot in opt.state_dict()["state"].items():
        for key, value in slot.items():
            assert torch.equal(back["state"][pid][key], value)


def test_round_trip_restores_weights_optimizer_and_rngs(tmp_path: Path) -> None:
    model, opt = _trained()
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    for step in (1, 2, 3):
        folder = save_checkpoint(tmp_path, step, model, opt, gen, {"config_fingerprint": "f"},
                                 keep=2)
    expected = (torch.rand(3), torch.randint(0, 100, (3,), generator=gen), np.random.rand(),
                random.random())
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002", "step-000003"]
    assert latest_checkpoint(tmp_path) == folder
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    state = load_checkpoint(folder)
    assert state.step == 3 and state.state["config_fingerprint"] == "f"
    fresh, _ = _trained()
    load_model_weights(fresh, state.model)
    for a, b in zip(fresh.parameters(), model.parameters()):
        assert torch.equal(a, b)
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    opt2.load_state_dict(state.optimizer)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"],
                       opt.state_dict()["state"][0]["exp_avg"])
    gen2 = torch.Generator()
    restore_rng(state.rng_tensors, state.state["rng"], gen2)
    got = (torch.rand(3), torch.randint(0, 100, (3,), generator=gen2), np.random.rand(),
           random.random())
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert got[2] == expected[2] and got[3] == expected[3]
