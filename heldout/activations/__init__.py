"""Hook sites, the activation cache and the on-disk activation store."""

from __future__ import annotations

from heldout.activations.sites import HookSite, parse_sites

__all__ = ["HookSite", "parse_sites"]
