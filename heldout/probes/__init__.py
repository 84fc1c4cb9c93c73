"""Probes: classifiers of activations with scikit-learn's contract and torch scoring.

Names are imported lazily (PEP 562) so that ``import heldout.probes.commands`` (done
by the CLI at start-up) does not pay for torch. The sweep function is imported from
its module, ``from heldout.probes.sweep import sweep``: a package attribute named like
a submodule is replaced by that submodule as soon as it is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BaseProbe": "base", "TorchScorer": "base", "TokenTorchScorer": "base",
    "pad_tokens": "base",
    "LogisticProbe": "linear", "DiffMeansProbe": "linear", "LDAProbe": "linear",
    "fit_logistic_batched": "linear",
    "MLPProbe": "mlp",
    "AttentionProbe": "attention", "TokenLinearProbe": "attention",
    "MultiMaxProbe": "multimax", "RollingAttentionProbe": "multimax",
    "save_probe": "io", "load_probe": "io", "check_probe": "io", "ProbeMeta": "io",
    "PROBES": "io",
    "SweepResult": "sweep", "make_probe": "sweep", "plot_sweep": "sweep",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'heldout.probes' has no attribute {name!r}")
    return getattr(importlib.import_module(f"heldout.probes.{_EXPORTS[name]}"), name)
