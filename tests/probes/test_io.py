"""Save/load: identical scores after a round trip; edited or foreign files refused."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from heldout.errors import ProbeError
from heldout.probes import (
    AttentionProbe,
    DiffMeansProbe,
    LDAProbe,
    LogisticProbe,
    MLPProbe,
    TokenLinearProbe,
    check_probe,
    load_probe,
    save_probe,
)
from tests.probes.conftest import planted_linear, planted_tokens

PROBES = [LogisticProbe(C=0.5), DiffMeansProbe(), LDAProbe(), MLPProbe(max_epochs=5),
          AttentionProbe(max_epochs=5), TokenLinearProbe("max")]


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: type(p).__name__)
def test_round_trip_gives_identical_scores(probe, tmp_path) -> None:  # type: ignore[no-untyped-def]
    X, y = planted_tokens(80, d=6) if probe.token_level else planted_linear(200, d=6)[:2]
    probe.fit(X, y).calibrate(X[y == 0], fpr=0.1)
    path = save_probe(probe, tmp_path / "p.safetensors", site="resid_post:2",
                      selection="last", model_fingerprint="m1", data_fingerprint="d1")
    assert [p.name for p in tmp_path.iterdir()] == ["p.safetensors"]  # no temp file left
    loaded = load_probe(path)
    assert type(loaded) is type(probe) and loaded.get_params() == probe.get_params()
    np.testing.assert_array_equal(loaded.decision_function(X), probe.decision_function(X))
    assert loaded.threshold_ == probe.threshold_
    assert loaded.meta_.site == "resid_post:2" and loaded.meta_.model_fingerprint == "m1"


@pytest.fixture()
def saved(tmp_path):  # type: ignore[no-untyped-def]
    X, y, _ = planted_linear(200, d=6)
    return save_probe(LogisticProbe().fit(X, y), tmp_path / "p.safetensors",
                      site="resid_post:2", selection="last", model_fingerprint="m1")


def test_edited_tensor_is_detected(saved) -> None:  # type: ignore[no-untyped-def]
    data = bytearray(saved.read_bytes())
    data[-3] ^= 0xFF  # flip bits in the last tensor's bytes
    saved.write_bytes(bytes(data))
    with pytest.raises(ProbeError, match="modified after it was written"):
        load_probe(saved)


def test_edited_metadata_and_foreign_files_are_refused(saved, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from safetensors import safe_open

    with safe_open(str(saved), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["heldout"])
    tensors["coef"] = tensors["coef"] * 2  # a "fixed up" probe with stale checksum
    save_file(tensors, str(saved), metadata={"heldout": json.dumps(meta)})
    with pytest.raises(ProbeError, match="checksum"):
        load_probe(saved)
    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, str(other))
    with pytest.raises(ProbeError, match="not a heldout probe"):
        load_probe(other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(64))
    with pytest.raises(ProbeError, match="not a readable safetensors"):
        load_probe(junk)
    with pytest.raises(ProbeError, match="no probe file"):
        load_probe(tmp_path / "missing.safetensors")


def test_check_probe_against_site_and_model(saved) -> None:  # type: ignore[no-untyped-def]
    probe = load_probe(saved)
    check_probe(probe, site="resid_post:2", selection="last", model_fingerprint="m1", d_model=6)
    with pytest.raises(ProbeError, match="site 'resid_post:2'"):
        check_probe(probe, site="resid_post:3")
    with pytest.raises(ProbeError, match="model 'm1'"):
        check_probe(probe, model_fingerprint="m2")
    with pytest.raises(ProbeError, match="expecting 6 features"):
        check_probe(probe, d_model=8)


def test_unfitted_probe_is_not_saved(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from heldout.errors import NotFittedError

    with pytest.raises(NotFittedError):
        save_probe(LogisticProbe(), tmp_path / "p.safetensors")
    assert not list(tmp_path.iterdir())
