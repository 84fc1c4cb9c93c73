"""The README's tours run as written, so the README stays true.

- "Python tour": its code block, then the snippet of "Probes, training and the
  verdict" (which continues from the tour's names), run in one namespace in a fresh
  folder.
- "CLI tour": the first bash block runs in a fresh folder through bash, with the
  virtualenv's ``heldout`` console script first on PATH; the other bash blocks (the
  minutes-long jobs on the model organism) must parse with the real CLI parser; the
  sample error is what ``heldout cache`` prints for that site.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = re.compile(r"^## (.+)$", re.MULTILINE)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    starts = {m.group(1).strip(): m for m in HEADING.finditer(text)}
    assert title in starts, f"README.md has no '## {title}' section"
    start = starts[title].end()
    after = [m.start() for m in HEADING.finditer(text) if m.start() > start]
    return text[start:after[0] if after else len(text)]


def blocks(title: str, lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(section(title)) if kind == lang]


def commands(block: str) -> list[list[str]]:
    """Each command line of a bash block as argv (comments dropped)."""
    return [shlex.split(line, comments=True) for line in block.splitlines()
            if shlex.split(line, comments=True)]


def test_python_tour_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    tour = blocks("Python tour", "python")
    probes = blocks("Probes, training and the verdict", "python")
    assert len(tour) == 1 and probes, "the tours' python blocks moved"
    monkeypatch.chdir(tmp_path)
    names: dict[str, object] = {"__name__": "readme_tour"}
    exec(compile(tour[0], "README.md (Python tour)", "exec"), names)  # noqa: S102
    exec(compile(probes[0], "README.md (Probes, training and the verdict)", "exec"),  # noqa: S102
         names)
    table = names["result"].table  # type: ignore[attr-defined]
    assert isinstance(table, pd.DataFrame) and len(table) == 16  # 4 sites x 4 probes
    assert (table.n_test == 16).all() and (table.n_control == 32).all()
    assert names["logits"].shape == (64,)  # type: ignore[attr-defined]
    assert (tmp_path / "probe.safetensors").is_file()

    # the CLI tour's sample error, on the tour's 4-layer model and data
    from heldout.cli import main

    sample = [body for kind, body in FENCE.findall(section("CLI tour")) if kind == ""]
    assert len(sample) == 1, "the CLI tour's sample error moved"
    capsys.readouterr()
    assert main(["cache", "--model", "runs/model", "--data", "runs/data.jsonl",
                 "--sites", "resid_post:4", "--out", "runs/bad"]) == 2
    assert sample[0].strip() in capsys.readouterr().err
    assert not (tmp_path / "runs" / "bad").exists()


@pytest.mark.slow
def test_cli_tour_runs_as_written(tmp_path: Path) -> None:
    tour = blocks("CLI tour", "bash")[0]
    (tmp_path / "tour.sh").write_text(tour, encoding="utf-8")
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "heldout").is_file(), f"no heldout console script in {bin_dir}"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "HELDOUT_THREADS": os.environ.get("HELDOUT_THREADS", "1")}
    done = subprocess.run(["bash", "-e", "-x", "tour.sh"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "Traceback" not in log
    sweep = pd.read_csv(tmp_path / "runs" / "sweep" / "sweep.csv")
    assert len(sweep) == 12 and (sweep.n_test == 16).all() and (sweep.n_control == 32).all()
    assert (tmp_path / "runs" / "probe.safetensors").is_file()
    assert "test: 16, train: 48" in done.stdout  # inspect: both splits
    assert re.search(r"^n_pos\s+8$", done.stdout, re.MULTILINE)  # evaluate --split test


def test_cli_tour_organism_jobs_parse() -> None:
    from heldout.cli import build_parser

    jobs = blocks("CLI tour", "bash")[1:]
    assert jobs, "the CLI tour lists the organism jobs in a second bash block"
    parser = build_parser()
    for argv in (argv for block in jobs for argv in commands(block)):
        assert argv[0] == "heldout", argv
        args = parser.parse_args(argv[1:])
        assert getattr(args, "func", None), argv
        if "--config" in argv:
            assert (README.parent / argv[argv.index("--config") + 1]).is_file(), argv


@pytest.mark.slow
def test_trl_snippet_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TRL section's snippet, shortened to 2 steps, writes a run the verdict reads."""
    from heldout.analysis.records import read_records

    pytest.importorskip("trl")
    snippet = blocks("Training with TRL (GRPO), monitored by heldout", "python")
    assert len(snippet) == 1, "the TRL section's python block moved"
    assert "max_steps=20, " in snippet[0]
    monkeypatch.chdir(tmp_path)
    code = snippet[0].replace("max_steps=20, ", "max_steps=2, ")
    exec(compile(code, "README.md (Training with TRL)", "exec"),  # noqa: S102
         {"__name__": "readme_trl"})
    records = read_records(tmp_path / "runs" / "grpo")
    assert [r.step for r in records] == [0, 2]
    assert records[0].monitors["L2"].role == "train_against"
    assert records[0].monitors["L3"].role == "held_out"


def test_atlas_section_commands_parse() -> None:
    from heldout.cli import build_parser

    jobs = blocks("The atlas: which proxies to train against, and which to hold out", "bash")
    assert len(jobs) == 1, "the atlas section's bash block moved"
    parser = build_parser()
    argvs = commands(jobs[0])
    assert len(argvs) == 3
    for argv in argvs:
        assert argv[0] == "heldout" and argv[1] == "atlas", argv
        assert getattr(parser.parse_args(argv[1:]), "func", None), argv
