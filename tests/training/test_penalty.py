"""Penalties: shapes, gradients into the model (never the probe), binding errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from heldout.errors import ConfigError, ProbeError
from heldout.training.config import ProbeSpec
from heldout.training.penalty import bind_probe, capture, penalty_value
from tests.training.conftest import fit_probe


def test_penalty_shapes_match_their_formulas() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, -3.0, 5.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    p = torch.sigmoid(logits)
    mean, _ = penalty_value(logits, mask, "mean")
    assert float(mean) == pytest.approx(float(((p[0, 0] + p[0, 1]) / 2 + p[1, 0]) / 2))
    top, _ = penalty_value(logits, mask, "max")
    assert float(top) == pytest.approx(float((p[0, 1] + p[1, 0]) / 2))
    neglog, _ = penalty_value(logits, mask, "neglog")
    want = ((-torch.log(1 - p[0, 0]) - torch.log(1 - p[0, 1])) / 2 - torch.log(1 - p[1, 0])) / 2
    assert float(neglog) == pytest.approx(float(want), rel=1e-5)
    pooled, mean_p = penalty_value(torch.tensor([0.0, 0.0]), mask, "neglog")
    assert float(pooled) == pytest.approx(float(torch.log(torch.tensor(2.0))))
    assert float(mean_p) == pytest.approx(0.5)


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
@pytest.mark.parametrize("shape", ["mean", "max", "neglog"])
def test_gradient_reaches_the_model_not_the_probe(gpt2_model, tmp_path: Path, kind: str,  # type: ignore[no-untyped-def]
                                                  shape: str) -> None:
    path = fit_probe(tmp_path / "p.safetensors", 32, "resid_post:1", "tokens", kind=kind)
    bound = bind_probe(ProbeSpec(str(path), role="train_against", weight=1.0, penalty=shape),
                       gpt2_model)
    before = {k: v.clone() for k, v in bound.probe._state()[0].items()}
    hooks, captured = capture([bound.hook_name])
    ids = torch.randint(8, 40, (2, 6))
    mask = torch.tensor([[False, False, True, True, True, True]] * 2)
    gpt2_model.zero_grad(set_to_none=True)
    gpt2_model.run_with_hooks(ids, fwd_hooks=hooks)
    value, _ = bound.penalty(captured[bound.hook_name], mask)
    value.backward()
    block0 = [p for p in gpt2_model.blocks[0].parameters() if p.grad is not None]
    assert block0 and any(float(p.grad.abs().sum()) > 0 for p in block0)
    # nothing after the probed block gets a gradient
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0
               for p in gpt2_model.blocks[2].parameters())
    for name, tensor in bound.probe._state()[0].items():
        assert not tensor.requires_grad and tensor.grad is None
        assert torch.equal(tensor, before[name])
    gpt2_model.zero_grad(set_to_none=True)


def test_bind_refuses_a_probe_of_another_width(gpt2_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = fit_probe(tmp_path / "wide.safetensors", 16, "resid_post:1")
    with pytest.raises(ProbeError, match="expects 16 features, but the model's d_model is 32"):
        bind_probe(ProbeSpec(str(path)), gpt2_model)


def test_bind_refuses_a_site_the_model_lacks(gpt2_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = fit_probe(tmp_path / "deep.safetensors", 32, "resid_post:9")
    with pytest.raises(ProbeError, match="resid_post:9, which this model lacks"):
        bind_probe(ProbeSpec(str(path)), gpt2_model)


def test_negative_weight_is_refused() -> None:
    with pytest.raises(ConfigError, match="λ must be >= 0"):
        ProbeSpec("p.safetensors", role="train_against", weight=-1.0)
