"""heldout: probes for misbehavior, and training against them with held-out monitors.

Importing this package is fast: torch, TransformerLens and transformers load lazily,
the first time a name that needs them is used (``heldout.load_model``, ...).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

from heldout.activations.sites import HookSite, parse_sites
from heldout.errors import HeldoutError
from heldout.threads import default_environment

default_environment()  # one torch/BLAS thread unless chosen otherwise (heldout.threads)

# name -> module that defines it, imported on first use
_LAZY = {
    "load_model": "heldout.models",
    "Dataset": "heldout.data",
    "Example": "heldout.data",
    "load_dataset": "heldout.data",
    "cache_activations": "heldout.activations.cache",
    "collect": "heldout.activations.collect",
    "ActivationStore": "heldout.activations.store",
    "load_probe": "heldout.probes.io",
    "save_probe": "heldout.probes.io",
    "load_organism": "heldout.organism",
    "verdict": "heldout.analysis.verdict",
}

__all__ = ["HeldoutError", "HookSite", "__version__", "parse_sites", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'heldout' has no attribute {name!r}")
