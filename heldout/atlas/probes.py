"""The atlas's base probes: fitted once per grid on the base organism, reused by every run.

Each :class:`~heldout.atlas.grid.ProbeKind` is fitted on the organism's ``train`` split
(activations of the base model at its site, pooled by its selection or kept per token)
and calibrated at the grid's FPR on the ``control`` split. Files land in
``<atlas>/probes/<name>.safetensors`` with a ``manifest.json`` written last, so an
interrupted fit is redone and a finished one is reused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from heldout.atlas.grid import GridSpec, ProbeKind


def make_probe(kind: ProbeKind) -> Any:
    """An unfitted probe for ``kind``, with settings that fit in seconds on one thread."""
    from heldout.probes.attention import AttentionProbe, TokenLinearProbe
    from heldout.probes.linear import LogisticProbe
    from heldout.probes.multimax import MultiMaxProbe, RollingAttentionProbe

    if kind.kind == "logistic":
        return LogisticProbe()
    # few epochs: a grid fits every probe on one CPU thread before any run starts
    if kind.kind == "attention":
        return AttentionProbe(max_epochs=60, patience=5, random_state=0)
    if kind.kind == "multimax":
        return MultiMaxProbe(heads=4, max_epochs=60, patience=5, random_state=0)
    if kind.kind == "rolling_attention":
        return RollingAttentionProbe(window=4, max_epochs=60, patience=5, random_state=0)
    return TokenLinearProbe(aggregate="max" if kind.kind == "token_max" else "mean")


def probe_features(model: Any, dataset: Any, kinds: tuple[ProbeKind, ...]) -> dict[str, np.ndarray]:
    """``{site/selection: features}`` for every (site, selection) the kinds need:
    (n, d) for ``last``/``mean``, NaN-padded (n, tokens, d) for ``tokens``."""
    from heldout.activations import collect
    from heldout.probes.base import pad_tokens

    out: dict[str, np.ndarray] = {}
    for selection in sorted({k.selection for k in kinds}):
        sites = sorted({k.site for k in kinds if k.selection == selection})
        acts = collect(model, dataset, sites, selection, batch_size=256)
        for site in sites:
            out[f"{site}/{selection}"] = (pad_tokens(*acts.get_tokens(site))
                                          if selection == "tokens" else acts.get(site))
    return out


def fit_base_probes(spec: GridSpec, organism: Any, out: str | os.PathLike[str],
                    progress: bool = True) -> dict[str, Path]:
    """Fit (or reuse) every probe of ``spec`` on the base organism; ``{name: file}``."""
    from heldout.models import load_model, model_fingerprint
    from heldout.probes.io import save_probe

    folder = Path(out)
    manifest = folder / "manifest.json"
    if manifest.is_file():
        saved = json.loads(manifest.read_text(encoding="utf-8"))
        if saved.get("fingerprint") == spec.probes_fingerprint() and \
                saved.get("organism") == str(organism.path) and \
                all((folder / f).is_file() for f in saved["files"].values()):
            return {k: folder / f for k, f in saved["files"].items()}
    folder.mkdir(parents=True, exist_ok=True)
    model = load_model(organism.path, device="cpu")
    train = probe_features(model, organism.train, spec.probes)
    control = probe_features(model, organism.control, spec.probes)
    y = organism.train.labels
    files: dict[str, str] = {}
    metrics: dict[str, Any] = {}
    for kind in spec.probes:
        key = f"{kind.site}/{kind.selection}"
        probe = make_probe(kind).fit(train[key], y)
        probe.calibrate(control[key], fpr=spec.fpr)
        path = save_probe(probe, folder / f"{kind.name}.safetensors", site=kind.site,
                          selection=kind.selection, model_fingerprint=model_fingerprint(model))
        files[kind.name] = path.name
        metrics[kind.name] = {"threshold": float(probe.threshold_)}
        if progress:
            print(f"atlas: fitted probe {kind.name} ({kind.kind}, {key})", flush=True)
    manifest.write_text(json.dumps({"fingerprint": spec.probes_fingerprint(),
                                    "organism": str(organism.path), "files": files,
                                    "probes": metrics}, indent=2) + "\n", encoding="utf-8")
    return {k: folder / f for k, f in files.items()}
