"""The top-level API: every name in ``heldout.__all__`` is the object its module defines
(lazily imported for the heavy ones)."""

from __future__ import annotations

from importlib import import_module

import pytest

import heldout

NAMES = sorted(set(heldout.__all__) - {"__version__"})


@pytest.mark.parametrize("name", NAMES)
def test_public_names_are_the_objects_their_modules_define(name: str) -> None:
    value = getattr(heldout, name)
    # A mis-pointed lazy entry (or a submodule shadowing a function of the same name)
    # would give another object or a module here.
    assert value.__name__ == name and value.__module__.startswith("heldout.")
    assert getattr(import_module(value.__module__), name) is value


def test_all_lists_each_name_once() -> None:
    assert len(heldout.__all__) == len(set(heldout.__all__))


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        heldout.nope  # noqa: B018
