"""Planted-answer data for the probe tests: every generator is seeded."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm


def planted_linear(n: int, d: int = 16, shift: float = 1.0, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X = N(0, I) + (2y - 1) * shift * u: the Bayes-optimal direction is u and the
    best AUROC is Φ(shift · √2). Returns X (n, d) float32, y (n,), u (d,)."""
    rng = np.random.default_rng(seed)
    u = np.random.default_rng(100).normal(size=d)  # same direction for every seed
    u /= np.linalg.norm(u)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d)) + np.outer(2 * y - 1, u) * shift
    return X.astype(np.float32), y, u


def bayes_auroc(shift: float) -> float:
    return float(norm.cdf(shift * np.sqrt(2)))


def planted_xor(n: int, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """y = [x0 * x1 > 0]: no linear probe beats chance, a small MLP solves it."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    return X, (X[:, 0] * X[:, 1] > 0).astype(np.int64)


def planted_tokens(n: int, T: int = 8, d: int = 12, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per-token data where the label is carried by which token is the "key".

    Every example has one token at +2 along feature 1 and one at -2; a key token is
    marked by +3 along feature 0. Label 1: the key is the +2 token; label 0: the -2
    token. Means over tokens are identical across classes (a mean-pooled linear probe
    is at chance); attention that finds the key token reads the label off feature 1.
    Rows have 4..T real tokens, the rest NaN padding. Returns X (n, T, d), y (n,).
    """
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, T, d)) * 0.5).astype(np.float32)
    y = rng.integers(0, 2, n)
    for i in range(n):
        length = int(rng.integers(4, T + 1))
        a, b = rng.choice(length, 2, replace=False)
        X[i, a, 1] += 2
        X[i, b, 1] -= 2
        X[i, a if y[i] else b, 0] += 3
        X[i, length:] = np.nan
    return X, y


@pytest.fixture(scope="module")
def linear_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y, u = planted_linear(4000, seed=0)
    X_test, y_test, _ = planted_linear(4000, seed=1)
    return X, y, X_test, y_test, u
