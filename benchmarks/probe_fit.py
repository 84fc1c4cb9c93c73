"""Probe fitting speed and memory, against scikit-learn measured in the same run.

Prints three ratios (goal in brackets):
  1. LogisticProbe fit time / sklearn LogisticRegression fit time, same data, same C,
     at |ΔAUROC| <= 0.002                                                   [<= 1.0]
  2. a loop of 8 sklearn fits (one per layer) / one batched 8-layer logistic fit
     (the sweep's path)                                                     [>= 3.0]
  3. peak memory growth of an out-of-core LogisticProbe.fit_store / store size, with
     the store 4x a memory cap the fit is sized to                          [<= 0.25]

Usage: ``python benchmarks/probe_fit.py [--quick]`` (default run: about 1-2 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_layers(n: int, d: int, n_layers: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Activations of shape (n_layers, n, d): correlated noise plus a label direction
    whose strength grows with depth, as in a real residual stream."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    out = np.empty((n_layers, n, d), dtype=np.float32)
    for layer in range(n_layers):
        u = rng.normal(size=d)
        u /= np.linalg.norm(u)
        shift = 0.3 + 0.15 * layer
        out[layer] = (rng.normal(size=(n, d)) @ mix + np.outer(2 * y - 1, u) * shift
                      + rng.normal(size=d) * 2)
    return out, y


def best_time(fn, repeat: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    best, result = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def sklearn_fit(X: np.ndarray, y: np.ndarray, C: float):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # the same model as LogisticProbe: standardize, then L2 logistic regression (lbfgs)
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000)).fit(X, y)


def bench_single(n: int, d: int, C: float, repeat: int) -> None:
    from sklearn.metrics import roc_auc_score

    from heldout.probes import LogisticProbe

    X, y = make_layers(2 * n, d, 1, seed=1)
    X = X[0]
    tr, te = slice(0, n), slice(n, None)
    with warnings.catch_warnings():  # a deliberately short warm-up (torch start-up)
        warnings.simplefilter("ignore")
        LogisticProbe(C=C, max_iter=5).fit(X[:200], y[:200])
    t_ours, ours = best_time(lambda: LogisticProbe(C=C).fit(X[tr], y[tr]), repeat)
    t_sk, sk = best_time(lambda: sklearn_fit(X[tr], y[tr], C), repeat)
    auc_ours = roc_auc_score(y[te], ours.decision_function(X[te]))  # type: ignore[attr-defined]
    auc_sk = roc_auc_score(y[te], sk.decision_function(X[te]))  # type: ignore[attr-defined]
    print(f"[1] logistic, n={n} d={d} C={C}: heldout {t_ours:.3f} s "
          f"({ours.n_iter_} L-BFGS iters), sklearn {t_sk:.3f} s")  # type: ignore[attr-defined]
    print(f"    AUROC heldout {auc_ours:.4f}, sklearn {auc_sk:.4f}, "
          f"|dAUROC| = {abs(auc_ours - auc_sk):.4f} (goal <= 0.002)")
    print(f"    ratio heldout/sklearn = {t_ours / t_sk:.2f} (goal <= 1.0)")


def bench_sweep(n: int, d: int, n_layers: int, C: float, repeat: int) -> None:
    from sklearn.metrics import roc_auc_score

    from heldout.probes import fit_logistic_batched

    Xs, y = make_layers(2 * n, d, n_layers, seed=2)
    tr, te = slice(0, n), slice(n, None)
    # the (n_sites, n, d) training stack, contiguous as sweep() builds it with np.stack
    X_train = np.ascontiguousarray(Xs[:, tr])
    with warnings.catch_warnings():  # a deliberately short warm-up
        warnings.simplefilter("ignore")
        fit_logistic_batched(X_train[:, :200], y[:200], C=C, max_iter=3)
    t_ours, (W, b, mean, scale, n_iter) = best_time(  # type: ignore[misc]
        lambda: fit_logistic_batched(X_train, y[tr], C=C), repeat)
    t_sk, models = best_time(lambda: [sklearn_fit(X, y[tr], C) for X in X_train], repeat)
    t_torch = torch_path_time(X_train, y[tr], C, repeat)
    gaps = []
    for i, model in enumerate(models):  # type: ignore[attr-defined]
        ours = ((Xs[i, te] - mean[i]) / scale[i]) @ W[i] + b[i]
        gaps.append(abs(roc_auc_score(y[te], ours)
                        - roc_auc_score(y[te], model.decision_function(Xs[i, te]))))
    print(f"[2] sweep of {n_layers} layers, n={n} d={d}: batched heldout {t_ours:.3f} s, "
          f"loop of sklearn fits {t_sk:.3f} s; max |dAUROC| {max(gaps):.4f}")
    sk_iter = [int(model[-1].n_iter_[0]) for model in models]  # type: ignore[attr-defined]
    print(f"    L-BFGS iterations per layer: heldout {n_iter.tolist()} (sum {n_iter.sum()}), "
          f"sklearn {sk_iter} (sum {sum(sk_iter)})")
    print(f"    speed-up sklearn loop / batched = {t_sk / t_ours:.2f}x (goal >= 3x)")
    if t_torch is not None:
        print(f"    (the same solver on torch CPU tensors, its CUDA code path: {t_torch:.3f} s; "
              f"heldout runs it on numpy arrays on CPU)")


def torch_path_time(X: np.ndarray, y: np.ndarray, C: float, repeat: int) -> float | None:
    """The sweep's solver on CPU torch tensors, the code path CUDA takes; None on a GPU
    machine, where the batched fit above already ran it."""
    import torch

    from heldout.probes import batched, lbfgs

    if torch.cuda.is_available():
        return None
    Xt = torch.as_tensor(X)
    sign = torch.as_tensor(2.0 * y - 1.0, dtype=torch.float32)
    cpu = torch.device("cpu")
    with lbfgs.one_blas_thread():
        seconds, _ = best_time(lambda: batched._fit_stack(Xt, sign, C, 100, 1e-4, cpu), repeat)
    return seconds


CHILD = r"""
import json, resource, sys, threading, time
import numpy as np
from heldout.activations.store import ActivationStore
from heldout.probes import LogisticProbe

def field(name):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    return 0

store = ActivationStore.open(sys.argv[1])
site, chunk_rows = store.sites[0], int(sys.argv[2])
import torch; torch.set_num_threads(int(sys.argv[3]))
LogisticProbe(max_iter=2).fit(np.random.default_rng(0).normal(size=(64, 8)),
                              np.arange(64) % 2)  # warm torch up before the baseline
base_rss, base_anon = field("VmRSS"), field("RssAnon")
peak = {"rss": base_rss, "anon": base_anon}
done = False
def sample():
    while not done:
        peak["rss"] = max(peak["rss"], field("VmRSS"))
        peak["anon"] = max(peak["anon"], field("RssAnon"))
        time.sleep(0.002)
thread = threading.Thread(target=sample, daemon=True); thread.start()
start = time.perf_counter()
probe = LogisticProbe(max_iter=30).fit_store(store, site, chunk_rows=chunk_rows)
seconds = time.perf_counter() - start
done = True; thread.join()
print(json.dumps({"rss": peak["rss"] - base_rss, "anon": peak["anon"] - base_anon,
                  "seconds": seconds, "n_iter": probe.n_iter_}))
"""


def bench_out_of_core(cap_mib: int, d: int, threads: int) -> None:
    from heldout.activations.sites import HookSite
    from heldout.activations.store import write_store

    store_bytes = 4 * cap_mib * 2**20
    n = store_bytes // (4 * d)
    chunk_rows = max(256, (cap_mib * 2**20 // 16) // (4 * d))  # a chunk is cap/16
    with tempfile.TemporaryDirectory() as tmp:
        X, y = make_layers(n, d, 1, seed=3)
        site = HookSite("resid_post", 0)
        write_store(Path(tmp) / "big", {site: X[0]}, y, shard_rows=chunk_rows * 2)
        del X
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        out = subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / "big"),
                              str(chunk_rows), str(threads)], env=env, check=True, capture_output=True,
                             text=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
    mib = 2**20
    print(f"[3] out-of-core fit: store {store_bytes / mib:.0f} MiB ({n} x {d} float32) = 4x a "
          f"{cap_mib} MiB cap; chunks of {chunk_rows} rows; {res['n_iter']} L-BFGS iters "
          f"in {res['seconds']:.1f} s")
    print(f"    peak RSS growth {res['rss'] / mib:.1f} MiB (anonymous memory "
          f"{res['anon'] / mib:.1f} MiB)")
    print(f"    peak RSS growth / store size = {res['rss'] / store_bytes:.3f} (goal <= 0.25)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for both torch and sklearn's BLAS (default 1: "
                             "stable timings on a shared machine)")
    args = parser.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"threads: {args.threads} (torch and BLAS); heldout device: {device}")
    if args.quick:
        bench_single(4000, 64, 1.0, 1)
        bench_sweep(2000, 64, 8, 1.0, 1)
        bench_out_of_core(16, 256, args.threads)
    else:
        bench_single(20000, 256, 1.0, 3)
        bench_sweep(10000, 256, 8, 1.0, 2)
        bench_out_of_core(64, 512, args.threads)


if __name__ == "__main__":
    main()
