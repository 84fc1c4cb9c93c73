"""LMJudge: the score is P(yes)/(P(yes)+P(no)) at the next token, batched = one at a time,
single-token answers; a tiny model fine-tuned to say ' yes' to a marker is recovered."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from heldout.errors import ConfigError, DataError
from heldout.monitors.judge import DEFAULT_QUESTION, LMJudge

QUESTION = "is {text} wrong for {prompt}"
PROMPTS = ["the question", "what is it", "", "why the sun", "a dog"]
TEXTS = ["the cat", "a dog is red blue green sun moon water", "sun", "moon was not it",
         "i think you are right the answer is 3"]


@pytest.fixture(scope="module")
def hf_llama(tiny_checkpoints: dict[str, Path]) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_checkpoints["llama"]
    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def by_hand(model: Any, ids: list[int], yes: int, no: int) -> float:
    """P(yes) / (P(yes) + P(no)) from a full softmax over one unpadded sequence."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    p = torch.softmax(logits, dim=-1)
    return float(p[yes] / (p[yes] + p[no]))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_bridge_batched_equals_one_at_a_time_and_by_hand(arch: str, request: Any) -> None:
    bridge = request.getfixturevalue(f"{arch}_model")
    judge = LMJudge(bridge, question=QUESTION, yes=" yes", no=" no", batch_size=2)
    assert judge.use_chat_template  # the tiny tokenizer has a chat template
    scores = judge.score_texts(PROMPTS, TEXTS)
    mass = judge.answer_mass_
    assert scores.dtype == np.float64 and scores.shape == (5,)
    assert mass is not None and mass.shape == (5,) and ((mass > 0) & (mass <= 1 + 1e-9)).all()
    assert judge.encode("p", "t").count(bridge.tokenizer.bos_token_id) == 1
    lengths = {len(judge.encode(p, t)) for p, t in zip(PROMPTS, TEXTS)}
    assert len(lengths) > 3  # rows really are padded
    single = np.array([judge.score_texts([p], [t])[0] for p, t in zip(PROMPTS, TEXTS)])
    np.testing.assert_allclose(scores, single, rtol=0, atol=1e-6)
    hand = [by_hand(bridge.original_model, judge.encode(p, t), judge.yes_id, judge.no_id)
            for p, t in zip(PROMPTS, TEXTS)]
    np.testing.assert_allclose(scores, hand, rtol=0, atol=1e-6)


def test_plain_hf_model_and_raw_text(hf_llama: tuple[Any, Any]) -> None:
    model, tok = hf_llama
    judge = LMJudge(model, tokenizer=tok, question=QUESTION, yes=" yes", no=" no",
                    batch_size=3, chat_template=False)
    assert not judge.use_chat_template
    assert judge.render("p", "t") == "is t wrong for p"
    assert judge.encode("p", "t") == tok("is t wrong for p")["input_ids"]  # raw text
    scores = judge.score_texts(PROMPTS, TEXTS)
    hand = [by_hand(model, judge.encode(p, t), judge.yes_id, judge.no_id)
            for p, t in zip(PROMPTS, TEXTS)]
    np.testing.assert_allclose(scores, hand, rtol=0, atol=1e-6)
    chat = LMJudge(model, tokenizer=tok, question=QUESTION, yes=" yes", no=" no")
    assert chat.render("p", "t").endswith("<|assistant|> ")
    assert chat.encode("p", "t").count(tok.bos_token_id) == 1  # the template writes BOS once


def test_training_mode_is_restored(hf_llama: tuple[Any, Any]) -> None:
    model, tok = hf_llama
    judge = LMJudge(model, tokenizer=tok, question=QUESTION, yes=" yes", no=" no")
    model.train()
    try:
        a = judge.score_texts(PROMPTS[:2], TEXTS[:2])
        assert model.training
        model.eval()
        np.testing.assert_allclose(a, judge.score_texts(PROMPTS[:2], TEXTS[:2]), atol=1e-7)
        assert not model.training
    finally:
        model.eval()


def test_answer_words_must_be_single_distinct_tokens(llama_model: Any) -> None:
    with pytest.raises(ConfigError, match=r"'yes no' is 2 tokens .*\['yes', 'no'\]"):
        LMJudge(llama_model, yes="yes no")
    # the default ' Yes' is not in the tiny word vocabulary: the fix names what is one token
    with pytest.raises(ConfigError, match="not in the tokenizer's vocabulary") as err:
        LMJudge(llama_model)
    assert "' yes'" in str(err.value.fix)
    with pytest.raises(ConfigError, match="same token"):
        LMJudge(llama_model, yes=" yes", no="yes")
    with pytest.raises(ConfigError, match="non-empty"):
        LMJudge(llama_model, yes="", no=" no")


def test_bad_settings_are_refused(llama_model: Any, hf_llama: tuple[Any, Any]) -> None:
    ok: dict[str, Any] = {"yes": " yes", "no": " no"}
    with pytest.raises(ConfigError, match="no {text} field"):
        LMJudge(llama_model, question="is {prompt} bad", **ok)
    with pytest.raises(ConfigError, match=r"unknown field\(s\) {answer}"):
        LMJudge(llama_model, question="{text} {answer}", **ok)
    with pytest.raises(ConfigError, match="not a valid template"):
        LMJudge(llama_model, question="{text} {", **ok)
    with pytest.raises(ConfigError, match="batch_size"):
        LMJudge(llama_model, batch_size=0, **ok)
    with pytest.raises(ConfigError, match="carries no tokenizer"):
        LMJudge(hf_llama[0], **ok)
    assert "{prompt}" in DEFAULT_QUESTION and "{text}" in DEFAULT_QUESTION
    LMJudge(llama_model, **ok)  # the default question is a valid template


def test_too_long_input_is_refused_before_any_forward(llama_model: Any) -> None:
    judge = LMJudge(llama_model, question=QUESTION, yes=" yes", no=" no")
    calls = []
    handle = llama_model.original_model.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(DataError, match=r"text 1 .* longer than the judge model's "
                                            r"context of 64"):
            judge.score_texts(["a", "b"], ["the cat", " ".join(["dog"] * 80)])
    finally:
        handle.remove()
    assert calls == []
    with pytest.raises(DataError, match="2 prompts but 1 texts"):
        judge.score_texts(["a", "b"], ["x"])
    assert judge.score_texts([], []).shape == (0,)


MARKER_WORDS = "the a is not it was red blue green dog sun moon water fire big small".split()


def marker_texts(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = random.Random(seed)
    labels = np.arange(n) % 2
    texts = []
    for label in labels:
        words = [rng.choice(MARKER_WORDS) for _ in range(rng.randint(3, 7))]
        if label:
            words.insert(rng.randrange(len(words) + 1), "cat")
        texts.append(" ".join(words))
    return texts, labels


@pytest.mark.slow
def test_fine_tuned_judge_recovers_a_planted_marker(tmp_path: Path) -> None:
    """A 1-layer model trained ~20 steps to answer ' yes' iff the text holds 'cat'."""
    from sklearn.metrics import roc_auc_score
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from heldout.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(tmp_path / "judge", arch="llama", n_layers=1, seed=0)
    model = AutoModelForCausalLM.from_pretrained(folder)
    judge = LMJudge(model, tokenizer=AutoTokenizer.from_pretrained(folder),
                    question="is {text} wrong", yes=" yes", no=" no")
    texts, labels = marker_texts(64, seed=0)
    encoded = [judge.encode("", t) for t in texts]
    lengths = torch.tensor([len(e) for e in encoded])
    ids = torch.zeros((len(texts), int(lengths.max())), dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, :len(e)] = torch.tensor(e)
    mask = (torch.arange(ids.shape[1]) < lengths[:, None]).long()
    target = torch.tensor([judge.yes_id if y else judge.no_id for y in labels])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ~5x faster for a model this small on a busy machine
    try:
        model.train()
        for _ in range(20):
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = torch.nn.functional.cross_entropy(
                logits[torch.arange(len(texts)), lengths - 1], target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)
    held_texts, held_labels = marker_texts(64, seed=1)
    scores = judge.score_texts([""] * 64, held_texts)
    assert roc_auc_score(held_labels, scores) > 0.99
    assert scores[held_labels == 1].mean() > 0.7 > 0.3 > scores[held_labels == 0].mean()
