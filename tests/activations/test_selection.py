"""Token selections read exactly the planted position; prompt_last is the last prompt token."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from heldout.activations.collect import collect
from heldout.activations.selection import check_selection, select_tokens
from heldout.data import Dataset, load_dataset, prompt_token_ids
from heldout.errors import DataError


def _planted(prompt_lengths: list[int], response_lengths: list[int], d: int = 3
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """acts[b, p] = 100 * b + p along every feature, right-padded with -1."""
    width = max(p + r for p, r in zip(prompt_lengths, response_lengths)) + 2
    acts = torch.full((len(prompt_lengths), width, d), -1.0)
    mask = torch.zeros((len(prompt_lengths), width), dtype=torch.bool)
    for b, (p, r) in enumerate(zip(prompt_lengths, response_lengths)):
        acts[b, : p + r] = (100 * b + torch.arange(p + r, dtype=torch.float32))[:, None]
        mask[b, p: p + r] = True
    return acts, mask


def test_prompt_last_reads_the_position_before_the_response() -> None:
    prompts, responses = [1, 4, 7, 2], [3, 1, 5, 6]
    acts, mask = _planted(prompts, responses)
    got = select_tokens(acts, mask, check_selection("prompt_last"))[:, 0]
    assert got.tolist() == [100 * b + p - 1 for b, p in enumerate(prompts)]
    last = select_tokens(acts, mask, "last")[:, 0]
    assert last.tolist() == [100 * b + p + r - 1
                             for b, (p, r) in enumerate(zip(prompts, responses))]


def test_prompt_last_never_wraps_round_to_the_row_end() -> None:
    acts, mask = _planted([0, 3], [4, 2])
    assert select_tokens(acts, mask, "prompt_last")[:, 0].tolist() == [0.0, 102.0]


def test_prompt_last_through_the_model_is_the_prompt_run_alone(gpt2_model,  # type: ignore[no-untyped-def]
                                                                chat_dataset: Dataset) -> None:
    got = collect(gpt2_model, chat_dataset, "resid_post:2", "prompt_last",
                  batch_size=5).get("resid_post:2")
    for row, ex in enumerate(chat_dataset):
        ids = torch.tensor([prompt_token_ids(ex, gpt2_model.tokenizer)])
        _, cache = gpt2_model.run_with_cache(ids, names_filter="blocks.2.hook_resid_post")
        want = cache["blocks.2.hook_resid_post"][0, -1].numpy()
        np.testing.assert_allclose(got[row], want, atol=1e-4)
    last = collect(gpt2_model, chat_dataset, "resid_post:2", "last").get("resid_post:2")
    assert np.abs(got - last).max() > 1e-2  # a different position, not the response's end


def test_prompt_last_refuses_statements_with_no_prompt(gpt2_model, tmp_path: Path  # type: ignore[no-untyped-def]
                                                       ) -> None:
    csv = tmp_path / "facts.csv"
    csv.write_text("statement,label\nred blue,1\nblue red,0\n")
    with pytest.raises(DataError, match=r"prompt_last.*2 example\(s\) have no prompt "
                                        r"before the response \(first: '0'\)") as info:
        collect(gpt2_model, load_dataset(csv), "resid_post:0", "prompt_last")
    assert "--select last" in str(info.value)
