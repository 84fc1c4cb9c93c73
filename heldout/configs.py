"""Shared by heldout's config dataclasses: reading one back from a JSON mapping."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from heldout.errors import ConfigError


def checked_fields(cls: Any, data: Any, what: str) -> dict[str, Any]:
    """``data`` as a dict of ``cls``'s fields; ConfigError naming any unknown field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must be a JSON object, got {type(data).__name__}",
                          fix="write it as a mapping of field names to values")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} field(s): {', '.join(unknown)}",
                          fix=f"use only {', '.join(sorted(known))}")
    return dict(data)
