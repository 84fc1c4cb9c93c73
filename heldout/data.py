"""Labeled examples, their file formats, and response-token masks.

An example is a prompt (chat ``messages`` or raw ``prompt`` text) plus the model's
``response`` and a 0/1 ``label`` (1 = the behavior the probe detects). Files:

- JSONL, one object per line: ``{"messages": [{"role": "user", "content": ...}],
  "response": ..., "label": 0|1}`` or ``{"prompt": ..., "response": ..., "label": ...}``;
  optional ``id``, ``split``, ``group``. If ``response`` is absent and the last chat turn
  is the assistant's, that turn is the response.
- CSV in the ``statement,label`` format of public probing sets (geometry-of-truth,
  RepE, SAPLMA): each statement is a raw-text response with an empty prompt; optional
  ``id``, ``split``, ``group`` columns.

``group_by=COLUMN`` (:func:`load_dataset`) takes each row's group from another column or
key, e.g. ``city`` in a paired set where each city appears once true and once false:
seeded splits then keep a group's rows on one side (see ``heldout.probes.splits``), so
the two halves of a pair never sit on both sides of a split.

Tokenization appends the response tokens to the rendered prompt (chat template with
the generation prompt for ``messages``, raw text otherwise), so the response mask is
exact by construction rather than recovered by string matching.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from heldout.errors import DataError


@dataclass(frozen=True)
class Example:
    """One labeled example."""

    id: str
    """Unique within its dataset; defaults to the row number."""
    label: int
    """1 for the behavior being detected (e.g. a lie), 0 otherwise."""
    response: str
    """The model's answer: the tokens whose activations are read."""
    messages: tuple[dict[str, str], ...] | None = None
    """Chat turns before the response, rendered with the tokenizer's chat template."""
    prompt: str | None = None
    """Raw prompt text, used when there are no ``messages``."""
    split: str | None = None
    """Optional split name: ``train``, ``validation``, ``test``, ..."""
    group: str | None = None
    """Optional group: rows sharing one (e.g. the true and false statement about one
    city) stay on one side of a seeded split; also used for analysis."""

    def to_dict(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if v is not None}
        if self.messages is not None:
            row["messages"] = [dict(m) for m in self.messages]
        return row


def _example_from_row(row: dict[str, Any], where: str, index: int,
                      group_by: str | None = None) -> Example:
    if not isinstance(row, dict):
        raise DataError(f"{where}: row is a {type(row).__name__}, not an object",
                        fix="write one JSON object per line")
    if group_by is not None:
        value = row.get(group_by)
        if value is None or isinstance(value, (dict, list)) or not str(value).strip():
            raise DataError(f"{where}: no {group_by!r} value to group by (got {value!r})",
                            fix=f"give every row a {group_by!r}, or group by another "
                                "column (--group-by)")
        row = {**row, "group": str(value)}
    label = row.get("label")
    if isinstance(label, bool) or label not in (0, 1):
        raise DataError(f"{where}: label must be 0 or 1, got {label!r}",
                        fix="relabel as 0 (benign) / 1 (the behavior to detect)")
    messages = row.get("messages")
    response = row.get("response")
    if messages is not None:
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            raise DataError(f"{where}: messages must be a list of {{role, content}} objects",
                            fix='write messages as [{"role": "user", "content": "..."}]')
        if response is None and messages and messages[-1]["role"] == "assistant":
            response, messages = messages[-1]["content"], messages[:-1]
        messages = tuple({"role": str(m["role"]), "content": str(m["content"])} for m in messages)
    if not isinstance(response, str) or not response.strip():
        raise DataError(f"{where}: the example has no response text",
                        fix="give a non-empty 'response' (or end 'messages' with an "
                            "assistant turn)")
    prompt = row.get("prompt")
    if messages is None and prompt is not None and not isinstance(prompt, str):
        raise DataError(f"{where}: prompt must be a string", fix="write the prompt as text")
    return Example(id=str(row.get("id", index)), label=int(label), response=response,
                   messages=messages, prompt=prompt,
                   split=None if row.get("split") is None else str(row["split"]),
                   group=None if row.get("group") is None else str(row["group"]))


@dataclass(frozen=True)
class Dataset:
    """An ordered, immutable list of examples with unique ids."""

    examples: tuple[Example, ...]
    source: str | None = field(default=None, compare=False)
    """Where the examples were read from, for messages."""

    def __post_init__(self) -> None:
        ids = [e.id for e in self.examples]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise DataError(f"{self.source or 'dataset'}: id {dup!r} appears more than once",
                            fix="give every example a unique id")

    @classmethod
    def from_examples(cls, examples: Sequence[Example | dict[str, Any]],
                      source: str | None = None) -> Dataset:
        rows = [e if isinstance(e, Example) else
                _example_from_row(e, f"{source or 'examples'} row {i}", i)
                for i, e in enumerate(examples)]
        return cls(tuple(rows), source=source)

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike[str], group_by: str | None = None
                   ) -> Dataset:
        rows = []
        with open(_existing(path), encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})",
                                    fix="write one JSON object per line") from err
                rows.append(_example_from_row(row, f"{path}:{lineno}", len(rows), group_by))
        return cls(tuple(rows), source=str(path))

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str], group_by: str | None = None) -> Dataset:
        rows = []
        with open(_existing(path), encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"statement", "label"} <= set(reader.fieldnames):
                raise DataError(f"{path}: CSV needs the columns statement,label "
                                f"(found {reader.fieldnames})",
                                fix="use the statement,label format of public probing sets")
            if group_by is not None and group_by not in reader.fieldnames:
                raise DataError(f"{path}: no column {group_by!r} to group by (columns: "
                                f"{', '.join(reader.fieldnames)})",
                                fix="name an existing column with --group-by")
            for lineno, row in enumerate(reader, 2):
                label = (row["label"] or "").strip()
                cells = {k: (row.get(k) or "").strip() or None for k in ("id", "split", "group")}
                rows.append(_example_from_row(
                    {**({group_by: row[group_by]} if group_by else {}),
                     "response": row["statement"], "prompt": "",
                     "label": int(label) if label in ("0", "1") else label,
                     "id": cells["id"] or len(rows), "split": cells["split"],
                     "group": cells["group"]},
                    f"{path}:{lineno}", len(rows), group_by))
        return cls(tuple(rows), source=str(path))

    def to_jsonl(self, path: str | os.PathLike[str]) -> None:
        """Write the examples as JSONL (atomically: temp file, then rename)."""
        tmp = Path(f"{path}.tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as fh:
            for ex in self.examples:
                fh.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    @property
    def labels(self) -> np.ndarray:
        return np.array([e.label for e in self.examples], dtype=np.int64)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.examples]

    def split(self, name: str) -> Dataset:
        """The examples whose ``split`` is ``name`` (DataError if there are none)."""
        subset = tuple(e for e in self.examples if e.split == name)
        if not subset:
            have = sorted({str(e.split) for e in self.examples})
            raise DataError(f"{self.source or 'dataset'} has no examples in split {name!r} "
                            f"(splits: {', '.join(have)})", fix="pick an existing split")
        return Dataset(subset, source=self.source)

    def fingerprint(self) -> str:
        """A hash of every example's content: changes when any example changes."""
        digest = hashlib.sha256()
        for ex in self.examples:
            digest.update(json.dumps(ex.to_dict(), sort_keys=True).encode())
            digest.update(b"\n")
        return digest.hexdigest()[:16]


def _existing(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"dataset file {str(p)!r} does not exist", fix="check the path")
    return p


def load_dataset(path: str | os.PathLike[str], group_by: str | None = None) -> Dataset:
    """Read a ``.jsonl`` or ``.csv`` dataset; DataError if it is empty or malformed.

    ``group_by`` names a column (CSV) or key (JSONL) whose value becomes each row's
    ``group``, replacing a ``group`` column; every row must have one.
    """
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        dataset = Dataset.from_jsonl(path, group_by)
    elif suffix == ".csv":
        dataset = Dataset.from_csv(path, group_by)
    else:
        raise DataError(f"unknown dataset format {suffix!r} for {path}",
                        fix="use a .jsonl (messages/prompt + response + label) or a "
                            ".csv (statement,label) file")
    if len(dataset) == 0:
        raise DataError(f"dataset {str(path)!r} has no examples", fix="add examples to the file")
    return dataset


def join_tokens(prompt: Sequence[int], response: Sequence[int]) -> TokenizedExample:
    """A prompt and a response (token ids) as one sequence with its response mask."""
    return TokenizedExample(tuple(prompt) + tuple(response),
                            (False,) * len(prompt) + (True,) * len(response))


@dataclass(frozen=True)
class TokenizedExample:
    """Token ids of prompt + response, and which positions are the response."""

    input_ids: tuple[int, ...]
    response_mask: tuple[bool, ...]

    @property
    def n_response(self) -> int:
        return sum(self.response_mask)


def prompt_token_ids(example: Example, tokenizer: Any) -> list[int]:
    """Token ids of ``example``'s prompt as the model sees it before the response: the
    chat template with the generation prompt for ``messages``, else BOS + raw text."""
    if example.messages is not None:
        if not getattr(tokenizer, "chat_template", None):
            raise DataError(f"example {example.id!r} has chat messages but the tokenizer "
                            "has no chat template",
                            fix="set tokenizer.chat_template, or give a raw 'prompt' instead")
        rendered = tokenizer.apply_chat_template(list(example.messages), tokenize=False,
                                                 add_generation_prompt=True)
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    ids = list(tokenizer(example.prompt, add_special_tokens=False)["input_ids"]) \
        if example.prompt else []
    bos = getattr(tokenizer, "bos_token_id", None)
    return ([bos] if bos is not None else []) + ids


def tokenize_dataset(dataset: Dataset, tokenizer: Any, *, max_length: int | None = None,
                     truncate: bool = False) -> list[TokenizedExample]:
    """Tokenize every example; checks all of them before returning.

    Sequences longer than ``max_length`` (the model's context) raise DataError unless
    ``truncate=True``, which drops tokens from the left so the response is kept.
    """
    if len(dataset) == 0:
        raise DataError("the dataset has no examples", fix="pass a non-empty dataset")
    out = []
    for ex in dataset:
        prompt = prompt_token_ids(ex, tokenizer)
        response = list(tokenizer(ex.response, add_special_tokens=False)["input_ids"])
        if not response:
            raise DataError(f"example {ex.id!r}: the response has no tokens",
                            fix="drop the example or give it a non-empty response")
        ids = prompt + response
        mask = [False] * len(prompt) + [True] * len(response)
        if max_length is not None and len(ids) > max_length:
            if not truncate:
                raise DataError(f"example {ex.id!r} has {len(ids)} tokens, more than the "
                                f"model's context of {max_length}",
                                fix="shorten it, or pass truncate=True (--truncate) to drop "
                                    "tokens from the left")
            ids, mask = ids[-max_length:], mask[-max_length:]
        out.append(TokenizedExample(tuple(ids), tuple(mask)))
    return out
