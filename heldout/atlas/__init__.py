"""The atlas: a grid of training recipes × seeds on the organism, and a report that puts
each outcome next to the published finding it speaks to (``heldout atlas``).

    from heldout.atlas import quick_grid, run_atlas
    result = run_atlas(quick_grid(), "runs/atlas")     # resumable; writes report.md/.html

Names are imported lazily so that ``import heldout.atlas.commands`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GridSpec": "grid", "Arm": "grid", "ProbeKind": "grid", "TextMonitorKind": "grid", "default_grid": "grids",
    "quick_grid": "grids", "tiny_grid": "grids", "GRIDS": "grids",
    "run_atlas": "runner", "AtlasResult": "runner", "RunSummary": "runner",
    "arm_config": "runner",
    "write_atlas_report": "report", "Finding": "findings",
    "fit_base_probes": "probes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'heldout.atlas' has no attribute {name!r}")
    return getattr(importlib.import_module(f"heldout.atlas.{_EXPORTS[name]}"), name)
