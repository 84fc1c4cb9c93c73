"""Fit every probe kind at every site of a store and compare them on held-out rows.

The logistic probes of all sites are fitted by one batched L-BFGS over a (n_sites,
d_model) weight array (:func:`~heldout.probes.linear.fit_logistic_batched`; on CPU in
cache-sized groups of sites); its ``fit_seconds`` is the total time divided by the
number of sites. Thresholds come from a control set of benign examples (``control``:
another store, its label-0 rows), or, without one, from the test split's negatives.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from heldout.activations.sites import HookSite
from heldout.analysis.metrics import (
    accuracy,
    auroc,
    bootstrap_ci,
    recall_at_fpr,
    threshold_at_fpr,
)
from heldout.errors import ConfigError, DataError, StoreError
from heldout.probes.base import BaseProbe, check_finite, check_labels, pad_tokens
from heldout.probes.io import PROBES
from heldout.probes.linear import LogisticProbe, fit_logistic_batched
from heldout.probes.splits import seeded_split

TOKEN_KINDS = ("attention", "token_mean", "token_max", "multimax", "rolling_attention")
"""Sweep names of the per-token probes (usable on ``tokens`` stores only)."""


@dataclass(frozen=True)
class SweepResult:
    """The outcome of :func:`sweep`."""

    table: pd.DataFrame
    """One row per (site, probe): site, kind, layer, probe, auroc, auroc_low,
    auroc_high, recall_at_fpr, recall_low, recall_high, accuracy (at the threshold, on
    the test split), fpr_at_threshold (test negatives above it), threshold,
    fit_seconds, n_train, n_test, n_control."""
    best_site: HookSite
    """Site of the best row: highest recall at ``fpr``, ties broken by AUROC."""
    best_probe: str
    """Probe name of the best row."""
    fpr: float
    """False-positive rate the thresholds were set at."""
    probes: dict[tuple[str, str], BaseProbe] = field(repr=False)
    """Fitted probes by ``(str(site), probe name)``, each with ``threshold_`` set."""
    calibration: str = ""
    """Which rows the thresholds were calibrated on (never rows a probe was fitted on)."""

    def plot(self) -> Any:
        """Per-layer AUROC and recall-at-FPR, one line per (site kind, probe): a
        matplotlib figure (:func:`heldout.analysis.style.save_figure` writes it)."""
        return plot_sweep(self.table, fpr=self.fpr)


def make_probe(name: str, params: dict[str, Any] | None = None) -> BaseProbe:
    """A probe from its sweep/CLI name: a kind of :data:`~heldout.probes.io.PROBES`, or
    ``token_mean`` / ``token_max`` for :class:`TokenLinearProbe` aggregations."""
    params = dict(params or {})
    if name in ("token_mean", "token_max"):
        return PROBES["token_linear"](aggregate=name.split("_")[1], **params)
    if name not in PROBES or name == "token_linear":
        known = [k for k in PROBES if k != "token_linear"] + ["token_mean", "token_max"]
        raise ConfigError(f"unknown probe {name!r}", fix=f"use one of {', '.join(known)}")
    return PROBES[name](**params)


def split_rows(store: Any, train_split: str, test_split: str, *, seed: int = 0,
               test_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices: by the store's split column, or, if the store has
    none, by a seeded partition stratified by label that keeps each of the store's
    groups on one side (:func:`heldout.probes.splits.seeded_split`)."""
    splits = list(store.splits)
    if all(s is None for s in splits):
        return seeded_split(store.labels, store.groups, seed=seed,
                            test_fraction=test_fraction)
    arr = np.array(["" if s is None else s for s in splits])
    train, test = np.flatnonzero(arr == train_split), np.flatnonzero(arr == test_split)
    for name, rows in ((train_split, train), (test_split, test)):
        if len(rows) == 0:
            have = sorted(set(arr.tolist()) - {""})
            raise ConfigError(f"the store has no rows in split {name!r}; it has "
                              f"{', '.join(have)}", fix="pass --train-split/--test-split "
                              "naming existing splits")
    return train, test


def check_split_labels(store: Any, rows: np.ndarray, split: str, need: str, *,
                       fix: str) -> None:
    """DataError naming ``split`` (e.g. ``"'test'"``) if the store's ``rows`` hold one
    label only; ``need`` says what both labels are for. Labels other than 0/1 are left
    to :func:`~heldout.probes.base.check_labels`."""
    labels = np.asarray(store.labels)
    present = np.unique(labels[rows])
    if len(present) != 1 or not set(np.unique(labels).tolist()) <= {0, 1}:
        return
    only = present[0].item()
    if len(np.unique(labels)) == 1:
        raise DataError(f"the store has only one class, label {only} (n={len(labels)}): "
                        f"{need}",
                        fix="cache a dataset with both misbehavior (1) and benign (0) "
                            "examples")
    raise DataError(f"the store's {split} split has only label {only} (n={len(rows)}): "
                    f"{need}", fix=fix)


def load_site(store: Any, site: HookSite, token_level: bool) -> np.ndarray:
    """All activations at ``site``: (n_rows, d_model), or for ``tokens`` stores the mean
    over tokens (pooled probes) or NaN-padded (n_rows, max_tokens, d) (token probes)."""
    if store.selection == "tokens":
        values, offsets = store.read_tokens(site)
        check_finite(values, f"activations at {site}")
        padded = pad_tokens(values, offsets)
        return padded if token_level else np.nanmean(padded, axis=1).astype(np.float32)
    if token_level:
        raise ConfigError(f"per-token probes need a 'tokens' store; this one has selection "
                          f"{store.selection!r}", fix="cache with --select tokens, or drop "
                          f"{', '.join(TOKEN_KINDS)} from the probe list")
    X = store.read(site)
    check_finite(X, f"activations at {site}")
    return X


def check_matching_store(other: Any, store: Any, sites: Sequence[HookSite], what: str,
                         fix: str) -> None:
    """StoreError unless ``other`` has ``store``'s d_model and selection and holds every
    site in ``sites``; ``what`` names ``other`` in the message (e.g. "the control store")."""
    if other.d_model != store.d_model or other.selection != store.selection:
        raise StoreError(f"{what} does not match the store (d_model {other.d_model} vs "
                         f"{store.d_model}, selection {other.selection!r} vs "
                         f"{store.selection!r})", fix=fix)
    missing = [str(s) for s in sites if s not in other.sites]
    if missing:
        raise StoreError(f"{what} lacks site(s) {', '.join(missing)}",
                         fix=fix.replace("model and selection", "sites"))


def control_rows(control: Any, store: Any, sites: Sequence[HookSite]) -> np.ndarray:
    """The benign (label-0) rows of a control store that matches ``store`` at ``sites``."""
    check_matching_store(control, store, sites, "the control store",
                         fix="cache the control set with the same model and selection")
    rows = np.flatnonzero(control.labels == 0)
    if len(rows) == 0:
        raise DataError("the control store has no benign (label 0) rows to set a "
                        "threshold on", fix="use a control set of benign examples")
    return rows


def check_request(store: Any, sites: Sequence[HookSite | str] | None, names: Sequence[str],
                  fpr: float, probe_params: dict[str, dict[str, Any]] | None
                  ) -> list[HookSite]:
    """Validate probe names, ``fpr``, and sites against ``store``; the site list."""
    for name in names:
        make_probe(name, (probe_params or {}).get(name))
    if not 0 < fpr < 1:
        raise ConfigError(f"fpr must be in (0, 1), got {fpr}", fix="use e.g. fpr=0.01")
    if store.n_rows == 0:
        raise DataError("the store is empty", fix="cache activations first")
    site_list = list(store.sites) if sites is None else [
        HookSite.parse(s) if isinstance(s, str) else s for s in sites]
    missing = [str(s) for s in site_list if s not in store.sites]
    if missing or not site_list:
        raise StoreError(f"the store has no site(s) {', '.join(missing) or '(none given)'}; "
                         f"it has {', '.join(str(s) for s in store.sites)}",
                         fix="pick stored sites")
    if store.selection != "tokens" and any(n in TOKEN_KINDS for n in names):
        load_site(store, site_list[0], token_level=True)  # raises the ConfigError
    return site_list


def train_test_rows(store: Any, train_split: str, test_split: str, *, seed: int,
                    test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`split_rows`, then DataError naming a split that lacks a label."""
    train, test = split_rows(store, train_split, test_split, seed=seed,
                             test_fraction=test_fraction)
    if any(s is not None for s in store.splits):
        fix = ("give every split both labels (split the dataset stratified by label and "
               "cache it again), or name other splits with --train-split/--test-split "
               "(sweep(train_split=, test_split=))")
        split_names = repr(train_split), repr(test_split)
    else:  # split_rows drew a seeded split stratified by label
        fix = "add examples: the seeded split needs at least 2 rows of each label"
        split_names = "seeded 'train'", "seeded 'test'"
    check_split_labels(store, train, split_names[0], "a probe needs both labels to fit",
                       fix=fix)
    check_split_labels(store, test, split_names[1], "AUROC and recall need both labels",
                       fix=fix)
    return train, test


def fit_probes(X_train: dict[tuple[HookSite, bool], np.ndarray], y_train: np.ndarray,
               sites: Sequence[HookSite], names: Sequence[str],
               probe_params: dict[str, dict[str, Any]] | None = None, bar: Any = None
               ) -> dict[tuple[str, str], tuple[BaseProbe, float]]:
    """Fit every probe in ``names`` at every site; ``X_train[site, token_level]`` holds
    the training rows. Returns ``{(str(site), name): (probe, fit seconds)}``; the
    logistic probes of all sites share one batched fit."""
    fitted: dict[tuple[str, str], tuple[BaseProbe, float]] = {}
    if "logistic" in names:
        params = (probe_params or {}).get("logistic") or {}
        proto = LogisticProbe(**params)
        start = time.perf_counter()
        W, b, mean, scale, n_iter = fit_logistic_batched(
            np.stack([X_train[s, False] for s in sites]), y_train, C=proto.C,
            max_iter=proto.max_iter, tol=proto.tol, device=proto.device)
        per_site = (time.perf_counter() - start) / len(sites)
        for i, site in enumerate(sites):
            probe = LogisticProbe.from_solution(proto.get_params(), W[i], float(b[i]),
                                                mean[i], scale[i], int(n_iter[i]))
            fitted[str(site), "logistic"] = (probe, per_site)
        if bar is not None:
            bar.update(len(sites))
    for site in sites:
        for name in names:
            if name == "logistic":
                continue
            probe = make_probe(name, (probe_params or {}).get(name))
            start = time.perf_counter()
            probe.fit(X_train[site, name in TOKEN_KINDS], y_train)
            fitted[str(site), name] = (probe, time.perf_counter() - start)
            if bar is not None:
                bar.update()
    return fitted


def score_metrics(y: np.ndarray, scores: np.ndarray, threshold: float, *, fpr: float,
                  control_scores: np.ndarray | None = None, seed: int = 0,
                  n_resamples: int = 200) -> dict[str, float]:
    """AUROC, recall and accuracy of ``scores`` on labels ``y``, with 95% bootstrap
    intervals.

    With ``control_scores`` (the negatives the threshold was calibrated on), recall at
    ``fpr`` is bootstrapped over positives and control together (the threshold is re-set
    in each replicate); without, ``threshold`` is fixed (calibrated elsewhere) and only
    the positives are resampled. ``accuracy`` and ``fpr_at_threshold`` (the share of
    ``y``'s negatives above it) use ``threshold``.
    """
    auc = bootstrap_ci(auroc, y, scores, strata=y, n_resamples=n_resamples, seed=seed)
    pos = scores[y == 1]
    if control_scores is not None:
        rec = bootstrap_ci(lambda p, c: recall_at_fpr(p, c, fpr), pos, control_scores,
                           independent=True, n_resamples=n_resamples, seed=seed)
    else:
        rec = bootstrap_ci(lambda p: float((p > threshold).mean()), pos,
                           n_resamples=n_resamples, seed=seed)
    return {"auroc": auc.estimate, "auroc_low": auc.low, "auroc_high": auc.high,
            "recall_at_fpr": rec.estimate, "recall_low": rec.low, "recall_high": rec.high,
            "accuracy": accuracy(y, scores > threshold),
            "fpr_at_threshold": float((scores[y == 0] > threshold).mean()),
            "threshold": threshold}


def sweep(store: Any, sites: Sequence[HookSite | str] | None = None,
          probes: Sequence[str] = ("logistic", "diffmeans", "lda"), control: Any = None,
          train_split: str = "train", test_split: str = "test", fpr: float = 0.01, *,
          seed: int = 0, test_fraction: float = 0.3, n_resamples: int = 200,
          probe_params: dict[str, dict[str, Any]] | None = None,
          progress: bool = False) -> SweepResult:
    """Fit each probe in ``probes`` at each site, score the test split, and tabulate.

    Everything is validated (probe names, sites, splits, labels, control set) before
    any probe is fitted. Thresholds are set on rows no probe was fitted on: the
    control store's negatives, else the test split's. ``probe_params`` maps a probe
    name to constructor arguments; ``progress`` shows a bar over fits and scorings.
    """
    names = list(dict.fromkeys(probes))
    site_list = check_request(store, sites, names, fpr, probe_params)
    train, test = train_test_rows(store, train_split, test_split, seed=seed,
                                  test_fraction=test_fraction)
    y_train = check_labels(store.labels[train])
    y_test = check_labels(store.labels[test])
    ctrl_rows = None if control is None else control_rows(control, store, site_list)

    data: dict[tuple[HookSite, bool], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for site in site_list:
        for token_level in {n in TOKEN_KINDS for n in names}:
            X = load_site(store, site, token_level)
            X_te = X[test]
            Xc = (X_te[y_test == 0] if ctrl_rows is None
                  else load_site(control, site, token_level)[ctrl_rows])
            data[site, token_level] = (X[train], X_te, Xc)

    from tqdm.auto import tqdm

    bar = tqdm(total=2 * len(site_list) * len(names), desc="probe sweep", unit="fit",
               disable=not progress, leave=False)
    fitted = fit_probes({k: v[0] for k, v in data.items()}, y_train, site_list, names,
                        probe_params, bar)
    rows = []
    for site in site_list:
        for name in names:
            probe, seconds = fitted[str(site), name]
            bar.update()
            _, X_te, X_ctrl = data[site, name in TOKEN_KINDS]
            scores, ctrl = probe.decision_function(X_te), probe.decision_function(X_ctrl)
            probe.threshold_ = threshold_at_fpr(ctrl, fpr)
            rows.append({"site": str(site), "kind": site.kind, "layer": site.layer,
                         "probe": name, **score_metrics(
                             y_test, scores, probe.threshold_, fpr=fpr, control_scores=ctrl,
                             seed=seed, n_resamples=n_resamples),
                         "fit_seconds": seconds, "n_train": len(train), "n_test": len(test),
                         "n_control": len(ctrl)})
    bar.close()
    table = pd.DataFrame(rows)
    best = table.sort_values(["recall_at_fpr", "auroc"], ascending=False, kind="stable").iloc[0]
    return SweepResult(table=table, best_site=HookSite.parse(str(best["site"])),
                       best_probe=str(best["probe"]), fpr=fpr,
                       probes={k: v[0] for k, v in fitted.items()},
                       calibration=calibration_source(store, control, test_split))


def calibration_source(store: Any, control: Any, test_split: str) -> str:
    """Which rows a sweep's thresholds were calibrated on, in words."""
    if control is not None:
        return f"the control store's negatives ({control.path})"
    seeded = all(s is None for s in store.splits)
    return (f"the negatives of the {'seeded test' if seeded else repr(test_split)} split "
            "(not trained on)")


def plot_sweep(table: pd.DataFrame, *, fpr: float = 0.01) -> Any:
    """Two panels (AUROC; recall at ``fpr``) against layer with 95% CI bands, one line
    per probe (and site kind / selection when the table has several); each probe kind
    has its fixed colour. Returns the figure."""
    from heldout.analysis.style import (
        MonitorColors,
        integer_axis,
        kind_color,
        legend_outside,
        new_figure,
    )

    fig, axes = new_figure(11, 4.2, 1, 2)
    axes = axes[0]
    keys = [k for k in ("kind", "selection") if k in table and table[k].nunique() > 1]
    styles = MonitorColors(table["selection"].astype(str) if "selection" in table else [])
    for group_key, group in table.groupby(["probe", *keys], sort=True):
        name, *extra = group_key if isinstance(group_key, tuple) else (group_key,)
        group = group.sort_values("layer")
        label = name + (f" ({', '.join(map(str, extra))})" if extra else "")
        ls = styles.style(str(group["selection"].iloc[0])) if "selection" in keys else "-"
        for ax, col, lo, hi in ((axes[0], "auroc", "auroc_low", "auroc_high"),
                                (axes[1], "recall_at_fpr", "recall_low", "recall_high")):
            ax.plot(group["layer"], group[col], marker="o", label=label, ls=ls,
                    color=kind_color(str(name)))
            ax.fill_between(group["layer"], group[lo], group[hi], alpha=0.12,
                            color=kind_color(str(name)))
    axes[0].set_ylabel("AUROC (test split)")
    axes[1].set_ylabel(f"recall at {fpr:.0%} FPR (test split)")
    for ax in axes:
        ax.set_xlabel("layer")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        integer_axis(ax.xaxis)
    legend_outside(axes[1])
    return fig
