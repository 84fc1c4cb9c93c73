"""Reward, screening and intervention channels: exact expectation, sampling, detector
placement, text monitors as judges, errors."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from heldout.errors import ConfigError
from heldout.monitors.spec import TextMonitorSpec
from heldout.training.intervention import InterventionStep
from heldout.training.reward import RewardStep
from heldout.training.trainer import Trainer


def test_channels_refuse_what_the_environment_lacks(tiny_config, tiny_env) -> None:  # type: ignore[no-untyped-def]
    bare = replace(tiny_env, task_reward=None, candidates=None)
    with pytest.raises(ConfigError, match="needs a task reward"):
        Trainer(tiny_config.replace(mode="reward"), environment=bare, progress=False)
    with pytest.raises(ConfigError, match="enumerates the answer space"):
        Trainer(tiny_config.replace(mode="reward"),
                environment=replace(tiny_env, candidates=None), progress=False)
    assert not (tiny_config.out and __import__("pathlib").Path(tiny_config.out).exists())


@pytest.mark.parametrize("detector", ["live", "frozen"])
def test_exact_expected_reward_has_no_gradient_through_the_probe(tiny_config, tiny_env,
                                                                 detector: str) -> None:  # type: ignore[no-untyped-def]
    config = tiny_config.replace(mode="reward", reward_detector=detector, kl_weight=0.1)
    trainer = Trainer(config, environment=tiny_env, progress=False)
    step = trainer.step_loss
    assert isinstance(step, RewardStep) and step.samples == 0
    rows = [0, 1, 2]
    out = step(trainer.context, rows)
    assert set(out.terms) == {"pg", "kl"}
    assert {"reward", "task_reward", "prob/l1", "kept"} <= set(out.metrics)
    # the loss is -Σ π̃ R + β KL, with R = match - λ p from detached activations
    got = step._enumerate(trainer.context, rows)
    seq_lp, _, judged = step._score(trainer.context, got)
    assert not judged["reward"].requires_grad
    expect = [float((torch.softmax(seq_lp[s:e].detach(), 0) * judged["reward"][s:e]).sum())
              for s, e in got.groups]
    assert out.metrics["reward"] == pytest.approx(sum(expect) / len(expect), rel=1e-5)
    assert float(out.terms["pg"].detach()) == pytest.approx(-out.metrics["reward"], rel=1e-5)
    # candidate 0 is the target: task reward 1, the others 0; R = task - 2 p(l1)
    assert judged["task"].tolist() == [1.0, 0.0, 0.0] * 3
    assert torch.allclose(judged["reward"], judged["task"] - 2.0 * judged["prob/l1"])
    result = trainer.step()
    assert result.step == 1 and result.metrics["grad_norm"] > 0


def test_frozen_detector_scores_depend_on_text_only(tiny_config, tiny_env) -> None:  # type: ignore[no-untyped-def]
    trainer = Trainer(tiny_config.replace(mode="reward", reward_detector="frozen"),
                      environment=tiny_env, progress=False)
    step = trainer.step_loss
    got = step._enumerate(trainer.context, [3, 4])
    before = step._score(trainer.context, got)[2]["prob/l1"]
    with torch.no_grad():  # change the trained model a lot: frozen scores must not move
        for p in trainer.model.parameters():
            p.add_(torch.randn_like(p))
    assert torch.allclose(step._score(trainer.context, got)[2]["prob/l1"], before)
    live = replace(step, detector="live")
    assert not torch.allclose(live._score(trainer.context, got)[2]["prob/l1"], before)
    # the records say where the trained-against probe's signal was read, for the verdict
    monitors = trainer.evaluate()["monitors"]
    assert monitors["l1"]["reads"] == "base" and monitors["l2"]["reads"] == "policy"
    live_trainer = Trainer(tiny_config.replace(mode="reward", out=str(tiny_config.out) + "-live"),
                           environment=tiny_env, progress=False)
    assert live_trainer.evaluate()["monitors"]["l1"]["reads"] == "policy"


def test_text_monitor_penalizes_and_screening_drops_what_it_flags(tiny_config, tiny_env
                                                                   ) -> None:  # type: ignore[no-untyped-def]
    # planted: the rule flags the candidate "yes" (score 1), nothing in the control set
    rule = TextMonitorSpec(kind="rule", part="all", pattern=r"^yes$", role="train_against",
                           weight=3.0, name="says-yes")
    held = tuple(replace(p, role="held_out", weight=0.0) for p in tiny_config.probes)
    reward_cfg = tiny_config.replace(mode="reward", probes=held, monitors=(rule,))
    trainer = Trainer(reward_cfg, environment=tiny_env, progress=False)
    step, ctx = trainer.step_loss, trainer.context
    assert ctx.thresholds["says-yes"] < 1.0
    got = step._enumerate(ctx, [0, 1])
    _, _, judged = step._score(ctx, got)
    assert judged["prob/says-yes"].tolist() == [0.0, 1.0, 0.0] * 2
    assert judged["reward"].tolist() == [1.0, -3.0, 0.0] * 2
    screen = Trainer(reward_cfg.replace(mode="screening", out=tiny_config.out + "-s"),
                     environment=tiny_env, progress=False)
    _, _, judged = screen.step_loss._score(screen.context, got)
    assert judged["keep"].tolist() == [True, False, True] * 2
    assert judged["reward"].tolist() == [1.0, 0.0, 0.0] * 2  # dropped, not penalized
    out = screen.step_loss(screen.context, [0, 1])
    assert out.metrics["kept"] == pytest.approx(4 / 6)


def test_screening_that_flags_everything_is_refused_before_work(tiny_config, tiny_env
                                                                ) -> None:  # type: ignore[no-untyped-def]
    from heldout.data import Dataset, Example

    # planted: the control responses are all "fine", the rule flags anything else, so
    # every training target and candidate is flagged
    control = Dataset(tuple(Example(id=f"c{i}", label=0, response="fine", prompt="hi")
                            for i in range(8)))
    everything = TextMonitorSpec(kind="rule", part="all", pattern=r"^(?!fine$)",
                                 role="train_against", name="not-fine")
    config = tiny_config.replace(mode="screening", monitors=(everything,),
                                 probes=tuple(replace(p, role="held_out", weight=0.0)
                                              for p in tiny_config.probes))
    with pytest.raises(ConfigError, match="would drop every sample"):
        Trainer(config, environment=replace(tiny_env, control=control), progress=False)
    assert not __import__("pathlib").Path(config.out).exists()


def test_sampled_rewards_use_a_group_mean_baseline(tiny_config, tiny_env) -> None:  # type: ignore[no-untyped-def]
    config = tiny_config.replace(mode="reward", reward_samples=4, max_new_tokens=3)
    trainer = Trainer(config, environment=tiny_env, progress=False)
    step, ctx = trainer.step_loss, trainer.context
    assert step.samples == 4
    torch.manual_seed(0)
    got = step._sample(ctx, [0, 1])
    assert got.groups == [(0, 4), (4, 8)]
    seq_lp, _, judged = step._score(ctx, got)
    torch.manual_seed(0)
    out = step(ctx, [0, 1])
    r = judged["reward"]
    expect = torch.stack([-((r[s:e] - r[s:e].mean()) * seq_lp[s:e]).mean()
                          for s, e in got.groups]).mean()
    assert float(out.terms["pg"].detach()) == pytest.approx(float(expect.detach()), rel=1e-4, abs=1e-6)
    assert out.total.requires_grad and set(out.terms) == {"pg"}
    assert trainer.train().step == config.steps


def test_intervention_replaces_flagged_targets(tiny_config, tiny_env) -> None:  # type: ignore[no-untyped-def]
    calls: list[str] = []

    def corrector(example: Any) -> str:
        calls.append(example.id)
        return "no"

    trainer = Trainer(tiny_config.replace(mode="intervention"), environment=tiny_env,
                      step_loss=InterventionStep(corrector=corrector), progress=False)
    ctx = trainer.context
    name = trainer.against[0].name
    ctx.thresholds[name] = float("-inf")  # flag everything
    out = trainer.step_loss(ctx, [0, 1, 2])
    assert out.metrics["flagged"] == 1.0 and len(calls) == 3 and out.total.requires_grad
    ctx.thresholds[name] = float("inf")  # flag nothing: plain SFT
    out = trainer.step_loss(ctx, [5, 6])
    assert out.metrics["flagged"] == 0.0 and len(calls) == 3
    ctx.thresholds[name] = float("-inf")
    assert float(InterventionStep(corrector=None)(ctx, [0, 1]).total.detach()) == 0.0
