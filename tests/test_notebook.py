"""The quickstart notebook executes top to bottom (nbclient, a real kernel)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def executed_outputs(notebook: Path, timeout: int) -> list[Any]:
    """Run ``notebook`` top to bottom in a real kernel (from its own folder); return
    every code cell's outputs, after checking that none is an error."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


def test_quickstart_notebook_runs() -> None:
    outputs = executed_outputs(NOTEBOOK, timeout=600)
    # figures are returned, not saved and re-read: the sweep, the histograms, the headline
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    verdicts = ("honest", "blatant", "obfuscated_policy", "obfuscated_activations")
    assert any(f"verdict: {v}" in printed for v in verdicts)
    assert "Misbehavior went from" in printed
