"""The trainer on a tiny random model: steps, monitor records, resume, NaN stop, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from heldout.errors import ConfigError, DataError, ProbeError, TrainingError
from heldout.training.checkpoint import latest_checkpoint
from heldout.training.trainer import StepResult, Trainer, sft_loss


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_step_reports_each_term_and_monitor_counts_forwards(tiny_config) -> None:  # type: ignore[no-untyped-def]
    trainer = Trainer(tiny_config.replace(kl_weight=0.5), progress=False)
    result = trainer.step()
    assert isinstance(result, StepResult) and result.step == 1
    assert set(result.losses) == {"task", "penalty/l1", "kl"}
    expected = result.losses["task"] + 2.0 * result.losses["penalty/l1"] + \
        0.5 * result.losses["kl"]
    assert result.loss == pytest.approx(expected, rel=1e-5)
    assert {"lr", "grad_norm", "prob/l1"} <= set(result.metrics)
    record = trainer.evaluate()
    # one batched pass of the current model over eval + control + forced; no labeler,
    # so nothing is generated and the base model is not run again
    assert record["forward_calls"] == {"current": 1, "base": 0}
    probe = record["monitors"]["l1"]
    assert probe["role"] == "train_against" and probe["kind"] == "probe"
    assert {"fixed", "forced", "threshold_base", "threshold_cur"} <= set(probe)
    assert set(record["retrained"]) == {"resid_post:1/last", "resid_post:2/mean"}
    assert set(record["pca90"]) == set(record["retrained"])


def test_resume_equals_uninterrupted(tiny_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    whole = tiny_config.replace(out=str(tmp_path / "whole"), plots=True)
    Trainer(whole, progress=False).train()
    split = tiny_config.replace(out=str(tmp_path / "split"))
    Trainer(split, progress=False).train(until=2)
    resumed = Trainer(split, resume=True, progress=False)
    assert resumed.step_count == 2
    resumed.train()
    a, b = _jsonl(tmp_path / "whole" / "steps.jsonl"), _jsonl(tmp_path / "split" / "steps.jsonl")
    assert [r["losses"] for r in a] == [r["losses"] for r in b]
    ea, eb = _jsonl(tmp_path / "whole" / "evals.jsonl"), _jsonl(tmp_path / "split" / "evals.jsonl")
    for r in ea + eb:
        r.pop("seconds")
    assert ea == eb and [r["step"] for r in ea] == [0, 2, 4]
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "whole" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "split" / "final" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (tmp_path / "whole" / "plots" / "behaviour.png").is_file()
    assert list((tmp_path / "whole" / "probes").glob("retrained-*.safetensors"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config) -> None:  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def flaky(batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        loss = sft_loss(batch)
        return loss * float("nan") if calls["n"] == 3 else loss

    trainer = Trainer(tiny_config, task_loss=flaky, progress=False)
    with pytest.raises(TrainingError, match="the loss is nan at step 3.*step-000002"):
        trainer.train()
    assert latest_checkpoint(tiny_config.out).name == "step-000002"
    assert trainer.step_count == 2


def test_train_from_layer_freezes_earlier_blocks(tiny_config) -> None:  # type: ignore[no-untyped-def]
    trainer = Trainer(tiny_config.replace(train_from_layer=2), progress=False)
    before = [p.detach().clone() for p in trainer.model.blocks[0].parameters()]
    later = [p.detach().clone() for p in trainer.model.blocks[2].parameters()]
    trainer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.blocks[0].parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(later, trainer.model.blocks[2].parameters()))


def test_bad_inputs_fail_before_training(tiny_config, tiny_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError):
        Trainer(tiny_config.replace(eval_data=str(empty)), progress=False)
    with pytest.raises(DataError, match="control set has no negatives"):
        Trainer(tiny_config.replace(control_data=str(tiny_data["forced"])), progress=False)
    with pytest.raises(ConfigError, match="train_from_layer=5"):
        Trainer(tiny_config.replace(train_from_layer=5), progress=False)
    from heldout.training.config import ProbeSpec
    from tests.training.conftest import fit_probe

    wide = fit_probe(tmp_path / "wide.safetensors", 16, "resid_post:1")
    with pytest.raises(ProbeError, match="d_model is 32"):
        Trainer(tiny_config.replace(probes=(ProbeSpec(str(wide)),)), progress=False)
    Trainer(tiny_config, progress=False).train(until=2)
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(tiny_config, progress=False)
    with pytest.raises(ConfigError, match="written by a different config"):
        Trainer(tiny_config.replace(lr=5e-3), resume=True, progress=False)


def test_monitor_kl_and_cross_model_scores_match_a_direct_computation(tiny_config, tiny_env
                                                                      ) -> None:  # type: ignore[no-untyped-def]
    """The monitor reduces KL batch by batch (no vocabulary-sized tensor kept for the
    set); planted check against full forward passes of both models."""
    from dataclasses import replace

    from torch.nn import functional as F

    from heldout.activations.cache import pad_batch
    from heldout.data import Dataset, Example, tokenize_dataset
    from heldout.environments.files import make_labeler

    env = replace(tiny_env, labeler=make_labeler({"misbehavior": r"\byes\b"}))
    trainer = Trainer(tiny_config, environment=env, progress=False)
    with torch.no_grad():  # move the trained model away from the base
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    mon = trainer.monitor
    mon.batch_size = 3  # several batches
    record = mon.evaluate(trainer.model, 1)
    examples, texts = mon.generate(trainer.model)
    own = Dataset(tuple(Example(id=e.id, label=0, response=t or "<eos>", messages=e.messages)
                        for e, t in zip(examples, texts)))
    ids, attention, response = pad_batch(tokenize_dataset(own, mon.tokenizer), mon.pad_id,
                                         "cpu")
    with torch.no_grad():
        cur = F.log_softmax(trainer.model(ids, attention_mask=attention)[:, :-1], -1)
        base = F.log_softmax(mon.base(ids, attention_mask=attention)[:, :-1], -1)
    mask = response[:, 1:]
    expected = F.kl_div(base[mask], cur[mask], log_target=True, reduction="none").sum(-1)
    assert record.kl_to_base == pytest.approx(float(expected.mean()), rel=1e-4)
    assert record.kl_to_base > 1e-4
    assert record.n_own == len(examples) == len(env.eval)
