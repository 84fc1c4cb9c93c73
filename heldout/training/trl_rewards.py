"""heldout's proxies as reward functions for TRL's ``GRPOTrainer``.

TRL calls each reward function as ``f(prompts=, completions=, completion_ids=,
**dataset_columns, trainer_state=...)`` and reads one float per completion. A reward
here scores each completion with one proxy and returns, as configured,

- ``returns="penalized"``: ``task_reward(example, text) − weight · score``, or
- ``returns="score"``: the score alone (combine it in TRL with ``reward_weights``),

where the score is in [0, 1]: an activation probe's probability, or a text monitor's
suspicion. Nothing is differentiated: the detector is a judge, as in RL against
monitors. Three kinds:

- :func:`probe_reward` with ``detector="frozen"``: the probe reads a frozen copy of the
  starting model as it reads the prompt and the completion, so only the text can
  change the score;
- :func:`probe_reward` with ``detector="policy"``: the probe reads the policy being
  trained (detached, eval mode): the live-detector setting, where the model can also
  change its activations;
- :func:`text_monitor_reward`: a rule, classifier or LM judge on the completion text.

Rows are matched to the environment's examples through an id column
(:func:`grpo_dataset` writes ``example_id``), so the task reward and the monitors see
the same :class:`~heldout.data.Example` as heldout's own trainer. A probe reads the
prompt as heldout renders it (:func:`~heldout.data.prompt_token_ids`) followed by
TRL's completion token ids, exactly the sequences the monitor reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from heldout.activations.cache import pad_batch
from heldout.data import Example, join_tokens, prompt_token_ids
from heldout.environments.base import Environment, TaskReward
from heldout.errors import ConfigError, DataError
from heldout.monitors.spec import TextMonitorSpec
from heldout.training.config import ProbeSpec
from heldout.training.hf_hooks import HFHookedModel, as_reader, frozen_copy
from heldout.training.penalty import BoundProbe, bind_probe, capture
from heldout.training.proxies import BoundText, bind_text_monitor

RETURNS = ("penalized", "score")
DETECTORS = ("frozen", "policy")
ID_COLUMN = "example_id"


def grpo_dataset(data: Environment | Sequence[Example], *, split: str = "train") -> Any:
    """A ``datasets.Dataset`` for ``GRPOTrainer``: ``prompt`` (chat messages, or the raw
    prompt text) and ``example_id`` per example of ``data`` (an environment's
    ``split`` set, or examples)."""
    from datasets import Dataset

    examples = list(getattr(data, split)) if isinstance(data, Environment) else list(data)
    if not examples:
        raise DataError("no examples to train on", fix="pass an environment or examples")
    rows = [{"prompt": [dict(m) for m in e.messages] if e.messages is not None else e.prompt,
             ID_COLUMN: e.id} for e in examples]
    if any(r["prompt"] in (None, "") for r in rows):
        raise DataError("an example has neither chat messages nor a prompt",
                        fix="give every training example a prompt to sample from")
    if len({isinstance(r["prompt"], str) for r in rows}) > 1:
        raise DataError("some examples have chat messages and others a raw prompt; TRL "
                        "treats a dataset as all chat or all text",
                        fix="give every training example messages, or every one a prompt")
    return Dataset.from_list(rows)


def completion_text(completion: Any) -> str:
    """The text of a TRL completion (a string, or a list of chat messages)."""
    if isinstance(completion, str):
        return completion.strip()
    return "".join(m.get("content", "") for m in completion).strip()


def same_tokenizer(a: Any, b: Any) -> bool:
    """Whether two tokenizers map text to the same ids (vocabulary and special ids)."""
    if a is b:
        return True
    return bool(a.get_vocab() == b.get_vocab()
                and all(getattr(a, s, None) == getattr(b, s, None)
                        for s in ("bos_token_id", "eos_token_id")))


class MonitorReward:
    """A TRL reward function judging completions with one proxy (module docstring).

    Subclasses give :meth:`scores`. ``examples`` are the environment's examples that
    the id column refers to; ``task_reward`` pays a response before the penalty.
    """

    def __init__(self, name: str, examples: Sequence[Example], *,
                 task_reward: TaskReward | None, weight: float, returns: str) -> None:
        if returns not in RETURNS:
            raise ConfigError(f"returns={returns!r} is not one of {', '.join(RETURNS)}",
                              fix="use 'penalized' (task reward − weight·score) or 'score'")
        if returns == "penalized" and task_reward is None:
            raise ConfigError(f"reward {name!r}: returns='penalized' needs a task reward",
                              fix="give the environment's task_reward, or returns='score'")
        if not isinstance(weight, (int, float)) or not np.isfinite(weight):
            raise ConfigError(f"weight must be a finite number, got {weight!r}",
                              fix="use e.g. weight=1.0")
        self.__name__ = name  # TRL logs each reward under its function's __name__
        self.by_id = {e.id: e for e in examples}
        self.task_reward = task_reward
        self.weight = float(weight)
        self.returns = returns

    def examples_of(self, n: int, columns: dict[str, Any]) -> list[Example]:
        ids = columns.get(ID_COLUMN)
        if ids is None:
            raise DataError(f"reward {self.__name__!r} got no {ID_COLUMN!r} column",
                            fix="build the training set with heldout.training.trl_rewards."
                                "grpo_dataset(environment)")
        missing = [i for i in ids if i not in self.by_id]
        if missing:
            raise DataError(f"reward {self.__name__!r}: example ids {missing[:3]} are not in "
                            "the environment it was built for",
                            fix="build the reward and the dataset from the same environment")
        if len(ids) != n:
            raise DataError(f"{len(ids)} example ids for {n} completions",
                            fix="pass the dataset's columns through unchanged")
        return [self.by_id[i] for i in ids]

    def scores(self, examples: list[Example], texts: list[str],
               completion_ids: list[list[int]] | None) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Sequence[Sequence[int]] | None = None,
                 **columns: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        examples = self.examples_of(len(texts), columns)
        ids = None if completion_ids is None else [list(c) for c in completion_ids]
        score = self.scores(examples, texts, ids)
        if self.returns == "score":
            return [float(s) for s in score]
        assert self.task_reward is not None
        return [float(self.task_reward(e, t)) - self.weight * float(s)
                for e, t, s in zip(examples, texts, score)]


class ProbeReward(MonitorReward):
    """An activation probe's probability as a reward (see :func:`probe_reward`)."""

    def __init__(self, probe: BoundProbe, reader: Any, examples: Sequence[Example], *,
                 detector: str, task_reward: TaskReward | None, weight: float,
                 returns: str, batch_size: int = 64) -> None:
        super().__init__(probe.name, examples, task_reward=task_reward, weight=weight,
                         returns=returns)
        self.probe = probe
        self.reader = reader
        self.detector = detector
        self.batch_size = batch_size
        self._checked = False

    @property
    def tokenizer(self) -> Any:
        return self.reader.tokenizer

    def attach(self, trainer: Any) -> ProbeReward:
        """Check the trainer's tokenizer is the probe model's, then read the trainer's live
        policy (``detector='policy'``) or move the frozen copy to the trainer's device
        (``'frozen'``); returns self."""
        check_tokenizer(self, trainer.processing_class)
        if self.detector == "policy":
            policy = trainer.accelerator.unwrap_model(trainer.model)
            self.reader = as_reader(policy, self.tokenizer)
        else:
            self.reader.to(trainer.accelerator.device)
        return self

    def _token_ids(self, texts: list[str], completion_ids: list[list[int]] | None
                   ) -> list[list[int]]:
        tok = self.tokenizer
        if completion_ids is None:
            return [list(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
        drop = {tok.eos_token_id, tok.pad_token_id} - {None}
        out = []
        for ids in completion_ids:
            while ids and ids[-1] in drop:  # TRL keeps the EOS; heldout's sequences end before it
                ids = ids[:-1]
            out.append(ids)
        if not self._checked:  # once: the ids must spell the completions in our tokenizer
            self._checked = True
            for ids, text in zip(out, texts):
                mine = tok.decode(ids, skip_special_tokens=True).strip()
                if " ".join(mine.split()) != " ".join(text.split()):
                    raise ConfigError(
                        f"reward {self.__name__!r}: the completion ids decode to {mine!r} "
                        f"with the probe model's tokenizer, but TRL's text is {text!r}",
                        fix="train with the tokenizer of the model the probe was fitted on "
                            "(GRPOTrainer(processing_class=...))")
        return out

    def scores(self, examples: list[Example], texts: list[str],
               completion_ids: list[list[int]] | None) -> np.ndarray:
        tok = self.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        responses = self._token_ids(texts, completion_ids)
        seqs = [join_tokens(prompt_token_ids(e, tok), r or [tok.eos_token_id])
                for e, r in zip(examples, responses)]
        model = self.reader
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()  # no dropout in the judge, also when it reads the policy
        out: list[np.ndarray] = []
        try:
            with torch.no_grad():
                for start in range(0, len(seqs), self.batch_size):
                    ids, attention, response = pad_batch(seqs[start:start + self.batch_size],
                                                         pad_id, device)
                    hooks, captured = capture([self.probe.hook_name], detach=True)
                    if isinstance(model, HFHookedModel):  # no later blocks, no unembedding
                        model.run_with_hooks(ids, fwd_hooks=hooks, attention_mask=attention,
                                             stop_after_hooks=True)
                    else:
                        model.run_with_hooks(ids, fwd_hooks=hooks, attention_mask=attention)
                    logit = self.probe.example_scores(captured[self.probe.hook_name], response)
                    out.append(torch.sigmoid(logit.float()).cpu().numpy())
        finally:
            if was_training:
                model.train()
        return np.concatenate(out) if out else np.zeros(0)


class TextMonitorReward(MonitorReward):
    """A text monitor's suspicion as a reward (see :func:`text_monitor_reward`)."""

    def __init__(self, text: BoundText, examples: Sequence[Example], *,
                 task_reward: TaskReward | None, weight: float, returns: str) -> None:
        super().__init__(text.name, examples, task_reward=task_reward, weight=weight,
                         returns=returns)
        self.text = text

    def scores(self, examples: list[Example], texts: list[str],
               completion_ids: list[list[int]] | None) -> np.ndarray:
        return self.text.scores(examples, texts)


def check_tokenizer(reward: ProbeReward, tokenizer: Any) -> None:
    """ConfigError unless ``tokenizer`` (the trainer's) is the probe model's tokenizer."""
    if tokenizer is not None and not same_tokenizer(tokenizer, reward.tokenizer):
        raise ConfigError(
            f"reward {reward.__name__!r}: the trainer's tokenizer "
            f"({type(tokenizer).__name__}, {len(tokenizer.get_vocab())} tokens) is not the "
            f"tokenizer of the model the probe reads ({len(reward.tokenizer.get_vocab())} "
            "tokens)", fix="give GRPOTrainer the probe model's tokenizer, or fit the probe "
                           "on the model being trained")


def _examples(environment: Environment | None, examples: Sequence[Example] | None
              ) -> list[Example]:
    if examples is not None:
        return list(examples)
    if environment is None:
        raise ConfigError("a reward needs the examples its dataset rows refer to",
                          fix="pass environment= (or examples=)")
    return list(environment.train) + list(environment.eval)


def probe_reward(probe: ProbeSpec | str, model: Any, *, detector: str = "frozen",
                 environment: Environment | None = None,
                 examples: Sequence[Example] | None = None, tokenizer: Any = None,
                 trainer_tokenizer: Any = None, weight: float | None = None,
                 returns: str = "penalized", loaded_probe: Any = None,
                 batch_size: int = 64) -> ProbeReward:
    """A TRL reward function from an activation probe.

    probe : a :class:`ProbeSpec` or the probe file's path.
    model : the model the probe reads: for ``detector="frozen"`` the starting model (an
        HF model, copied now and frozen, or a TransformerBridge); for ``"policy"`` the
        policy object handed to ``GRPOTrainer`` (or call ``.attach(trainer)`` after
        building the trainer, which also covers peft wrapping).
    tokenizer : the model's tokenizer (a bridge carries its own).
    trainer_tokenizer : the trainer's ``processing_class``, checked against it now.
    environment : gives the examples (``train`` + ``eval``) and, for
        ``returns="penalized"``, the task reward.
    weight : λ in ``task − λ·score``; default the ProbeSpec's weight.

    ProbeError before any work when the probe's width is not the model's d_model or its
    site is beyond the model's layers; ConfigError for a tokenizer mismatch.
    """
    if detector not in DETECTORS:
        raise ConfigError(f"detector={detector!r} is not one of {', '.join(DETECTORS)}",
                          fix="'frozen' reads the starting model, 'policy' the trained one")
    spec = probe if isinstance(probe, ProbeSpec) else ProbeSpec(path=str(probe))
    is_bridge = getattr(model, "original_model", None) is not None
    source = model if detector == "policy" or is_bridge else frozen_copy(model)
    reader = as_reader(source, tokenizer if tokenizer is not None else
                       getattr(model, "tokenizer", None))
    weight = spec.weight if weight is None else weight
    if returns == "penalized" and weight == 0:
        raise ConfigError(f"probe reward {spec.label!r} has weight 0: it would penalize nothing",
                          fix="give weight= (or the ProbeSpec's weight) > 0, or "
                              "returns='score'")
    bound = bind_probe(spec, reader, loaded_probe)
    reward = ProbeReward(bound, reader, _examples(environment, examples), detector=detector,
                         task_reward=environment.task_reward if environment else None,
                         weight=weight, returns=returns, batch_size=batch_size)
    check_tokenizer(reward, trainer_tokenizer)
    return reward


def text_monitor_reward(spec: TextMonitorSpec, *, environment: Environment,
                        weight: float = 1.0, returns: str = "penalized",
                        base_model: Any = None) -> TextMonitorReward:
    """A TRL reward function from a text monitor (rule, classifier, or LM judge reading
    ``base_model``), reading the part of the completion its spec names."""
    bound = bind_text_monitor(spec, base_model=base_model, split_cot=environment.split_cot)
    return TextMonitorReward(bound, _examples(environment, None),
                             task_reward=environment.task_reward, weight=weight,
                             returns=returns)


def task_reward_function(environment: Environment) -> Any:
    """The environment's task reward alone, in TRL's signature (the no-monitor baseline)."""
    if environment.task_reward is None:
        raise ConfigError(f"environment {environment.name!r} has no task reward",
                          fix="give the environment a task_reward")
    by_id = {e.id: e for e in list(environment.train) + list(environment.eval)}
    pay = environment.task_reward

    def task_reward(prompts: Sequence[Any], completions: Sequence[Any],
                    **columns: Any) -> list[float]:
        ids = columns.get(ID_COLUMN)
        if ids is None:
            raise DataError(f"the task reward got no {ID_COLUMN!r} column",
                            fix="build the training set with grpo_dataset(environment)")
        return [float(pay(by_id[i], completion_text(c))) for i, c in zip(ids, completions)]

    return task_reward


__all__ = ["DETECTORS", "ID_COLUMN", "RETURNS", "MonitorReward", "ProbeReward",
           "TextMonitorReward", "check_tokenizer", "completion_text", "grpo_dataset",
           "probe_reward", "same_tokenizer", "task_reward_function", "text_monitor_reward"]
