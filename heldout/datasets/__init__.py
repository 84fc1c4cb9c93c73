"""Small public datasets shipped with heldout (no download, no extra package at run
time). See ``README.md`` in this folder for each set's source and license."""

from heldout.datasets.cities import cities, cities_path

__all__ = ["cities", "cities_path"]
