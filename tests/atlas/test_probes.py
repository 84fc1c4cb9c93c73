"""The atlas's probe kinds map to fitted per-token probes that read ``tokens``."""

from __future__ import annotations

import numpy as np
import pytest

from heldout.analysis.metrics import auroc
from heldout.atlas.grid import ProbeKind
from heldout.atlas.probes import make_probe
from heldout.probes import MultiMaxProbe, RollingAttentionProbe


@pytest.mark.parametrize("kind, cls", [("multimax", MultiMaxProbe),
                                       ("rolling_attention", RollingAttentionProbe)])
def test_max_pooled_kinds_make_fitted_token_probes(kind, cls) -> None:  # type: ignore[no-untyped-def]
    spec = ProbeKind("x", "resid_post:1", kind)
    assert spec.selection == "tokens"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 10, 8)).astype(np.float32)
    y = rng.integers(0, 2, 300)
    X[np.flatnonzero(y), rng.integers(0, 6, int(y.sum())), 0] += 4.0  # one marked token
    X[:150, 6:] = np.nan
    probe = make_probe(spec)
    assert type(probe) is cls and probe.token_level and type(probe).kind == kind
    probe.fit(X[:200], y[:200]).calibrate(X[200:][y[200:] == 0], fpr=0.05)
    assert auroc(y[200:], probe.decision_function(X[200:])) > 0.9
    assert np.isfinite(probe.threshold_)
