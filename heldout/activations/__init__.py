"""Hook sites, the activation cache, in-memory collection and the on-disk store."""

from __future__ import annotations

# Imported eagerly, not through a lazy table: the submodule ``collect`` shares its name
# with the function, and importing the submodule anywhere would otherwise leave
# ``heldout.activations.collect`` bound to the module. ``collect.py`` loads torch only
# when called, so this import stays light.
from heldout.activations.collect import Activations, collect
from heldout.activations.sites import HookSite, parse_sites

__all__ = ["Activations", "HookSite", "collect", "parse_sites"]
