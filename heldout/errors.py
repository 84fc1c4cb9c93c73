"""Every error heldout raises on purpose. Each message states the cause and the fix.

Raise as ``SiteError("layer 9 is out of range: the model has 4 layers (0-3)",
fix="pick a layer between 0 and 3")``; the fix is appended to the message, so
tracebacks and CLI output show both.
"""

from __future__ import annotations


class HeldoutError(Exception):
    """Base class of heldout's errors: ``str(err)`` gives the cause, then the fix."""

    def __init__(self, cause: str, fix: str | None = None) -> None:
        self.cause = cause
        self.fix = fix
        super().__init__(cause if fix is None else f"{cause}\n  fix: {fix}")


class ConfigError(HeldoutError, ValueError):
    """A setting or argument is invalid (unknown choice, negative weight, ...)."""


class ModelLoadError(HeldoutError, ValueError):
    """A model could not be loaded: missing folder, weights or tokenizer files."""


class SiteError(HeldoutError, ValueError):
    """A hook site does not exist on the model: unknown kind or layer out of range."""


class DataError(HeldoutError, ValueError):
    """A dataset or array is unusable: empty, bad labels, NaN, no response tokens, too long."""


class StoreError(HeldoutError, ValueError):
    """An activation store on disk is unusable or belongs to another run."""


class StoreMismatchError(StoreError):
    """An existing store was written from another model, dataset or configuration."""


class CorruptShardError(StoreError):
    """A shard file is truncated or its checksum does not match the manifest."""


class ProbeError(HeldoutError, ValueError):
    """A probe cannot be used as asked: wrong feature count, wrong site or model, bad file."""


class NotFittedError(HeldoutError, ValueError, AttributeError):
    """A probe was used before ``fit``. Also a ValueError and AttributeError, like sklearn's."""


class TrainingError(HeldoutError, RuntimeError):
    """A training run cannot go on: non-finite loss, resume from another config, ..."""
