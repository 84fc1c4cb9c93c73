"""Fit probes on one store and score them on others: does a probe trained on one
dataset read the same property in another (e.g. cities -> animals true/false)?

Every probe kind at every site is fitted on the train store's train split (the same
code as :func:`~heldout.probes.sweep.sweep`: seeded, group-aware when there is no split
column), and its threshold is calibrated at ``fpr`` on rows no probe was fitted on: the
control store's negatives, else the train store's test-split negatives. Each test store
is then scored on all its rows with that threshold fixed: AUROC (no threshold),
accuracy, recall, and the false-positive rate the threshold actually gives there. The
train store's own test split is the in-distribution row, for comparison.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from heldout.activations.sites import HookSite
from heldout.analysis.metrics import threshold_at_fpr
from heldout.errors import ConfigError, DataError, StoreError
from heldout.probes.base import BaseProbe, check_labels
from heldout.probes.sweep import (
    TOKEN_KINDS,
    calibration_source,
    check_matching_store,
    check_request,
    control_rows,
    fit_probes,
    load_site,
    score_metrics,
    train_test_rows,
)

IN_DISTRIBUTION = " (test split)"
"""Suffix of the train store's name in the ``test`` column of its own test split."""


@dataclass(frozen=True)
class TransferResult:
    """The outcome of :func:`transfer`."""

    table: pd.DataFrame
    """One row per (site, probe, test set): site, kind, layer, probe, test (a test
    store's name, or the train store's name + " (test split)"), in_distribution,
    auroc, auroc_low, auroc_high, recall_at_fpr, recall_low, recall_high, accuracy,
    fpr_at_threshold (that set's negatives above the threshold), threshold, n_test."""
    fpr: float
    """False-positive rate the thresholds were calibrated at."""
    calibration: str
    """Which rows the thresholds were calibrated on (never rows a probe was fitted on)."""
    probes: dict[tuple[str, str], BaseProbe] = field(repr=False)
    """Fitted probes by ``(str(site), probe name)``, each with ``threshold_`` set."""

    def plot(self) -> Any:
        """AUROC against layer, one line per (probe, test set): a matplotlib figure."""
        from heldout.analysis.plots import plot_transfer

        return plot_transfer(self.table, fpr=self.fpr)


def store_name(store: Any) -> str:
    """A store's name in tables and plots: its folder's name."""
    return Path(store.path).name


def check_test_stores(train_store: Any, test_stores: Mapping[str, Any] | Sequence[Any],
                      sites: Sequence[HookSite]) -> dict[str, Any]:
    """Test stores by name, each checked against ``train_store``: same model, d_model,
    selection, the sites, both labels (StoreError / DataError before any fitting)."""
    named = (dict(test_stores) if isinstance(test_stores, Mapping)
             else {store_name(s): s for s in test_stores})
    if not named:
        raise ConfigError("no test stores were given", fix="pass at least one test store")
    if len(named) != len(test_stores):
        raise ConfigError("two test stores share a folder name",
                          fix="give them distinct names (pass a {name: store} mapping)")
    model = train_store.manifest.get("model_fingerprint")
    for name, store in named.items():
        what = f"test store {name!r}"
        if store.manifest.get("model_fingerprint") != model:
            raise StoreError(f"{what} comes from another model (fingerprint "
                             f"{store.manifest.get('model_fingerprint')} vs {model})",
                             fix="cache every store with the model the probes read")
        check_matching_store(store, train_store, sites, what,
                             fix="cache it with the same model and selection")
        if len(np.unique(store.labels)) == 1:
            raise DataError(f"{what} holds only label {store.labels[0]} (n={store.n_rows}): "
                            "AUROC and recall need both labels",
                            fix="use a test set with both misbehavior (1) and benign (0) "
                                "examples")
        check_labels(store.labels)
    return named


def transfer(train_store: Any, test_stores: Mapping[str, Any] | Sequence[Any],
             sites: Sequence[HookSite | str] | None = None,
             probes: Sequence[str] = ("logistic", "diffmeans", "lda"), control: Any = None,
             train_split: str = "train", test_split: str = "test", fpr: float = 0.01, *,
             seed: int = 0, test_fraction: float = 0.3, n_resamples: int = 200,
             probe_params: dict[str, dict[str, Any]] | None = None,
             progress: bool = False) -> TransferResult:
    """Fit each probe at each site on ``train_store``; score its test split and every
    store in ``test_stores`` (a list, named by folder, or ``{name: store}``).

    Everything (probe names, sites, splits, labels, control and test stores) is checked
    before any probe is fitted.
    """
    names = list(dict.fromkeys(probes))
    site_list = check_request(train_store, sites, names, fpr, probe_params)
    named = check_test_stores(train_store, test_stores, site_list)
    train, test = train_test_rows(train_store, train_split, test_split, seed=seed,
                                  test_fraction=test_fraction)
    y_train = check_labels(train_store.labels[train])
    y_test = check_labels(train_store.labels[test])
    ctrl_rows = None if control is None else control_rows(control, train_store, site_list)
    levels = {n in TOKEN_KINDS for n in names}

    from tqdm.auto import tqdm

    bar = tqdm(total=len(site_list) * len(names), desc="transfer", unit="fit",
               disable=not progress, leave=False)
    X = {(s, t): load_site(train_store, s, t) for s in site_list for t in levels}
    fitted = fit_probes({k: v[train] for k, v in X.items()}, y_train, site_list, names,
                        probe_params, bar)
    bar.close()
    home = store_name(train_store) + IN_DISTRIBUTION
    rows = []
    for site in site_list:
        for token_level in levels:
            sets = {home: (X[site, token_level][test], y_test)}
            sets.update({name: (load_site(store, site, token_level), store.labels)
                         for name, store in named.items()})
            ctrl_X = (X[site, token_level][test][y_test == 0] if ctrl_rows is None
                      else load_site(control, site, token_level)[ctrl_rows])
            for name in names:
                if (name in TOKEN_KINDS) != token_level:
                    continue
                probe = fitted[str(site), name][0]
                ctrl = probe.decision_function(ctrl_X)
                probe.threshold_ = threshold_at_fpr(ctrl, fpr)
                for test_name, (X_set, y_set) in sets.items():
                    inside = test_name == home
                    metrics = score_metrics(
                        y_set, probe.decision_function(X_set), probe.threshold_, fpr=fpr,
                        control_scores=ctrl if inside else None, seed=seed,
                        n_resamples=n_resamples)
                    rows.append({"site": str(site), "kind": site.kind, "layer": site.layer,
                                 "probe": name, "test": test_name, "in_distribution": inside,
                                 **metrics, "n_test": len(y_set)})
    table = pd.DataFrame(rows).sort_values(["probe", "test", "kind", "layer"], kind="stable")
    return TransferResult(table=table.reset_index(drop=True), fpr=fpr,
                          calibration=calibration_source(train_store, control, test_split),
                          probes={k: v[0] for k, v in fitted.items()})
