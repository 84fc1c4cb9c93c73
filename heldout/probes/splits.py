"""Seeded row splits that never put one group on both sides.

Paired probing sets hold each item twice (the true and the false statement about one
city): the two rows share most of their activations. A row-level random split puts one
half of a pair in training and the other in the test split, where the probe can score
it by the pair's shared part (measured: AUROC below chance on real paired sets). So
whenever rows carry a ``group``, every draw here moves whole groups; rows without a
group count as groups of one.

- :func:`seeded_split` draws train/test rows when a store has no split column;
- :func:`calibration_holdout` keeps a slice of the negatives out of training, so a
  threshold is set on scores of rows no probe was fitted on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from heldout.errors import ConfigError, DataError


def has_groups(groups: Sequence[str | None]) -> bool:
    """True if any row names a group."""
    return any(g is not None for g in groups)


def group_keys(groups: Sequence[str | None]) -> np.ndarray:
    """One key per row: its group, or a key of its own for rows without one."""
    return np.array([f"group:{g}" if g is not None else f"row:{i}"
                     for i, g in enumerate(groups)], dtype=object)


def draw_groups(labels: np.ndarray, keys: np.ndarray, targets: dict[int, float],
                rng: np.random.Generator) -> np.ndarray:
    """A boolean mask over rows: whole groups, visited in a seeded order, each taken if
    it brings the drawn count of every label in ``targets`` closer to its target
    (labels not in ``targets`` do not count). Stratified as far as groups allow."""
    names, inverse = np.unique(keys, return_inverse=True)
    classes = sorted(targets)
    counts = np.zeros((len(names), len(classes)))
    for j, c in enumerate(classes):
        np.add.at(counts[:, j], inverse[labels == c], 1)
    want = np.array([targets[c] for c in classes])
    drawn = np.zeros(len(classes))
    taken = np.zeros(len(names), dtype=bool)
    for g in rng.permutation(len(names)):
        if np.abs(drawn + counts[g] - want).sum() < np.abs(drawn - want).sum():
            drawn += counts[g]
            taken[g] = True
    return taken[inverse]


def _check_fraction(fraction: float, what: str) -> None:
    if not 0 < fraction < 1:
        raise ConfigError(f"{what} must be in (0, 1), got {fraction}", fix="use e.g. 0.3")


def seeded_split(labels: np.ndarray, groups: Sequence[str | None], *, seed: int = 0,
                 test_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices drawn with ``seed``: ``test_fraction`` of each label's
    rows in the test split, whole groups at a time when rows have groups.

    Raises DataError, before any fitting, if the groups are too few to give both sides
    both labels.
    """
    _check_fraction(test_fraction, "test_fraction")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    if not has_groups(groups):  # row by row, stratified by label (unchanged behaviour)
        test = np.zeros(len(labels), dtype=bool)
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            test[idx[: int(round(len(idx) * test_fraction))]] = True
        return np.flatnonzero(~test), np.flatnonzero(test)
    keys = group_keys(groups)
    classes = np.unique(labels)
    test = draw_groups(labels, keys, {int(c): test_fraction * (labels == c).sum()
                                      for c in classes}, rng)
    n_groups = len(np.unique(keys))
    for side, mask in (("train", ~test), ("test", test)):
        have = set(np.unique(labels[mask]).tolist())
        if len(classes) > 1 and have != set(classes.tolist()):
            raise DataError(f"the rows' {n_groups} group(s) are too few for a seeded split "
                            f"that keeps each group on one side and gives both sides both "
                            f"labels: the seeded {side!r} side would hold "
                            f"{'no rows' if not have else 'only label ' + str(sorted(have))}",
                            fix="use groups that pair items (e.g. --group-by city), not "
                                "conditions; add groups; or give the dataset a split column")
    return np.flatnonzero(~test), np.flatnonzero(test)


def calibration_holdout(labels: np.ndarray, groups: Sequence[str | None],
                        rows: np.ndarray, *, seed: int = 0, fraction: float = 0.25
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` into (rows to fit on, negatives to calibrate a threshold on).

    About ``fraction`` of the negatives among ``rows`` are held out; with groups, whole
    groups are (their positives leave training too, unused), so no held-out negative
    shares a group with a row the probe was fitted on. DataError if the fit rows lose a
    label or no negative is held out.
    """
    _check_fraction(fraction, "the calibration fraction")
    rows = np.asarray(rows)
    y = np.asarray(labels)[rows]
    keys = group_keys(groups)[rows]
    held = draw_groups(y, keys, {0: fraction * (y == 0).sum()}, np.random.default_rng(seed))
    calibrate = rows[held & (y == 0)]
    fit = rows[~held]
    if len(calibrate) == 0 or len(np.unique(y[~held])) < len(np.unique(y)):
        raise DataError(f"cannot hold out {fraction:.0%} of the {int((y == 0).sum())} "
                        f"negatives in {len(rows)} training rows (by group: "
                        f"{len(np.unique(keys))}) for calibration and still fit on both "
                        "labels", fix="add negatives (or groups), or pass a benign control "
                                      "store (--control) to calibrate on")
    return fit, calibrate
