"""From a run config to an :class:`Environment` and a model source.

``TrainConfig.environment`` is one of:

- a built-in name (``"organism"``; the real-model environments ``"statements"`` and
  ``"agreement"`` on SmolLM2-135M-Instruct, :mod:`heldout.environments.statements` and
  :mod:`heldout.environments.agreement`), imported by reference so that ``heldout.training``
  never imports the organism;
- ``"module:function"``: ``function(config) -> Environment`` from the Python path;
- a mapping: a file-defined environment (:mod:`heldout.environments.files`);
- None: the organism when the model is the organism (by name or by its checkpoint
  folder), else the JSONL paths ``train_data``/``eval_data``/``control_data`` with
  no labeler (a run without a verdict).

The config's ``train_data``, ``eval_data``, ``control_data`` and ``forced_data``, when
set, replace the environment's sets.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from heldout.environments.base import Environment
from heldout.environments.files import FileEnvironmentSpec
from heldout.errors import ConfigError
from heldout.imports import import_object

ORGANISM = "organism"
"""The built-in organism's name, as a model and as an environment."""

BUILTIN: dict[str, str] = {ORGANISM: "heldout.organism.environment:from_train_config",
                           "agreement": "heldout.environments.agreement:from_train_config",
                           "statements": "heldout.environments.statements:from_train_config"}
"""Built-in environments by name → ``module:function(config) -> Environment``."""


def is_organism_model(model: str | None) -> bool:
    """Whether ``model`` names the built-in organism or one of its checkpoint folders."""
    return model in (None, ORGANISM) or (Path(str(model)) / "organism.json").is_file()


def resolve_environment(config: Any) -> Environment:
    """The environment of ``config`` (module docstring), checked."""
    spec = config.environment
    if spec is None:
        if is_organism_model(config.model):
            spec = ORGANISM
        elif config.train_data and config.eval_data and config.control_data:
            spec = {"train": config.train_data, "eval": config.eval_data,
                    "control": config.control_data, "forced": config.forced_data}
        else:
            raise ConfigError("the run names no environment, and its model is not the organism",
                              fix="set environment (a file-defined environment with a "
                                  "labeler, see examples/run-own-model.json), or pass "
                                  "train_data, eval_data and control_data")
    if isinstance(spec, dict):
        env = FileEnvironmentSpec.from_dict(spec).build()
    elif isinstance(spec, str):
        factory = import_object(BUILTIN.get(spec, spec), "environment")
        try:
            env = factory(config)
        except TypeError as err:
            raise ConfigError(f"environment {spec!r} could not be called as "
                              f"function(config): {err}",
                              fix="point to a function that takes the run's TrainConfig "
                                  "and returns an Environment") from err
        if not isinstance(env, Environment):
            raise ConfigError(f"environment {spec!r} returned {type(env).__name__}, not an "
                              "Environment", fix="return heldout.environments.Environment(...)")
    else:
        raise ConfigError(f"environment {spec!r} is neither a name, 'module:function' nor a "
                          "mapping", fix="see examples/run-own-model.json")
    from heldout.data import load_dataset

    overrides = {name: load_dataset(path) for name, path in (
        ("train", config.train_data), ("eval", config.eval_data),
        ("control", config.control_data), ("forced", config.forced_data)) if path}
    if overrides:
        env = replace(env, **overrides)
    env.check()
    return env


def model_source(config: Any, env: Environment) -> str:
    """The model a run trains: ``config.model``, or the environment's default model."""
    if config.model in (None, ORGANISM):
        if env.model is None:
            raise ConfigError(f"environment {env.name!r} has no default model",
                              fix="set model to a local checkpoint folder")
        return env.model
    return str(config.model)
