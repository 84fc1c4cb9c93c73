"""Run a grid: every arm × seed on the organism, resumable; finished runs are not redone.

Folder layout (``out``)::

    grid.json                      the spec that was run (written first)
    probes/                        base probes, fitted once (manifest.json written last)
    data/finetune-seed<S>.jsonl    fine-tuning data per seed (shared by every arm)
    runs/<arm>/seed-<S>/           a Trainer run folder (config, logs, checkpoints)
        summary.json               written last: verdict, final metrics, retrain check, cost
    report.md, report.html, figures/   (heldout.atlas.report)

A run with ``summary.json`` is finished and skipped; one with a checkpoint is resumed;
one with neither is started afresh. Every run's config is built and checked against
any finished or started run of the same name *before* the first step (ConfigError
when the folder holds results of a different grid).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from heldout.atlas.grid import Arm, GridSpec
from heldout.errors import ConfigError
from heldout.training.config import ProbeSpec, TrainConfig


@dataclass
class RunSummary:
    """What the report needs from one finished run (``summary.json``)."""

    arm: str
    seed: int
    out: str
    config_fingerprint: str
    seconds: float
    """Wall-clock cost of the run (training, evaluations, verdict, retrain check)."""
    verdict: dict[str, Any]
    """``heldout.analysis.verdict`` of the run against the control (same seed)."""
    counts: dict[str, int]
    """Sample sizes behind the final proportions (own outputs, forced set, ...)."""
    retrain: dict[str, Any] = field(default_factory=dict)
    """Per probe trained against: a probe of the same kind refitted on the final model."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        return cls(**data)


@dataclass
class AtlasResult:
    """What :func:`run_atlas` returns."""

    out: Path
    spec: GridSpec
    summaries: list[RunSummary]
    ran: list[str]
    """``arm/seed-S`` of the runs trained (or resumed) by this call."""
    skipped: list[str]
    """Runs that were already finished."""
    report: Path | None = None


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / "runs" / arm / f"seed-{seed}"


def verdict_probes(spec: GridSpec) -> list[str]:
    """The probes a control run's own verdict is about: those trained against most often."""
    counts: dict[str, int] = {}
    for arm in spec.arms:
        for name in arm.against:
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        return [spec.probes[0].name]
    top = max(counts.values())
    return [next(n for n in counts if counts[n] == top)]


def arm_config(spec: GridSpec, arm: Arm, seed: int, out: Path, organism: Any,
               probe_files: dict[str, Path]) -> TrainConfig:
    """The TrainConfig of one arm × seed."""
    from heldout.monitors.spec import TextMonitorSpec
    from heldout.organism.config import OrganismConfig

    texts = tuple(
        TextMonitorSpec(kind="rule", part=t.part, function=t.function,  # type: ignore[arg-type]
                        name=t.name,
                        role="train_against" if t.name in arm.against else "held_out",
                        weight=arm.weight if t.name in arm.against and arm.mode == "reward"
                        else 0.0)
        for t in spec.text_monitors)
    probes = tuple(
        ProbeSpec(path=str(probe_files[p.name]), name=p.name,
                  role="train_against" if p.name in arm.against else "held_out",
                  weight=(arm.weight if arm.mode in ("gradient", "reward") else 0.0)
                  if p.name in arm.against else 0.0,
                  penalty=arm.penalty if p.name in arm.against else "mean")
        for p in spec.probes)
    steps = arm.steps or spec.steps
    return TrainConfig(
        model=str(organism.path), out=str(run_dir(out, arm.name, seed)),
        train_data=str(out / "data" / f"finetune-seed{seed}.jsonl"),
        eval_data=str(organism.data_path("test")),
        control_data=str(organism.data_path("control")),
        forced_data=str(organism.data_path("forced")), probes=probes, monitors=texts,
        organism=dict(spec.organism),
        max_new_tokens=OrganismConfig.from_dict(dict(spec.organism)).max_new_tokens,
        n_train=spec.n_train, n_eval=spec.n_eval, steps=steps,
        batch_size=spec.batch_size, lr=arm.lr or spec.lr, kl_weight=arm.kl_weight,
        eval_every=min(spec.eval_every, steps), checkpoint_every=min(spec.eval_every, steps),
        keep_checkpoints=1, fpr=spec.fpr, seed=seed, plots=False, mode=arm.mode,
        reward_detector=arm.detector, reward_samples=arm.samples)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _check_folder(config: TrainConfig) -> str:
    """``done`` | ``resume`` | ``new``; ConfigError if the folder holds another config."""
    from heldout.training.checkpoint import latest_checkpoint

    folder = Path(config.out)
    summary = folder / "summary.json"
    if summary.is_file():
        saved = json.loads(summary.read_text(encoding="utf-8"))
        if saved.get("config_fingerprint") != config.fingerprint():
            raise ConfigError(f"{folder} holds a finished run of a different grid (its "
                              "config changed)", fix="run the grid into another --out, or "
                                                     "delete that run folder to redo it")
        return "done"
    last = latest_checkpoint(folder)
    if last is not None:
        state = json.loads((last / "state.json").read_text(encoding="utf-8"))
        if state.get("config_fingerprint") != config.fingerprint():
            raise ConfigError(f"{folder} holds an unfinished run of a different grid",
                              fix="run the grid into another --out, or delete that run "
                                  "folder to redo it")
        return "resume"
    return "new"


def retrain_check(model: Any, organism: Any, spec: GridSpec, names: list[str],
                  n_eval: int) -> dict[str, Any]:
    """Refit each named probe's kind on the final model (organism ``train`` split,
    calibrated on ``control``) and measure its recall on the forced set."""
    from heldout.analysis.metrics import auroc
    from heldout.atlas.probes import make_probe, probe_features
    from heldout.data import Dataset

    kinds = tuple(spec.probe(n) for n in names)
    if not kinds:  # an arm against text monitors only: nothing to refit
        return {}
    forced = Dataset(tuple(organism.forced.examples[:n_eval or None]))
    train = probe_features(model, organism.train, kinds)
    control = probe_features(model, organism.control, kinds)
    pos = probe_features(model, forced, kinds)
    out: dict[str, Any] = {}
    for kind in kinds:
        key = f"{kind.site}/{kind.selection}"
        probe = make_probe(kind).fit(train[key], organism.train.labels)
        probe.calibrate(control[key], fpr=spec.fpr)
        s_pos = probe.decision_function(pos[key])
        s_neg = probe.decision_function(control[key])
        out[kind.name] = {"recall_forced": float((s_pos > probe.threshold_).mean()),
                          "auroc_forced": auroc(np.r_[np.ones(len(s_pos)), np.zeros(len(s_neg))],
                                                np.r_[s_pos, s_neg]),
                          "n_forced": int(len(s_pos))}
    return out


def _prepare(spec: GridSpec, out: Path, organism: Any, progress: bool) -> dict[str, Path]:
    from heldout.atlas.probes import fit_base_probes

    probe_files = fit_base_probes(spec, organism, out / "probes", progress=progress)
    (out / "data").mkdir(parents=True, exist_ok=True)
    for seed in spec.seeds:
        path = out / "data" / f"finetune-seed{seed}.jsonl"
        if not path.is_file():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            organism.finetune_data(spec.n_train, seed=1 + seed).to_jsonl(tmp)
            os.replace(tmp, path)
    return probe_files


def _train_one(config: TrainConfig, state: str, spec: GridSpec, arm: Arm, control_dir: Path,
               organism: Any, progress: bool) -> RunSummary:
    from heldout.analysis.records import read_records
    from heldout.analysis.verdict import verdict
    from heldout.organism.environment import OrganismLabeler
    from heldout.training.trainer import Trainer

    start = time.perf_counter()
    folder = Path(config.out)
    if state == "new" and folder.exists():
        shutil.rmtree(folder)  # started but never checkpointed: start over
    trainer = Trainer(config, labeler=OrganismLabeler(), resume=state == "resume",
                      progress=False)
    trainer.train()
    names = list(arm.against) or verdict_probes(spec)
    result = verdict(folder, control_dir, monitors=names)
    result.save(folder / "verdict.json")
    trainer.model.eval()
    retrain = retrain_check(trainer.model, organism, spec,
                            [n for n in names if not spec.is_text(n)], spec.n_eval)
    last = read_records(folder)[-1]
    counts = {"own": last.n_own,
              "own_misbehaving": last.n_own_misbehaving or 0,  # None: no labeler
              "forced": len(trainer.monitor.tok_forced),
              "fixed_positive": int((trainer.monitor.sets.eval.labels == 1).sum())}
    summary = RunSummary(arm=arm.name, seed=config.seed, out=str(folder),
                         config_fingerprint=config.fingerprint(),
                         seconds=round(time.perf_counter() - start, 2),
                         verdict=result.to_dict(), counts=counts, retrain=retrain)
    _write_atomic(folder / "summary.json", json.dumps(summary.to_dict(), indent=2) + "\n")
    if progress:
        print(f"atlas: {arm.name} seed {config.seed}: {result.outcome} "
              f"({summary.seconds:.0f} s)", flush=True)
    return summary


def run_atlas(spec: GridSpec, out: str | os.PathLike[str], *, progress: bool = True,
              report: bool = True, organism: Any = None) -> AtlasResult:
    """Run every arm × seed of ``spec`` into ``out`` (resumable) and write the report.

    organism : default the organism of ``spec.organism`` (shipped or trained once).
    """
    import torch

    from heldout.organism import OrganismConfig, load_organism

    root = Path(out)
    organism = organism if organism is not None else load_organism(
        OrganismConfig.from_dict(dict(spec.organism)), progress=progress)
    root.mkdir(parents=True, exist_ok=True)
    spec.save(root / "grid.json")
    probe_files = _prepare(spec, root, organism, progress)
    control = spec.control
    plan: list[tuple[Arm, int, TrainConfig, str]] = []
    for seed in spec.seeds:  # controls first: every verdict is judged against them
        for arm in sorted(spec.arms, key=lambda a: not a.control):
            config = arm_config(spec, arm, seed, root, organism, probe_files)
            plan.append((arm, seed, config, _check_folder(config)))
    summaries: list[RunSummary] = []
    ran: list[str] = []
    skipped: list[str] = []
    for arm, seed, config, state in plan:
        tag = f"{arm.name}/seed-{seed}"
        if state == "done":
            summaries.append(RunSummary.from_dict(json.loads(
                (Path(config.out) / "summary.json").read_text(encoding="utf-8"))))
            skipped.append(tag)
            continue
        torch.manual_seed(seed)
        summaries.append(_train_one(config, state, spec, arm,
                                    run_dir(root, control.name, seed), organism, progress))
        ran.append(tag)
    result = AtlasResult(out=root, spec=spec, summaries=summaries, ran=ran, skipped=skipped)
    if report:
        from heldout.atlas.report import write_atlas_report

        result.report = write_atlas_report(root, spec, summaries)
    return result
