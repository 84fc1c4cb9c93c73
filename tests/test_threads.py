"""The thread policy: one torch and BLAS thread by default, more on request, refused when
nonsense, restored afterwards."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from threadpoolctl import threadpool_info

from heldout.errors import ConfigError
from heldout.threads import check_threads, default_threads, limit_threads


def _blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_limit_threads_sets_torch_and_blas_and_restores() -> None:
    before_torch, before_blas = torch.get_num_threads(), _blas_threads()
    with limit_threads(2) as n:
        assert n == 2 and torch.get_num_threads() == 2
        assert _blas_threads() <= {2}
    assert torch.get_num_threads() == before_torch and _blas_threads() == before_blas


def test_default_is_one_thread_and_the_environment_can_raise_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HELDOUT_THREADS", raising=False)
    assert default_threads() == 1
    monkeypatch.setenv("HELDOUT_THREADS", "2")
    assert default_threads() == 2
    monkeypatch.setenv("HELDOUT_THREADS", "many")
    with pytest.raises(ConfigError, match="HELDOUT_THREADS must be a positive integer"):
        default_threads()


@pytest.mark.parametrize("value", [0, -1, "x", True, 1.5])
def test_nonsense_counts_are_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="fix:"):
        check_threads(value)


@pytest.mark.parametrize("args", [["--threads", "0", "demo"], ["demo", "--threads", "0"]],
                         ids=["before the command", "after the command"])
def test_cli_refuses_a_bad_thread_count_before_any_work(tmp_path: os.PathLike[str],
                                                        args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "heldout", *args, "--out", str(tmp_path)],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "HELDOUT_HOME": str(tmp_path)})
    assert done.returncode == 2
    assert "--threads must be a positive integer" in done.stderr
    assert list(os.scandir(tmp_path)) == []


def test_importing_heldout_first_gives_torch_one_thread() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                        "HELDOUT_THREADS")}
    code = "import heldout, torch; print(torch.get_num_threads())"
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, check=True).stdout.split()
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**env, "OMP_NUM_THREADS": "2"}, check=True).stdout.split()
    assert first == ["1"] and chosen == ["2"]
