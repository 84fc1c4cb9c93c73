"""Text monitors: proxies for misbehavior that read the response text, not activations.

``base`` holds the contract (:class:`TextScorer`, parts, prompt rendering), ``spec`` how
a run names a monitor, ``rule`` / ``classifier`` / ``judge`` the three kinds, ``build``
the step from a spec to a scorer and from examples to scores. Names are imported
lazily (PEP 562), so ``import heldout.monitors`` loads neither torch nor scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PARTS": "base", "Part": "base", "TextScorer": "base", "check_pairs": "base",
    "check_part": "base", "prompt_text": "base", "response_part": "base",
    "TEXT_KINDS": "spec", "TextKind": "spec", "TextMonitorSpec": "spec",
    "RuleMonitor": "rule", "import_function": "rule",
    "TextClassifierMonitor": "classifier",
    "DEFAULT_QUESTION": "judge", "LMJudge": "judge",
    "build_text_monitor": "build", "score_examples": "build",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'heldout.monitors' has no attribute {name!r}")
    return getattr(importlib.import_module(f"heldout.monitors.{_EXPORTS[name]}"), name)
