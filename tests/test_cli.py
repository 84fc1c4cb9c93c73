from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from heldout.cli import main


def test_cache_and_inspect_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data, out = tmp_path / "model", tmp_path / "data.jsonl", tmp_path / "store"
    assert main(["tiny-model", str(model), "--layers", "2", "--data", str(data)]) == 0
    assert main(["cache", "--model", str(model), "--data", str(data), "--sites",
                 "resid_post:0-1", "--select", "mean", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "complete: 64/64 rows" in text and "resid_post:0, resid_post:1" in text
    assert "32 positive / 32 negative" in text


def test_errors_are_one_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "p", "response": "r", "label": 0}\n')
    code = main(["cache", "--model", str(tmp_path / "none"), "--data", str(data),
                 "--sites", "resid_post:0", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "fix:" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_console_script_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "heldout", "--help"], capture_output=True,
                            text=True, env={**os.environ}, check=False)
    assert result.returncode == 0 and "cache" in result.stdout and "inspect" in result.stdout


def test_import_is_fast_and_lazy() -> None:
    code = "import sys, heldout; print('transformer_lens' in sys.modules, 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["False", "False"]
