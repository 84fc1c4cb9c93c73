"""Probes for an environment: fitted on one draw of its sets, calibrated on another.

A run's probes must not have seen the prompts the run evaluates on, and a probe's
threshold must not come from rows it was fitted on (a threshold set on its own
training negatives flags far more than its nominal FPR on new ones). So the probes are
fitted on the teacher-forced ``eval`` set of one seed's environment and calibrated on
the honest ``control`` answers of another seed's, minus any prompt the fit set holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from heldout.environments.base import Environment
from heldout.errors import DataError


def fresh_rows(calibrate_on: Environment, fit_on: Environment) -> list[Any]:
    """The control examples of ``calibrate_on`` whose prompt and group (e.g. the city a
    statement is about) ``fit_on.eval`` lacks."""
    seen = {repr(e.messages if e.messages is not None else e.prompt) for e in fit_on.eval}
    groups = {e.group for e in fit_on.eval if e.group is not None}
    return [e for e in calibrate_on.control
            if repr(e.messages if e.messages is not None else e.prompt) not in seen
            and (e.group is None or e.group not in groups)]


def fit_environment_probes(model: Any, make_environment: Callable[[int], Environment],
                           sites: Mapping[str, tuple[str, str]],
                           out: str | os.PathLike[str], *, fit_seed: int = 101,
                           calibration_seed: int = 102, fpr: float = 0.01,
                           batch_size: int = 16) -> dict[str, Path]:
    """Fit a logistic probe per named ``(site, selection)`` and save it under ``out``.

    model : a TransformerBridge (``heldout.models.load_model``).
    make_environment : ``seed -> Environment``; called with ``fit_seed`` (probes fit on
        its ``eval`` set) and ``calibration_seed`` (thresholds at ``fpr`` on its
        ``control`` answers to prompts the fit set lacks). Use seeds no run uses.
    Returns ``{name: probe file}``; each file records the calibration rows.
    """
    from heldout.activations import collect
    from heldout.activations.sites import HookSite
    from heldout.data import Dataset
    from heldout.models import model_fingerprint
    from heldout.probes.io import save_probe
    from heldout.probes.linear import LogisticProbe

    if fit_seed == calibration_seed:
        raise DataError("the fit and calibration seeds are equal, so the threshold would "
                        "come from the rows the probe was fitted on",
                        fix="pass two different seeds")
    fit_on, calibrate_on = make_environment(fit_seed), make_environment(calibration_seed)
    control = Dataset(tuple(fresh_rows(calibrate_on, fit_on)))
    if len(control) < 10:
        raise DataError(f"only {len(control)} calibration rows are left after removing the "
                        "fit set's prompts", fix="draw more evaluation prompts")
    parsed = {name: (HookSite.parse(site), selection) for name, (site, selection)
              in sites.items()}
    fingerprint = model_fingerprint(model)
    written: dict[str, Path] = {}
    out_dir = Path(out)
    for name, (site, selection) in parsed.items():
        fit, calib = (collect(model, data, [site], selection, batch_size=batch_size)
                      for data in (fit_on.eval, control))
        probe = LogisticProbe().fit(fit.get(site), fit.labels)
        probe.calibrate(calib.get(site), fpr=fpr)
        note = (f"threshold at {fpr:.1%} FPR from {len(control)} honest answers "
                f"(seed {calibration_seed}) to prompts not in the fit set (seed {fit_seed})")
        file = out_dir / f"{name.replace(' ', '-')}.safetensors"
        written[name] = save_probe(probe, file, site=site, selection=selection,
                                   model_fingerprint=fingerprint, calibration=note)
    return written
