"""CLI: ``heldout fit``, ``heldout sweep``, ``heldout transfer`` and ``heldout evaluate``.

Every command checks its inputs (store, site, probe name, labels, control set, probe
file) before fitting anything or writing any file. Heavy imports stay inside the
command functions so that ``heldout --help`` is fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _params(pairs: list[str] | None) -> dict[str, Any]:
    from heldout.errors import ConfigError

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"cannot read --param {pair!r}", fix="write --param NAME=VALUE, "
                              "e.g. --param C=0.1")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare word such as max or cuda
    return out


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("fit", help="fit one probe on one site of a store",
                              description="Fit a probe, calibrate its threshold on benign "
                                          "control examples, and save it as .safetensors.")
    p.add_argument("--store", required=True, help="activation store folder")
    p.add_argument("--site", required=True, help="e.g. resid_post:2")
    p.add_argument("--probe", default="logistic",
                   help="logistic, diffmeans, lda, mlp, attention, token_mean, token_max, "
                        "multimax, rolling_attention")
    p.add_argument("--control", default=None,
                   help="store of benign examples for the threshold (default: a seeded "
                        "slice of the training split's negatives, held out of fitting)")
    p.add_argument("--calibration-fraction", type=float, default=0.25,
                   help="without --control: the share of the training negatives held out "
                        "to set the threshold on (whole groups; default 0.25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out slice")
    p.add_argument("--out", required=True, help="probe file to write (.safetensors)")
    p.add_argument("--fpr", type=float, default=0.01, help="false-positive rate (default 0.01)")
    p.add_argument("--split", default=None,
                   help="train on this split only (default: 'train' if the store has "
                        "splits, else all rows)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="probe hyper-parameter, repeatable (e.g. --param C=0.1)")
    p.set_defaults(func=run_fit)

    p = subparsers.add_parser("sweep", help="compare probe kinds across the sites of a store",
                              description="Fit every probe kind at every site on the "
                                          "train split, score the test split. Without a "
                                          "split column the seeded split keeps each group "
                                          "on one side. Thresholds: --control's negatives, "
                                          "else the test split's (never trained on).")
    p.add_argument("--store", required=True)
    p.add_argument("--control", default=None, help="store of benign examples for thresholds")
    p.add_argument("--out", required=True, help="folder for sweep.csv and sweep.png")
    p.add_argument("--sites", default=None, help="e.g. resid_post:0-3 (default: all stored)")
    p.add_argument("--probes", default="logistic,diffmeans,lda", help="comma-separated")
    p.add_argument("--fpr", type=float, default=0.01)
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-probes", action="store_true",
                   help="also save every fitted probe under OUT/probes/")
    p.add_argument("--test-store", action="append", default=None, metavar="STORE",
                   help="also score every probe on this store (repeatable): runs "
                        "`heldout transfer` instead, writing transfer.csv/.png")
    p.set_defaults(func=run_sweep)

    p = subparsers.add_parser(
        "transfer", help="fit probes on one store, score them on other stores",
        description="Fit every probe kind at every site on the train split of --store, "
                    "calibrate each threshold on rows no probe was fitted on (--control's "
                    "negatives, else the store's test-split negatives), then score the "
                    "store's test split and every --test-store (all rows): AUROC, "
                    "accuracy, recall and the FPR the threshold gives there. Writes "
                    "OUT/transfer.csv and OUT/transfer.png (AUROC by layer).")
    p.add_argument("--store", required=True, help="store the probes are fitted on")
    p.add_argument("--test-store", required=True, action="append", metavar="STORE",
                   help="store to score the probes on (repeatable); same model, sites "
                        "and selection")
    p.add_argument("--control", default=None, help="store of benign examples for thresholds")
    p.add_argument("--out", required=True, help="folder for transfer.csv and transfer.png")
    p.add_argument("--sites", default=None, help="e.g. resid_post:6,12,17 (default: all "
                                                 "stored)")
    p.add_argument("--probes", default="logistic,diffmeans,lda", help="comma-separated")
    p.add_argument("--fpr", type=float, default=0.01)
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_transfer)

    p = subparsers.add_parser("evaluate", help="score a saved probe on a store")
    p.add_argument("--probe", required=True, help="probe file (.safetensors)")
    p.add_argument("--store", required=True)
    p.add_argument("--site", default=None, help="default: the site saved with the probe")
    p.add_argument("--split", default=None, help="evaluate this split only (default: all rows)")
    p.add_argument("--control", default=None,
                   help="benign store to recalibrate the threshold on (default: the "
                        "evaluated negatives)")
    p.add_argument("--fpr", type=float, default=0.01)
    p.add_argument("--any-model", action="store_true",
                   help="allow a store from another model than the probe's (e.g. a "
                        "fine-tuned copy: the held-out-probe use case)")
    p.add_argument("--out", default=None, help="also write the metrics as CSV here")
    p.set_defaults(func=run_evaluate)


def _open(path: str) -> Any:
    from heldout.activations.store import ActivationStore

    return ActivationStore.open(path)


def _site_in(store: Any, text: str) -> Any:
    from heldout.activations.sites import HookSite
    from heldout.errors import StoreError

    site = HookSite.parse(text)
    if site not in store.sites:
        raise StoreError(f"store {store.path} has no site {site}; it has "
                         f"{', '.join(str(s) for s in store.sites)}", fix="pick a stored site")
    return site


def _split_rows(store: Any, split: str | None, default_train: bool) -> Any:
    import numpy as np

    from heldout.errors import ConfigError

    splits = np.array(["" if s is None else s for s in store.splits])
    if split is None:
        if default_train and "train" in splits:
            return np.flatnonzero(splits == "train")
        return np.arange(store.n_rows)
    rows = np.flatnonzero(splits == split)
    if len(rows) == 0:
        raise ConfigError(f"store {store.path} has no rows in split {split!r}; it has "
                          f"{', '.join(sorted(set(splits.tolist()) - {''})) or 'no splits'}",
                          fix="name an existing split or leave --split out")
    return rows


def run_fit(args: argparse.Namespace) -> int:
    import numpy as np

    from heldout.analysis.metrics import threshold_at_fpr
    from heldout.errors import ConfigError
    from heldout.probes.base import check_labels
    from heldout.probes.io import save_probe
    from heldout.probes.linear import LinearProbe, store_chunks
    from heldout.probes.splits import calibration_holdout
    from heldout.probes.sweep import (
        check_split_labels,
        control_rows,
        load_site,
        make_probe,
    )

    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder", fix="name a file, e.g. probe.safetensors")
    if not 0 < args.fpr < 1:
        raise ConfigError(f"--fpr must be in (0, 1), got {args.fpr}", fix="use e.g. --fpr 0.01")
    probe = make_probe(args.probe, _params(args.param))
    store = _open(args.store)
    site = _site_in(store, args.site)
    rows = _split_rows(store, args.split, default_train=True)
    check_split_labels(store, rows, repr(args.split or "train"),
                       "a probe needs both labels to fit",
                       fix="give every split both labels (split the dataset stratified by "
                           "label and cache it again), or pick another split with --split")
    check_labels(store.labels[rows])
    control = _open(args.control) if args.control else None
    ctrl_rows = None if control is None else control_rows(control, store, [site])
    split_name = args.split or ("train" if "train" in store.splits else None)
    where = f"split {split_name!r}" if split_name else "the store"
    if control is None:  # calibrate on negatives held out of fitting, never on fitted rows
        rows, held = calibration_holdout(store.labels, store.groups, rows, seed=args.seed,
                                         fraction=args.calibration_fraction)
        source = f"{len(held)} held-out negatives of {where} (not trained on)"
    else:
        source = f"{len(ctrl_rows)} negatives of the control store {control.path}"
    y = check_labels(store.labels[rows])

    if isinstance(probe, LinearProbe) and store.selection != "tokens":
        probe.fit_store(store, site, rows=rows)  # streams: works for stores beyond memory
        if control is None:
            neg = np.zeros(store.n_rows, dtype=bool)
            neg[held] = True
            ctrl = np.concatenate([probe.decision_function(X)
                                   for X, _ in store_chunks(store, site, neg, 4096)()])
        else:
            ctrl = probe.decision_function(load_site(control, site, False)[ctrl_rows])
    else:
        X = load_site(store, site, probe.token_level)
        probe.fit(X[rows], y)
        ctrl = probe.decision_function(
            X[held] if control is None
            else load_site(control, site, probe.token_level)[ctrl_rows])
    probe.threshold_ = threshold_at_fpr(ctrl, args.fpr)
    path = save_probe(probe, out, site=site, selection=store.selection,
                      model_fingerprint=store.manifest.get("model_fingerprint"),
                      data_fingerprint=store.manifest.get("dataset_fingerprint"),
                      calibration=f"threshold at {args.fpr:g} FPR from {source}")
    print(f"fitted {args.probe} at {site} on {len(rows)} rows of {where}; threshold at "
          f"{args.fpr:.1%} FPR = {probe.threshold_:.4g} from {source}")
    print(f"wrote {path}")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from heldout.activations.sites import parse_sites
    from heldout.errors import ConfigError
    from heldout.probes.io import save_probe
    from heldout.probes.sweep import sweep

    if args.test_store:
        if args.save_probes:
            raise ConfigError("--save-probes is not available with --test-store",
                              fix="run `heldout sweep` without --test-store to save probes")
        return run_transfer(args)
    store = _open(args.store)
    control = _open(args.control) if args.control else None
    sites = None if args.sites is None else parse_sites(args.sites)
    probes = [p.strip() for p in args.probes.split(",") if p.strip()]
    result = sweep(store, sites, probes=probes, control=control, train_split=args.train_split,
                   test_split=args.test_split, fpr=args.fpr, seed=args.seed,
                   progress=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(out / "sweep.csv", index=False)
    from heldout.analysis.style import save_figure

    save_figure(result.plot(), out / "sweep.png")
    if args.save_probes:
        for (site, name), probe in result.probes.items():
            save_probe(probe, out / "probes" / f"{site.replace(':', '.')}-{name}.safetensors",
                       site=site, selection=store.selection,
                       model_fingerprint=store.manifest.get("model_fingerprint"),
                       data_fingerprint=store.manifest.get("dataset_fingerprint"))
    cols = ["site", "probe", "auroc", "auroc_low", "auroc_high", "recall_at_fpr",
            "recall_low", "recall_high", "accuracy", "fit_seconds"]
    print(result.table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"thresholds at {args.fpr:.1%} FPR from {result.calibration}")
    print(f"best: {result.best_probe} at {result.best_site}")
    print(f"wrote {out / 'sweep.csv'} and {out / 'sweep.png'}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from heldout.analysis import metrics
    from heldout.errors import ConfigError
    from heldout.probes.io import check_probe, load_probe
    from heldout.probes.sweep import control_rows, load_site

    probe = load_probe(args.probe)
    store = _open(args.store)
    saved_site = probe.meta_.site
    if args.site is None and saved_site is None:
        raise ConfigError(f"{args.probe} does not record its site", fix="pass --site")
    site = _site_in(store, args.site or saved_site)
    check_probe(probe, site=site, selection=store.selection, d_model=store.d_model,
                model_fingerprint=None if args.any_model
                else store.manifest.get("model_fingerprint"))
    rows = _split_rows(store, args.split, default_train=False)
    y = store.labels[rows]
    control = _open(args.control) if args.control else None
    ctrl_rows = None if control is None else control_rows(control, store, [site])

    scores = probe.decision_function(load_site(store, site, probe.token_level)[rows])
    ctrl = (scores[y == 0] if control is None else
            probe.decision_function(load_site(control, site, probe.token_level)[ctrl_rows]))
    prob = 1 / (1 + np.exp(-scores))
    row: dict[str, Any] = {"site": str(site), "probe": type(probe).kind, "n": len(y),
                           "n_pos": int(y.sum()), "auroc": metrics.auroc(y, scores),
                           "accuracy": metrics.accuracy(y, scores > 0),
                           "brier": metrics.brier_score(y, prob),
                           "ece": metrics.expected_calibration_error(y, prob),
                           f"recall_at_{args.fpr:g}_fpr":
                               metrics.recall_at_fpr(scores[y == 1], ctrl, args.fpr)}
    if hasattr(probe, "threshold_"):  # the threshold calibrated when the probe was fitted
        row["recall_at_saved_threshold"] = float((scores[y == 1] > probe.threshold_).mean())
        row["fpr_at_saved_threshold"] = float((ctrl > probe.threshold_).mean())
    table = pd.DataFrame([row])
    print(table.T.to_string(header=False, float_format=lambda v: f"{v:.4f}"))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    return 0


def run_transfer(args: argparse.Namespace) -> int:
    from heldout.activations.sites import parse_sites
    from heldout.analysis.style import save_figure
    from heldout.probes.transfer import transfer

    store = _open(args.store)
    tests = [_open(path) for path in args.test_store]
    control = _open(args.control) if args.control else None
    sites = None if args.sites is None else parse_sites(args.sites)
    probes = [p.strip() for p in args.probes.split(",") if p.strip()]
    result = transfer(store, tests, sites, probes=probes, control=control,
                      train_split=args.train_split, test_split=args.test_split,
                      fpr=args.fpr, seed=args.seed, progress=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(out / "transfer.csv", index=False)
    save_figure(result.plot(), out / "transfer.png")
    cols = ["site", "probe", "test", "auroc", "auroc_low", "auroc_high", "accuracy",
            "recall_at_fpr", "fpr_at_threshold"]
    print(result.table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"thresholds at {args.fpr:.1%} FPR from {result.calibration}")
    print(f"wrote {out / 'transfer.csv'} and {out / 'transfer.png'}")
    return 0
