"""Training against probes on the built-in model organism, end to end.

(The organism as an environment, with its labeler, is :mod:`heldout.organism.environment`.)

- :func:`fit_organism_probes`: logistic probes on the base organism, one file per site;
- :func:`run_pair`: a penalized run and its no-penalty control with the same probes,
  and the verdict of each;
- :func:`demo`: the whole thing at a size that runs in about two minutes on 2 cores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heldout.organism.environment import organism_checkpoint
from heldout.training.config import ProbeSpec, TrainConfig


def fit_organism_probes(out: str | os.PathLike[str], sites: list[str], *,
                        selections: tuple[str, ...] = ("last",),
                        organism: dict[str, Any] | None = None, fpr: float = 0.01,
                        progress: bool = False) -> dict[str, Path]:
    """Fit a logistic probe per (site, selection) on the base organism's ``train``
    split, calibrate it on ``control``; returns ``{"<site>/<selection>": file}``."""
    from heldout.activations import collect
    from heldout.activations.sites import HookSite
    from heldout.models import load_model, model_fingerprint
    from heldout.organism.config import OrganismConfig
    from heldout.organism.datasets import build_datasets
    from heldout.probes.io import save_probe
    from heldout.probes.linear import LogisticProbe

    model = load_model(organism_checkpoint(organism), device="cpu")
    data = build_datasets(OrganismConfig.from_dict(dict(organism or {})))
    parsed = [HookSite.parse(s) for s in sites]
    fingerprint = model_fingerprint(model)
    out_dir = Path(out)
    written: dict[str, Path] = {}
    for sel in selections:
        train, control = (collect(model, data[split], parsed, sel, batch_size=256,
                                  progress=progress)
                          for split in ("train", "control"))
        for s in parsed:
            probe = LogisticProbe().fit(train.get(s), train.labels)
            probe.calibrate(control.get(s), fpr=fpr)
            key = f"{s}/{sel}"
            file = out_dir / f"{s.key}-{sel.replace(':', '')}.safetensors"
            written[key] = save_probe(probe, file, site=s,
                                      selection=sel, model_fingerprint=fingerprint)
    return written


@dataclass(frozen=True)
class PairResult:
    """A penalized run, its control, and both verdicts."""

    run: Path
    """The penalized run folder."""
    control: Path
    """The no-penalty control run folder."""
    verdict: dict[str, Any]
    """``verdict(run, control).to_dict()``."""
    control_verdict: dict[str, Any]
    """``verdict(control, control)`` for the same probe: what drift alone does."""


def run_pair(config: TrainConfig, *, progress: bool = True, resume: bool = False
             ) -> PairResult:
    """Train ``config`` and its no-penalty control (``<out>/control``: every probe held
    out), then write ``verdict.json`` in both folders."""
    from heldout.analysis.verdict import verdict
    from heldout.training.trainer import Trainer

    if not config.against_names:
        from heldout.errors import ConfigError

        raise ConfigError("run_pair needs at least one proxy trained against",
                          fix="give a probe or text monitor role='train_against'")
    control = config.control()
    primary = list(config.against_names)
    Trainer(config, resume=resume, progress=progress).train()
    Trainer(control, resume=resume, progress=progress).train()
    main = verdict(config.out, control.out)
    base = verdict(control.out, control.out, monitors=primary)
    main.save(Path(config.out) / "verdict.json")
    base.save(Path(control.out) / "verdict.json")
    from heldout.analysis.curves import plot_run
    from heldout.analysis.headline import write_headline

    plot_run(config.out, control=control.out)
    write_headline(config.out, control.out, main)
    return PairResult(run=Path(config.out), control=Path(control.out),
                      verdict=main.to_dict(), control_verdict=base.to_dict())


DECISION = "token:5"
"""The organism's decision token (``heldout.organism.VERDICT_OFFSET``): the ``:`` that
predicts the verdict, where the lie is decided and is most linearly readable."""


def demo_config(out: str | os.PathLike[str], probe_files: dict[str, Path], *,
                against: str = f"resid_post:2/{DECISION}", weight: float = 3.0, steps: int = 150,
                eval_every: int = 50) -> TrainConfig:
    """The demo's penalized config: one probe trained against (mean-probability
    penalty, with gradient), the others held out."""
    probes = tuple(ProbeSpec(path=str(path), name=key,
                             role="train_against" if key == against else "held_out",
                             weight=weight if key == against else 0.0)
                   for key, path in probe_files.items())
    return TrainConfig(out=str(out), probes=probes, steps=steps, eval_every=eval_every,
                       checkpoint_every=eval_every, lr=3e-4, batch_size=32, n_eval=300)


def demo(out: str | os.PathLike[str], *, steps: int = 150, weight: float = 3.0,
         progress: bool = True) -> PairResult:
    """Fine-tune the organism against one probe (resid_post:2 at the decision token,
    with gradient) and against none (control); return both verdicts. Probes on
    resid_post:1-3 (decision token and response mean) watch both runs. Curves land in
    ``<out>/run/plots``; ``verdict.json`` in ``<out>/run`` and ``<out>/run/control``."""
    files = fit_organism_probes(Path(out) / "base-probes",
                                ["resid_post:1", "resid_post:2", "resid_post:3"],
                                selections=(DECISION, "mean"), progress=progress)
    return run_pair(demo_config(Path(out) / "run", files, steps=steps, weight=weight),
                    progress=progress)
