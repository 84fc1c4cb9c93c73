"""Tiny random checkpoints with a word-level chat tokenizer, written locally.

Nothing can be downloaded on an offline machine, so tests, benchmarks and the
README's first run build their own real Hugging Face checkpoints here: a GPT-2 or
Llama architecture with random weights, saved with ``save_pretrained`` (config,
safetensors weights, tokenizer files with a chat template).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

from heldout.errors import ConfigError

SPECIAL = ["<pad>", "<unk>", "<bos>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
WORDS = ("the a is not yes no true false it was red blue green cat dog sun moon "
         "water fire big small question answer user says i think you are right wrong "
         "what how why sure maybe").split()
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> "
    "{% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
ARCHITECTURES = ("gpt2", "llama")


def build_word_tokenizer(words: list[str], chat_template: str = CHAT_TEMPLATE) -> Any:
    """A ``PreTrainedTokenizerFast`` over whitespace-separated ``words`` plus specials."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(SPECIAL + list(words)))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                  bos_token="<bos>", eos_token="<eos>")
    tok.chat_template = chat_template
    return tok


def write_tiny_checkpoint(path: str | os.PathLike[str], *, arch: str = "gpt2",
                          n_layers: int = 2, d_model: int = 32, n_ctx: int = 64,
                          seed: int = 0) -> Path:
    """Write a random-weight checkpoint of ``arch`` (``gpt2`` or ``llama``) to ``path``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown tiny architecture {arch!r}",
                          fix=f"use one of {', '.join(ARCHITECTURES)}")
    tok = build_word_tokenizer(WORDS + [str(i) for i in range(10)])
    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id,
               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    if arch == "gpt2":
        model: Any = GPT2LMHeadModel(GPT2Config(n_positions=n_ctx, n_embd=d_model,
                                                n_layer=n_layers, n_head=4, **ids))
    else:
        model = LlamaForCausalLM(LlamaConfig(hidden_size=d_model, intermediate_size=2 * d_model,
                                             num_hidden_layers=n_layers, num_attention_heads=4,
                                             num_key_value_heads=2, max_position_embeddings=n_ctx,
                                             **ids))
    folder = Path(path)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def write_example_dataset(path: str | os.PathLike[str], n: int = 64, seed: int = 0, *,
                          test_fraction: float = 0.25) -> Path:
    """A small chat JSONL dataset in the tiny tokenizer's vocabulary (labels alternate).

    Rows carry a ``train``/``test`` split, drawn per label (stratified, seeded by
    ``seed``) so that both splits hold both labels: ``test_fraction`` of each label,
    at least one row and never all of them.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
        rows.append({"id": f"ex{i}", "label": i % 2, "split": "train",
                     "messages": [{"role": "user", "content": question}],
                     "response": answer})
    for row in stratified_test_rows([r["label"] for r in rows], test_fraction,
                                    random.Random(f"{seed}:split")):
        rows[row]["split"] = "test"
    return _write_jsonl(path, rows)


def write_control_dataset(path: str | os.PathLike[str], n: int = 32, seed: int = 1) -> Path:
    """Benign (label 0) chats in the tiny vocabulary, group ``control``: a control set
    to calibrate probe thresholds on (``heldout fit/sweep --control``)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
        rows.append({"id": f"control{i}", "label": 0, "group": "control",
                     "messages": [{"role": "user", "content": question}],
                     "response": answer})
    return _write_jsonl(path, rows)


def stratified_test_rows(labels: list[int], test_fraction: float,
                         rng: random.Random) -> list[int]:
    """Row indices for a test split: ``test_fraction`` of each label's rows, rounded,
    but at least one and at most all but one (a label with a single row stays in
    train), so both splits hold every label that has two rows or more."""
    test = []
    for label in sorted(set(labels)):
        rows = [i for i, y in enumerate(labels) if y == label]
        if len(rows) < 2:
            continue
        k = min(max(round(len(rows) * test_fraction), 1), len(rows) - 1)
        test += rng.sample(rows, k)
    return sorted(test)


def _write_jsonl(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out
