"""Text monitors bound to a run: a spec, its scorer, and the environment's CoT split.

The activation-probe side is :mod:`heldout.training.penalty` (``BoundProbe``); this is
the text side. Both score examples, both get a threshold at the run's FPR on the
control set, both write the same :class:`~heldout.analysis.records.MonitorRecord`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from heldout.data import Example
from heldout.environments.base import CotSplitter
from heldout.monitors.base import response_part
from heldout.monitors.spec import TextMonitorSpec


@dataclass
class BoundText:
    """A text monitor ready to score a run's responses."""

    spec: TextMonitorSpec
    """How the run uses it (role, weight, part, name)."""
    scorer: Any
    """The monitor (``TextScorer``: ``score_texts(prompts, texts)``)."""
    split_cot: CotSplitter | None
    """The environment's chain-of-thought split (None: only ``part='all'`` works)."""

    @property
    def name(self) -> str:
        return self.spec.label

    def scores(self, examples: Sequence[Example], responses: Sequence[str]) -> np.ndarray:
        """Suspicion in [0, 1] of each response to each example's prompt, shape (n,)."""
        from heldout.monitors.build import score_examples

        if not len(responses):
            return np.zeros(0)
        return np.asarray(score_examples(self.scorer, self.spec, list(examples),
                                         list(responses), self.split_cot), dtype=np.float64)


def bind_text_monitor(spec: TextMonitorSpec, *, base_model: Any,
                      split_cot: CotSplitter | None) -> BoundText:
    """Build the monitor ``spec`` names; ConfigError before any work when its part cannot
    be read in this environment or the monitor cannot be built."""
    from heldout.monitors.build import build_text_monitor

    response_part("", spec.part or "all", split_cot)  # refuses a CoT part without a split
    return BoundText(spec=spec, scorer=build_text_monitor(spec, base_model=base_model),
                     split_cot=split_cot)
