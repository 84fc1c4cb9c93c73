"""The shipped truth sets: cities / neg_cities (heldout.datasets)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from heldout.cli import main
from heldout.datasets import cities, cities_path
from heldout.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
STATEMENT = re.compile(r"^The city of ([A-Z][A-Za-z .'-]*) is (not )?in ([A-Za-z .'-]+)\.$")


def parse(response: str) -> tuple[str, bool, str]:
    match = STATEMENT.match(response)
    assert match, f"malformed statement {response!r}"
    return match.group(1), match.group(2) is not None, match.group(3)


@pytest.mark.parametrize("negated", [False, True])
def test_files_exist_load_and_are_balanced(negated: bool) -> None:
    path = cities_path(negated)
    assert path.is_file() and path.name == ("neg_cities.jsonl" if negated else "cities.jsonl")
    data = cities(negated)
    assert len(data) == 600
    assert Counter(data.labels.tolist()) == {0: 300, 1: 300}
    assert len(set(data.ids)) == 600


@pytest.mark.parametrize("negated", [False, True])
def test_pairs_share_a_group_and_disagree(negated: bool) -> None:
    data = cities(negated)
    by_group: dict[str, list[int]] = {}
    for ex in data:
        assert ex.group is not None
        by_group.setdefault(ex.group, []).append(ex.label)
    assert len(by_group) == 300
    assert all(sorted(labels) == [0, 1] for labels in by_group.values())


@pytest.mark.parametrize("negated", [False, True])
def test_statements_are_well_formed(negated: bool) -> None:
    data = cities(negated)
    true_country: dict[str, str] = {}
    for ex in data:
        assert ex.response.isascii() and ex.prompt is None and ex.messages is None
        assert ex.split is None  # splits are drawn group-aware downstream
        city, has_not, country = parse(ex.response)
        assert has_not == negated and city == ex.group
        assert country.lower() not in city.lower()
        holds = ex.label == 0
        if holds != negated:  # the statement names the city's real country
            true_country[city] = country
    assert len(true_country) == 300
    for ex in data:  # the other row of each city names a different country
        city, _, country = parse(ex.response)
        assert (country == true_country[city]) == ((ex.label == 0) != negated)


def test_negation_flips_every_label() -> None:
    plain, negated = cities(), cities(negated=True)
    assert plain.ids == negated.ids
    assert (plain.labels == 1 - negated.labels).all()
    for a, b in zip(plain, negated):
        assert b.response == a.response.replace(" is in ", " is not in ", 1)
        assert a.group == b.group


def test_false_statements_use_countries_as_often_as_true_ones() -> None:
    countries = {label: Counter(parse(ex.response)[2] for ex in cities() if ex.label == label)
                 for label in (0, 1)}
    assert set(countries[1]) <= set(countries[0])  # no country only in false statements
    assert max(countries[0].values()) <= 10  # at most 10 cities per country


def test_bad_argument_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="negated must be True or False"):
        cities_path("yes")  # type: ignore[arg-type]


def test_build_script_rebuilds_the_shipped_bytes(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_cities.py"), "--out",
                    str(tmp_path)], check=True, capture_output=True, text=True)
    for negated in (False, True):
        shipped = cities_path(negated)
        assert (tmp_path / shipped.name).read_bytes() == shipped.read_bytes()


def test_cache_cli_reads_the_shipped_path(tmp_path: Path,
                                          tiny_checkpoints: dict[str, Path]) -> None:
    from heldout.activations.store import ActivationStore

    out = tmp_path / "store"
    assert main(["cache", "--model", str(tiny_checkpoints["gpt2"]), "--data", str(cities_path(negated=True)),
                 "--sites", "resid_post:0", "--out", str(out), "--batch-size", "64"]) == 0
    store = ActivationStore.open(out)
    data = cities(negated=True)
    assert store.n_rows == 600 and store.ids == data.ids
    assert (store.labels == data.labels).all()
    assert store.groups == [ex.group for ex in data]
