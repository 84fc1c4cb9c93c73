"""``module:attribute`` references from configs, imported with clear errors."""

from __future__ import annotations

import importlib
from typing import Any

from heldout.errors import ConfigError


def import_object(reference: str, what: str) -> Any:
    """The object named by ``"package.module:attribute"`` (attribute may be dotted).

    ConfigError naming the part that failed: the format, the module, or the attribute.
    """
    if not isinstance(reference, str) or reference.count(":") != 1 \
            or not all(reference.split(":")):
        raise ConfigError(f"{what} {reference!r} is not of the form 'module:attribute'",
                          fix="write it as 'package.module:name'")
    module_name, attr_path = reference.split(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{what} {reference!r}: module {module_name!r} cannot be imported "
                          f"({type(err).__name__}: {err})",
                          fix="check the module name and that its folder is on the Python "
                              "path (PYTHONPATH, or install the package)") from err
    parts = attr_path.split(".")
    for i, part in enumerate(parts):
        if not hasattr(obj, part):
            where = ".".join([module_name, *parts[:i]])
            raise ConfigError(f"{what} {reference!r}: module {module_name!r} was imported, "
                              f"but {where!r} has no attribute {part!r}",
                              fix="check the name after the ':'")
        obj = getattr(obj, part)
    return obj
