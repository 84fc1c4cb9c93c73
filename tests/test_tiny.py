"""The tiny example data: both splits hold both labels (the README tour sweeps on it)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from heldout.data import load_dataset
from heldout.tiny import (
    stratified_test_rows,
    write_control_dataset,
    write_example_dataset,
)


def test_example_dataset_splits_are_stratified_and_seeded(tmp_path: Path) -> None:
    data = load_dataset(write_example_dataset(tmp_path / "a.jsonl"))
    counts = Counter((e.split, e.label) for e in data)
    assert counts == {("train", 0): 24, ("train", 1): 24, ("test", 0): 8, ("test", 1): 8}
    again = load_dataset(write_example_dataset(tmp_path / "b.jsonl"))
    assert again.fingerprint() == data.fingerprint()
    other = load_dataset(write_example_dataset(tmp_path / "c.jsonl", seed=1))
    assert [e.split for e in other] != [e.split for e in data]


@pytest.mark.parametrize("n", [4, 5, 7, 10, 33])
def test_small_datasets_keep_both_labels_in_both_splits(tmp_path: Path, n: int) -> None:
    data = load_dataset(write_example_dataset(tmp_path / "d.jsonl", n=n))
    for split in ("train", "test"):
        assert set(data.split(split).labels.tolist()) == {0, 1}


def test_a_label_with_one_row_stays_in_train() -> None:
    assert stratified_test_rows([0, 1, 0], 0.25, random.Random(0)) in ([0], [2])


def test_control_dataset_is_benign_and_distinct(tmp_path: Path) -> None:
    control = load_dataset(write_control_dataset(tmp_path / "control" / "c.jsonl"))
    data = load_dataset(write_example_dataset(tmp_path / "a.jsonl"))
    assert len(control) == 32 and set(control.labels.tolist()) == {0}
    assert {e.group for e in control} == {"control"} and not set(control.ids) & set(data.ids)
