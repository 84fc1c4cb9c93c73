from __future__ import annotations

import json
from pathlib import Path

import pytest

from heldout.data import Dataset, load_dataset, tokenize_dataset
from heldout.errors import DataError
from tests.conftest import SHARED


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_messages_prompt_and_trailing_assistant(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", [
        {"messages": [{"role": "user", "content": "is it red"}], "response": "yes", "label": 1,
         "split": "train", "group": "pressure"},
        {"prompt": "the sun is", "response": "blue", "label": 0, "id": "x"},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "no"}],
         "label": 0},
    ])
    ds = load_dataset(path)
    assert ds.ids == ["0", "x", "2"] and ds.labels.tolist() == [1, 0, 0]
    assert ds[2].response == "no" and len(ds[2].messages or ()) == 1
    assert ds.split("train")[0].group == "pressure"
    copy = tmp_path / "copy.jsonl"
    ds.to_jsonl(copy)
    assert load_dataset(copy).fingerprint() == ds.fingerprint()


def test_fingerprint_changes_with_content(tmp_path: Path) -> None:
    a = Dataset.from_examples([{"prompt": "p", "response": "r", "label": 0}])
    b = Dataset.from_examples([{"prompt": "p", "response": "r", "label": 1}])
    assert a.fingerprint() != b.fingerprint()


def test_public_csv_format(tmp_path: Path) -> None:
    path = tmp_path / "facts.csv"
    path.write_text('statement,label\nThe sun is hot.,1\n"Cats, famously, bark.",0\n')
    ds = load_dataset(path)
    assert [e.response for e in ds] == ["The sun is hot.", "Cats, famously, bark."]
    assert ds.labels.tolist() == [1, 0]


def test_shared_repe_facts_loads() -> None:
    path = SHARED / "datasets" / "repe-facts" / "facts_true_false.csv"
    if not path.exists():
        pytest.skip("shared/ datasets are not beside this checkout")
    ds = load_dataset(path)
    assert len(ds) == 612 and set(ds.labels.tolist()) == {0, 1}


@pytest.mark.parametrize("row, match", [
    ({"prompt": "p", "response": "r", "label": 2}, "label must be 0 or 1"),
    ({"prompt": "p", "response": "r", "label": True}, "label must be 0 or 1"),
    ({"prompt": "p", "response": "  ", "label": 0}, "no response"),
    ({"messages": "hi", "response": "r", "label": 0}, "messages must be a list"),
])
def test_bad_rows(tmp_path: Path, row: dict[str, object], match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_dataset(_write(tmp_path / "d.jsonl", [row]))


def test_empty_bad_json_duplicates_and_suffix(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no examples"):
        load_dataset(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match="not valid JSON"):
        load_dataset(tmp_path / "bad.jsonl")
    dup = _write(tmp_path / "dup.jsonl", [{"prompt": "p", "response": "r", "label": 0, "id": 1}] * 2)
    with pytest.raises(DataError, match="more than once"):
        load_dataset(dup)
    with pytest.raises(DataError, match="unknown dataset format"):
        load_dataset(tmp_path / "data.parquet")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "missing.jsonl")


def test_response_mask_follows_chat_template(gpt2_model) -> None:  # type: ignore[no-untyped-def]
    tok = gpt2_model.tokenizer
    ds = Dataset.from_examples([{"messages": [{"role": "user", "content": "is the sun red"}],
                                 "response": "no it is not", "label": 0}])
    [ex] = tokenize_dataset(ds, tok)
    words = tok.convert_ids_to_tokens(list(ex.input_ids))
    assert words[:2] == ["<bos>", "<|user|>"]
    assert [w for w, m in zip(words, ex.response_mask) if m] == ["no", "it", "is", "not"]
    assert words[-5] == "<|assistant|>"


def test_too_long_errors_or_truncates_left(gpt2_model) -> None:  # type: ignore[no-untyped-def]
    ds = Dataset.from_examples([{"prompt": "a " * 30, "response": "yes no", "label": 1}])
    with pytest.raises(DataError, match="more than the model's context of 10"):
        tokenize_dataset(ds, gpt2_model.tokenizer, max_length=10)
    [ex] = tokenize_dataset(ds, gpt2_model.tokenizer, max_length=10, truncate=True)
    assert len(ex.input_ids) == 10 and ex.response_mask[-2:] == (True, True)


def test_response_with_no_tokens(gpt2_model) -> None:  # type: ignore[no-untyped-def]
    class NoTokens:
        bos_token_id = None
        chat_template = None

        def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
            return {"input_ids": [] if text == "r" else [1]}

    ds = Dataset.from_examples([{"prompt": "p", "response": "r", "label": 0}])
    with pytest.raises(DataError, match="response has no tokens"):
        tokenize_dataset(ds, NoTokens())


def test_csv_reads_split_group_and_id_columns(tmp_path: Path) -> None:
    path = tmp_path / "cities.csv"
    path.write_text("statement,label,city,split,group,id\n"
                    "Paris is in France.,1,Paris,train,g1,a\n"
                    "Paris is in Peru.,0,Paris,test,,b\n")
    ds = load_dataset(path)
    assert [(e.id, e.split, e.group) for e in ds] == [("a", "train", "g1"), ("b", "test", None)]
    by_city = load_dataset(path, group_by="city")
    assert [e.group for e in by_city] == ["Paris", "Paris"]
    assert [e.split for e in by_city] == ["train", "test"]


def test_jsonl_group_by_a_key(tmp_path: Path) -> None:
    rows = [{"prompt": "Q", "response": f"{c} is a city.", "label": i % 2, "city": c}
            for i, c in enumerate(["Rome", "Rome", "Oslo", "Oslo"])]
    ds = load_dataset(_write(tmp_path / "d.jsonl", rows), group_by="city")
    assert [e.group for e in ds] == ["Rome", "Rome", "Oslo", "Oslo"]


def test_group_by_a_missing_column_or_value_is_refused(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("statement,label\nA.,1\n")
    with pytest.raises(DataError, match=r"no column 'city' to group by \(columns: "
                                        r"statement, label\)"):
        load_dataset(csv, group_by="city")
    rows = [{"prompt": "Q", "response": "A.", "label": 1, "city": "Rome"},
            {"prompt": "Q", "response": "B.", "label": 0}]
    with pytest.raises(DataError, match=r"d.jsonl:2: no 'city' value to group by"):
        load_dataset(_write(tmp_path / "d.jsonl", rows), group_by="city")
