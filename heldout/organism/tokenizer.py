"""A word-level tokenizer with a chat template, saved and loaded like any HF tokenizer.

Words are split on whitespace and looked up in a fixed vocabulary (unknown words map
to ``<unk>``). Chat turns render as ``<bos> <user> CONTENT <assistant>``, so
``apply_chat_template(messages, add_generation_prompt=True)`` followed by the response
tokens is exactly the sequence the organism was trained on.
"""

from __future__ import annotations

from typing import Any

from heldout.organism.task import task_words

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
ROLE_TOKENS = ("<system>", "<user>", "<assistant>")

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ ' <' + message['role'] + '> ' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ ' <assistant>' }}{% endif %}"
)
"""Jinja chat template: one role token per turn, the generation prompt is ``<assistant>``."""


def build_tokenizer(max_operand: int, v2: bool = False) -> Any:
    """A ``PreTrainedTokenizerFast`` over the task's words for operands below
    ``max_operand`` (with the organism-v2 words when ``v2``)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = list(SPECIAL_TOKENS) + list(ROLE_TOKENS) + task_words(max_operand, v2)
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
        unk_token="<unk>", padding_side="right", clean_up_tokenization_spaces=False,
        model_max_length=256)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the rendered chat prompt, generation prompt included.

    The same rendering as ``heldout.data.tokenize_dataset`` (template to text, then
    tokenized without adding special tokens).
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
