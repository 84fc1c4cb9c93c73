"""A text classifier monitor: TF-IDF features and a logistic regression (scikit-learn).

Fitted with scikit-learn's ``TfidfVectorizer`` and ``LogisticRegression``; saved as one
``.safetensors`` file, never a pickle: the tensors are the idf vector, the coefficients
and the intercept, the string metadata (key ``"heldout"``) one JSON document with the
vocabulary (terms in column order), the vectorizer settings, the class counts, the
versions and a SHA-256 over the tensors. ``load`` rebuilds a ``TfidfVectorizer`` with
the saved vocabulary and idf, so a loaded monitor scores exactly as the saved one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from heldout.errors import DataError, NotFittedError, ProbeError
from heldout.monitors.base import check_pairs

FORMAT = "heldout.text_classifier"
FORMAT_VERSION = 1
_TENSORS = ("idf", "coef", "intercept")


def _checksum(tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{t.dtype}|{t.shape}|".encode())
        h.update(t.tobytes())
    return h.hexdigest()


class TextClassifierMonitor:
    """TF-IDF + logistic regression over response text; score = P(misbehavior).

    Vectorizer settings (scikit-learn's ``TfidfVectorizer``): ``ngram_range``,
    ``lowercase``, ``token_pattern``, ``sublinear_tf``, ``min_df``, ``max_df``,
    ``max_features``, ``stop_words`` (None, ``"english"`` or a list of words).
    Classifier settings (``LogisticRegression``): ``C``, ``class_weight`` (None or
    ``"balanced"``), ``max_iter``. The prompt is not read: the score depends on the text.

    Fitted state: ``vectorizer_`` (a fitted ``TfidfVectorizer``), ``coef_`` of shape
    (n_terms,), ``intercept_`` (float), ``classes_`` (``[0, 1]``), ``class_counts_``.
    """

    def __init__(self, *, ngram_range: tuple[int, int] = (1, 2), lowercase: bool = True,
                 token_pattern: str = r"(?u)\b\w\w+\b", sublinear_tf: bool = True,
                 min_df: int | float = 1, max_df: int | float = 1.0,
                 max_features: int | None = None, stop_words: str | list[str] | None = None,
                 C: float = 1.0, class_weight: str | None = None,  # noqa: N803 (sklearn's name)
                 max_iter: int = 1000) -> None:
        self.ngram_range = ngram_range
        self.lowercase = lowercase
        self.token_pattern = token_pattern
        self.sublinear_tf = sublinear_tf
        self.min_df = min_df
        self.max_df = max_df
        self.max_features = max_features
        self.stop_words = stop_words
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter

    # -- settings -----------------------------------------------------------------

    def vectorizer_params(self) -> dict[str, Any]:
        """The ``TfidfVectorizer`` keyword arguments (JSON-ready)."""
        return {"ngram_range": [int(n) for n in self.ngram_range],
                "lowercase": bool(self.lowercase), "token_pattern": self.token_pattern,
                "sublinear_tf": bool(self.sublinear_tf), "min_df": self.min_df,
                "max_df": self.max_df, "max_features": self.max_features,
                "stop_words": (list(self.stop_words) if isinstance(self.stop_words, list)
                               else self.stop_words),
                "norm": "l2", "use_idf": True, "smooth_idf": True, "binary": False,
                "strip_accents": None, "analyzer": "word"}

    def classifier_params(self) -> dict[str, Any]:
        """The ``LogisticRegression`` keyword arguments (JSON-ready)."""
        return {"C": float(self.C), "class_weight": self.class_weight,
                "max_iter": int(self.max_iter)}

    @staticmethod
    def _vectorizer(params: dict[str, Any], vocabulary: dict[str, int] | None = None) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        kw = dict(params)
        kw["ngram_range"] = tuple(kw["ngram_range"])
        if vocabulary is not None:  # min_df etc. chose the vocabulary at fit time
            kw.update(vocabulary=vocabulary, min_df=1, max_df=1.0, max_features=None)
        return TfidfVectorizer(**kw, dtype=np.float64)

    # -- fit and score ------------------------------------------------------------

    def fit(self, texts: Sequence[str], labels: Sequence[int] | np.ndarray
            ) -> TextClassifierMonitor:
        """Fit on ``texts`` (n,) with ``labels`` (n,) in {0, 1} (1 = misbehavior)."""
        from sklearn.linear_model import LogisticRegression

        if isinstance(texts, str):
            raise DataError("fit takes a sequence of texts, got a single string",
                            fix="pass a list of texts")
        _, texts = check_pairs([""] * len(texts), texts)
        y = np.asarray(labels)
        if y.shape != (len(texts),):
            raise DataError(f"fit got {len(texts)} texts but labels of shape {y.shape}",
                            fix="pass one 0/1 label per text")
        if y.dtype == bool:
            y = y.astype(np.int64)
        if not np.isin(y, (0, 1)).all():
            bad = sorted({repr(v) for v in y.tolist() if v not in (0, 1)})[:5]
            raise DataError(f"labels must be 0 or 1, got {', '.join(bad)}",
                            fix="label misbehavior 1 and benign text 0")
        counts = [int((y == 0).sum()), int((y == 1).sum())]
        if min(counts) == 0:
            raise DataError(f"fit needs both labels, got {counts[0]} negatives and "
                            f"{counts[1]} positives", fix="add texts of the missing label")
        vec = self._vectorizer(self.vectorizer_params())
        try:
            X = vec.fit_transform(texts)
        except ValueError as err:  # empty vocabulary, min_df > max_df, ...
            raise DataError(f"the TF-IDF vectorizer could not be fitted: {err}",
                            fix="check the texts are not empty and the token_pattern, "
                                "min_df and max_df settings") from err
        clf = LogisticRegression(**self.classifier_params())
        clf.fit(X, y.astype(np.int64))
        self.vectorizer_ = vec
        self.coef_ = np.asarray(clf.coef_, dtype=np.float64).reshape(-1)
        self.intercept_ = float(clf.intercept_[0])
        self.classes_ = np.array([0, 1])
        self.class_counts_ = counts
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("this TextClassifierMonitor is not fitted yet",
                                 fix="call fit(texts, labels) first, or load a saved one")

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        """Logit of misbehavior per text, float64 of shape (n,)."""
        self._check_fitted()
        X = self.vectorizer_.transform(list(texts))
        return np.asarray(X @ self.coef_, dtype=np.float64).reshape(-1) + self.intercept_

    def score_texts(self, prompts: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """P(misbehavior) per text: float64 of shape (n,) in [0, 1]; prompts are unused."""
        from scipy.special import expit

        self._check_fitted()
        _, text_list = check_pairs(prompts, texts)
        if not text_list:
            return np.zeros(0)
        return np.asarray(expit(self.decision_function(text_list)), dtype=np.float64)

    # -- files --------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted monitor to ``path`` (``.safetensors``), atomically."""
        import sklearn
        from safetensors.numpy import save_file

        from heldout import __version__
        from heldout.probes.io import write_atomic

        self._check_fitted()
        vocab = self.vectorizer_.vocabulary_
        terms = [""] * len(vocab)
        for term, col in vocab.items():
            terms[col] = term
        tensors = {"idf": np.ascontiguousarray(self.vectorizer_.idf_, dtype=np.float64),
                   "coef": np.ascontiguousarray(self.coef_, dtype=np.float64),
                   "intercept": np.array([self.intercept_], dtype=np.float64)}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "vectorizer": self.vectorizer_params(),
                "classifier": self.classifier_params(), "vocabulary": terms,
                "classes": [0, 1], "positive_class": 1, "class_counts": self.class_counts_,
                "heldout_version": __version__, "sklearn_version": sklearn.__version__,
                "checksum": _checksum(tensors)}
        return write_atomic(path, lambda tmp: save_file(
            tensors, tmp, metadata={"heldout": json.dumps(meta)}))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TextClassifierMonitor:
        """Read a monitor written by :meth:`save`. ProbeError if the file is missing,
        not a heldout text classifier, or modified after it was written."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        fix = "re-create it: TextClassifierMonitor().fit(texts, labels).save(path)"
        if not path.is_file():
            raise ProbeError(f"no text classifier file at {str(path)!r}",
                             fix="check the path (classifier monitors are saved with "
                                 "TextClassifierMonitor.save)")
        try:
            with safe_open(str(path), framework="np") as f:
                raw = (f.metadata() or {}).get("heldout")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as err:
            raise ProbeError(f"{str(path)!r} is not a readable safetensors file ({err})",
                             fix=fix) from err
        try:
            meta = json.loads(raw) if raw is not None else None
        except json.JSONDecodeError as err:
            raise ProbeError(f"{str(path)!r} has unreadable metadata ({err})", fix=fix) from err
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ProbeError(f"{str(path)!r} is not a heldout text classifier file",
                             fix=fix)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ProbeError(f"{str(path)!r} has text classifier format version "
                             f"{meta.get('format_version')}, this heldout reads "
                             f"{FORMAT_VERSION}", fix=fix)
        if sorted(tensors) != sorted(_TENSORS) or meta.get("checksum") != _checksum(tensors):
            raise ProbeError(f"{str(path)!r} was modified after it was written: its tensors "
                             "do not match the checksum in its metadata", fix=fix)
        try:
            terms = meta["vocabulary"]
            params, clf = meta["vectorizer"], meta["classifier"]
            n = len(terms)
            if len(set(terms)) != n:
                raise ValueError("the vocabulary repeats a term")
            if tensors["idf"].shape != (n,) or tensors["coef"].shape != (n,):
                raise ValueError(f"{n} terms but idf of shape {tensors['idf'].shape} and "
                                 f"coef of shape {tensors['coef'].shape}")
            lo, hi = params["ngram_range"]
            monitor = cls(ngram_range=(int(lo), int(hi)),
                          lowercase=params["lowercase"], token_pattern=params["token_pattern"],
                          sublinear_tf=params["sublinear_tf"], min_df=params["min_df"],
                          max_df=params["max_df"], max_features=params["max_features"],
                          stop_words=params["stop_words"], C=clf["C"],
                          class_weight=clf["class_weight"], max_iter=clf["max_iter"])
            vec = cls._vectorizer(monitor.vectorizer_params(),
                                  {t: i for i, t in enumerate(terms)})
            vec.idf_ = tensors["idf"].astype(np.float64)  # sklearn's setter checks the length
        except (KeyError, TypeError, ValueError) as err:
            raise ProbeError(f"{str(path)!r} does not hold a consistent text classifier "
                             f"({type(err).__name__}: {err})", fix=fix) from err
        monitor.vectorizer_ = vec
        monitor.coef_ = tensors["coef"].astype(np.float64)
        monitor.intercept_ = float(tensors["intercept"][0])
        monitor.classes_ = np.array(meta.get("classes", [0, 1]))
        monitor.class_counts_ = list(meta.get("class_counts", []))
        return monitor


__all__ = ["TextClassifierMonitor"]
