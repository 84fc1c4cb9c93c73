"""The top-level API: every name in ``heldout.__all__`` resolves (lazily for the heavy ones)."""

from __future__ import annotations

import pytest

import heldout


@pytest.mark.parametrize("name", heldout.__all__)
def test_public_names_resolve(name: str) -> None:
    assert getattr(heldout, name) is not None


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        heldout.nope  # noqa: B018
