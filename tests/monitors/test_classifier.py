"""TextClassifierMonitor: recovers a planted marker word; safetensors round-trip."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from sklearn.metrics import roc_auc_score

from heldout.errors import DataError, NotFittedError, ProbeError
from heldout.monitors.classifier import TextClassifierMonitor

WORDS = "the a is not it was red blue green dog sun moon water fire big small".split()


def planted(n: int, seed: int, marker: str = "zebra") -> tuple[list[str], np.ndarray]:
    """Random sentences; those labeled 1 contain ``marker`` somewhere."""
    rng = random.Random(seed)
    labels = np.arange(n) % 2
    texts = []
    for label in labels:
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 10))]
        if label:
            words.insert(rng.randrange(len(words) + 1), marker)
        texts.append(" ".join(words))
    return texts, labels


@pytest.fixture(scope="module")
def fitted() -> TextClassifierMonitor:
    texts, labels = planted(200, seed=1)
    return TextClassifierMonitor().fit(texts, labels)


def test_recovers_the_planted_marker(fitted: TextClassifierMonitor) -> None:
    texts, labels = planted(200, seed=2)
    scores = fitted.score_texts([""] * len(texts), texts)
    assert scores.dtype == np.float64 and scores.shape == (200,)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert roc_auc_score(labels, scores) > 0.99
    # the heaviest term is the marker itself
    vocab = fitted.vectorizer_.vocabulary_
    assert max(vocab, key=lambda t: fitted.coef_[vocab[t]]) == "zebra"


def test_save_load_scores_identically(fitted: TextClassifierMonitor, tmp_path: Path) -> None:
    texts, _ = planted(50, seed=3)
    texts.append("words never seen: ZEBRA zebras Zebra!")
    before = fitted.score_texts([""] * len(texts), texts)
    path = fitted.save(tmp_path / "sub" / "clf.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["clf.safetensors"]  # no temp left
    loaded = TextClassifierMonitor.load(path)
    after = loaded.score_texts([""] * len(texts), texts)
    assert np.allclose(before, after, rtol=0, atol=1e-12)
    assert loaded.vectorizer_params() == fitted.vectorizer_params()
    assert loaded.class_counts_ == [100, 100]
    # tensors, not pickles; the settings and vocabulary are JSON
    tensors = load_file(str(path))
    assert sorted(tensors) == ["coef", "idf", "intercept"]


def test_settings_survive_the_round_trip(tmp_path: Path) -> None:
    texts, labels = planted(80, seed=4)
    clf = TextClassifierMonitor(ngram_range=(1, 1), lowercase=False, sublinear_tf=False,
                                token_pattern=r"\S+", stop_words=["the", "a"], C=5.0)
    clf.fit(texts, labels)
    probe = ["The zebra a", "the dog", "Zebra zebra zebra"]
    loaded = TextClassifierMonitor.load(clf.save(tmp_path / "c.safetensors"))
    assert np.allclose(clf.score_texts([""] * 3, probe), loaded.score_texts([""] * 3, probe))
    assert loaded.lowercase is False and loaded.stop_words == ["the", "a"]
    assert "the" not in loaded.vectorizer_.vocabulary_


def test_bad_fit_input_is_refused() -> None:
    clf = TextClassifierMonitor()
    with pytest.raises(DataError, match="both labels"):
        clf.fit(["a b", "c d"], [1, 1])
    with pytest.raises(DataError, match="0 or 1, got 2"):
        clf.fit(["a b", "c d"], [0, 2])
    with pytest.raises(DataError, match="labels of shape"):
        clf.fit(["a b", "c d"], [0, 1, 1])
    with pytest.raises(DataError, match="could not be fitted"):
        clf.fit(["", "!"], [0, 1])
    with pytest.raises(NotFittedError, match="call fit"):
        clf.score_texts(["p"], ["t"])


def test_missing_or_corrupt_file_is_refused(fitted: TextClassifierMonitor,
                                            tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="no text classifier file"):
        TextClassifierMonitor.load(tmp_path / "nope.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(ProbeError, match="not a readable safetensors file"):
        TextClassifierMonitor.load(garbage)
    other = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3)}, str(other))
    with pytest.raises(ProbeError, match="not a heldout text classifier"):
        TextClassifierMonitor.load(other)
    path = fitted.save(tmp_path / "clf.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ProbeError, match="not a readable"):
        TextClassifierMonitor.load(truncated)
    # edited tensors: the checksum refuses them
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors["coef"] = tensors["coef"] * 2
    edited = tmp_path / "edited.safetensors"
    save_file(tensors, str(edited), metadata=meta)
    with pytest.raises(ProbeError, match="modified after it was written"):
        TextClassifierMonitor.load(edited)
    # a vocabulary that does not match the tensors
    doc = json.loads(meta["heldout"])
    doc["vocabulary"] = doc["vocabulary"][:-1]
    bad_vocab = tmp_path / "vocab.safetensors"
    save_file(load_file(str(path)), str(bad_vocab), metadata={"heldout": json.dumps(doc)})
    with pytest.raises(ProbeError, match="consistent"):
        TextClassifierMonitor.load(bad_vocab)
