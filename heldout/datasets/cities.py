"""The shipped cities / neg_cities truth sets (after Marks & Tegmark's Geometry of Truth).

Each file holds 600 statements about the 300 largest usable cities in GeoNames, two
per city: "The city of Tokyo is in Japan." and the same city in a wrong country; the
negated set says "is not in", which flips every truth value. Label 1 is a FALSE
statement (heldout's positive class is the behavior a probe detects). Each statement
is the example's ``response`` with no prompt, as ``Dataset.from_csv`` reads public
statement sets, so the ``last`` selection reads the statement's final token. A city's
two rows share its ``group``; there is no ``split`` column: draw splits group-aware.
Built by ``tools/build_cities.py``; source and license in ``README.md`` beside this file.
"""

from __future__ import annotations

from pathlib import Path

from heldout.data import Dataset
from heldout.errors import ConfigError, DataError

DATA_DIR = Path(__file__).resolve().parent / "data"
"""Where the shipped JSONL files live."""


def cities_path(negated: bool = False) -> Path:
    """Path of ``cities.jsonl`` (or ``neg_cities.jsonl`` when ``negated``), e.g. for
    ``heldout cache --data``."""
    if not isinstance(negated, bool):
        raise ConfigError(f"negated must be True or False, got {negated!r}",
                          fix="pass negated=True for the 'is not in' statements")
    path = DATA_DIR / ("neg_cities.jsonl" if negated else "cities.jsonl")
    if not path.is_file():
        raise DataError(f"the shipped dataset {str(path)!r} is missing",
                        fix="reinstall heldout, or rebuild it: python tools/build_cities.py")
    return path


def cities(negated: bool = False) -> Dataset:
    """The 600 city statements as a :class:`heldout.data.Dataset` (label 1 = false)."""
    return Dataset.from_jsonl(cities_path(negated))
