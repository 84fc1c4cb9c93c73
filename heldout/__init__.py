"""heldout: probes for misbehavior, and training against them with held-out monitors.

Importing this package is fast: TransformerLens and transformers are loaded lazily,
only by the functions that need a model.
"""

from __future__ import annotations

__version__ = "0.1.0"

from heldout.activations.sites import HookSite, parse_sites
from heldout.errors import HeldoutError

__all__ = ["HeldoutError", "HookSite", "__version__", "parse_sites"]
