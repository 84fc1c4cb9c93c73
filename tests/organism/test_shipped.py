"""Shipped organisms: installed with a checksum instead of trained, refused when
tampered with, and reproducible by retraining (the first steps, compared here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from heldout.activations.store import sha256_file
from heldout.atlas.grids import V2_ORGANISM
from heldout.errors import ModelLoadError
from heldout.organism import OrganismConfig, load_organism
from heldout.organism.config import FORMAT_VERSION
from heldout.organism.shipped import (
    install_shipped,
    read_shipped_record,
    ship,
    shipped_folder,
    verify_shipped,
)

SHIPPED_CONFIGS = [OrganismConfig(), OrganismConfig(give_in=0.5),
                   OrganismConfig(**V2_ORGANISM)]


@pytest.mark.parametrize("config", SHIPPED_CONFIGS, ids=["default", "give_in_0.5", "v2"])
def test_shipped_organisms_carry_their_config_and_checksum(config: OrganismConfig) -> None:
    folder = shipped_folder(config)
    assert folder is not None, "the organism for this config is not shipped"
    record = read_shipped_record(folder)
    assert record["config"] == config.to_dict() and record["format"] == FORMAT_VERSION
    assert record["sha256"] == sha256_file(folder / "model.safetensors")
    assert record["threads"] == 1 and "100" in record["trajectory"]


def test_a_fresh_home_installs_the_shipped_copy_without_training(tmp_path: Path) -> None:
    organism = load_organism(home=tmp_path, progress=False)
    assert organism.record["source"] == "shipped"
    shipped = shipped_folder(OrganismConfig())
    assert shipped is not None
    assert (organism.path / "model.safetensors").read_bytes() == \
        (shipped / "model.safetensors").read_bytes()
    assert organism.data_path("test").is_file()
    assert not [p for p in organism.path.parent.iterdir() if p.name.startswith(".tmp-")]
    with pytest.raises(ModelLoadError, match="installed from a shipped copy"):
        ship(organism.path, tmp_path / "elsewhere")


def test_tampered_shipped_weights_are_refused(tmp_path: Path) -> None:
    shipped = shipped_folder(OrganismConfig())
    assert shipped is not None
    copy = tmp_path / "shipped" / shipped.name
    shutil.copytree(shipped, copy)
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(weights))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ModelLoadError, match="do not match their checksum") as err:
        install_shipped(copy, dest)
    assert "retrain=True" in str(err.value)
    assert list(dest.iterdir()) == []


def test_configs_that_are_not_shipped_are_trained(tmp_path: Path) -> None:
    small = OrganismConfig(steps=20, n_pool=200, n_train=40, n_validation=20, n_test=40,
                           n_control=30, n_forced=20)
    assert shipped_folder(small) is None
    organism = load_organism(small, home=tmp_path, progress=False)
    assert organism.record["source"] == "trained" and organism.record["threads"] == 1
    with pytest.raises(ModelLoadError, match="no organism is shipped"):
        verify_shipped(small)


@pytest.mark.slow
@pytest.mark.parametrize("config", SHIPPED_CONFIGS, ids=["default", "give_in_0.5", "v2"])
def test_retraining_the_first_steps_reproduces_the_shipped_weights(
        config: OrganismConfig) -> None:
    check = verify_shipped(config)
    print(f"\n{config.give_in}: max relative difference {check.max_relative_difference:.2e}")
    assert check.ok, check
