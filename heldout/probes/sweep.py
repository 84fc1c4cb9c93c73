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
    auroc,
    bootstrap_ci,
    recall_at_fpr,
    threshold_at_fpr,
)
from heldout.errors import ConfigError, DataError, StoreError
from heldout.probes.base import BaseProbe, check_finite, check_labels, pad_tokens
from heldout.probes.io import PROBES
from heldout.probes.linear import LogisticProbe, fit_logistic_batched

TOKEN_KINDS = ("attention", "token_mean", "token_max")
"""Sweep names of the per-token probes (usable on ``tokens`` stores only)."""


@dataclass(frozen=True)
class SweepResult:
    """The outcome of :func:`sweep`."""

    table: pd.DataFrame
    """One row per (site, probe): site, layer, probe, auroc, auroc_low, auroc_high,
    recall_at_fpr, recall_low, recall_high, threshold, fit_seconds, n_train, n_test,
    n_control."""
    best_site: HookSite
    """Site of the best row: highest recall at ``fpr``, ties broken by AUROC."""
    best_probe: str
    """Probe name of the best row."""
    fpr: float
    """False-positive rate the thresholds were set at."""
    probes: dict[tuple[str, str], BaseProbe] = field(repr=False)
    """Fitted probes by ``(str(site), probe name)``, each with ``threshold_`` set."""

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
    none, by a seeded partition stratified by label."""
    splits = list(store.splits)
    if all(s is None for s in splits):
        rng = np.random.default_rng(seed)
        test = np.zeros(store.n_rows, dtype=bool)
        for c in np.unique(store.labels):
            idx = rng.permutation(np.flatnonzero(store.labels == c))
            test[idx[: int(round(len(idx) * test_fraction))]] = True
        return np.flatnonzero(~test), np.flatnonzero(test)
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


def control_rows(control: Any, store: Any, sites: Sequence[HookSite]) -> np.ndarray:
    if control.d_model != store.d_model or control.selection != store.selection:
        raise StoreError("the control store does not match the store (d_model "
                         f"{control.d_model} vs {store.d_model}, selection "
                         f"{control.selection!r} vs {store.selection!r})",
                         fix="cache the control set with the same model and selection")
    missing = [str(s) for s in sites if s not in control.sites]
    if missing:
        raise StoreError(f"the control store lacks site(s) {', '.join(missing)}",
                         fix="cache the control set at the same sites")
    rows = np.flatnonzero(control.labels == 0)
    if len(rows) == 0:
        raise DataError("the control store has no benign (label 0) rows to set a "
                        "threshold on", fix="use a control set of benign examples")
    return rows


def sweep(store: Any, sites: Sequence[HookSite | str] | None = None,
          probes: Sequence[str] = ("logistic", "diffmeans", "lda"), control: Any = None,
          train_split: str = "train", test_split: str = "test", fpr: float = 0.01, *,
          seed: int = 0, test_fraction: float = 0.3, n_resamples: int = 200,
          probe_params: dict[str, dict[str, Any]] | None = None,
          progress: bool = False) -> SweepResult:
    """Fit each probe in ``probes`` at each site, score the test split, and tabulate.

    Everything is validated (probe names, sites, splits, labels, control set) before
    any probe is fitted. ``probe_params`` maps a probe name to constructor arguments;
    ``progress`` shows a bar over (site, probe) fits and scorings.
    """
    names = list(dict.fromkeys(probes))
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
    fitted: dict[tuple[str, str], tuple[BaseProbe, float]] = {}
    if "logistic" in names:
        params = (probe_params or {}).get("logistic") or {}
        proto = LogisticProbe(**params)
        start = time.perf_counter()
        W, b, mean, scale, n_iter = fit_logistic_batched(
            np.stack([data[s, False][0] for s in site_list]), y_train, C=proto.C,
            max_iter=proto.max_iter, tol=proto.tol, device=proto.device)
        per_site = (time.perf_counter() - start) / len(site_list)
        for i, site in enumerate(site_list):
            probe = LogisticProbe.from_solution(proto.get_params(), W[i], float(b[i]),
                                                mean[i], scale[i], int(n_iter[i]))
            fitted[str(site), "logistic"] = (probe, per_site)
        bar.update(len(site_list))
    for site in site_list:
        for name in names:
            if name == "logistic":
                continue
            probe = make_probe(name, (probe_params or {}).get(name))
            start = time.perf_counter()
            probe.fit(data[site, name in TOKEN_KINDS][0], y_train)
            fitted[str(site), name] = (probe, time.perf_counter() - start)
            bar.update()

    rows = []
    for site in site_list:
        for name in names:
            probe, seconds = fitted[str(site), name]
            bar.update()
            _, X_te, X_ctrl = data[site, name in TOKEN_KINDS]
            scores, ctrl = probe.decision_function(X_te), probe.decision_function(X_ctrl)
            probe.threshold_ = threshold_at_fpr(ctrl, fpr)
            auc = bootstrap_ci(auroc, y_test, scores, strata=y_test, n_resamples=n_resamples,
                               seed=seed)
            rec = bootstrap_ci(lambda p, c: recall_at_fpr(p, c, fpr), scores[y_test == 1],
                               ctrl, independent=True, n_resamples=n_resamples, seed=seed)
            rows.append({"site": str(site), "kind": site.kind, "layer": site.layer,
                         "probe": name, "auroc": auc.estimate, "auroc_low": auc.low,
                         "auroc_high": auc.high, "recall_at_fpr": rec.estimate,
                         "recall_low": rec.low, "recall_high": rec.high,
                         "threshold": probe.threshold_, "fit_seconds": seconds,
                         "n_train": len(train), "n_test": len(test), "n_control": len(ctrl)})
    bar.close()
    table = pd.DataFrame(rows)
    best = table.sort_values(["recall_at_fpr", "auroc"], ascending=False, kind="stable").iloc[0]
    return SweepResult(table=table, best_site=HookSite.parse(str(best["site"])),
                       best_probe=str(best["probe"]), fpr=fpr,
                       probes={k: v[0] for k, v in fitted.items()})


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
    axes[1].set_ylabel(f"recall at {fpr:.0%} FPR on control")
    for ax in axes:
        ax.set_xlabel("layer")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        integer_axis(ax.xaxis)
    legend_outside(axes[1])
    return fig
