"""``module:attribute`` references from configs, imported with clear errors."""

from __future__ import annotations

import importlib
from typing import Any

from heldout.errors import ConfigError


def import_object(reference: str, what: str) -> Any:
    """The object named by ``"package.module:attribute"`` (attribute may be dotted).

    ConfigError naming the part that failed: the format, the module, or the attribute.
    """
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{what} {reference!r} is not of the form 'module:attribute'",
                          fix="write e.g. 'mypackage.labels:my_labeler'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{what} {reference!r}: module {module_name!r} cannot be imported "
                          f"({err})", fix="put the module on the Python path (pip install -e "
                                          "your package, or set PYTHONPATH)") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what} {reference!r}: {module_name!r} has no attribute {attr!r}",
                              fix="check the name after the ':'")
        obj = getattr(obj, part)
    return obj
