"""``heldout demo`` on an idle machine and beside a busy process, in one run.

Runs the demo as a user would (``python -m heldout demo``, fresh ``HELDOUT_HOME``, so
the organism is installed, not reused) twice: idle, and while one busy-looping process
that this script starts and stops holds a core. Prints both wall times and
loaded/idle   [goals: idle <= 180 s on 2 cores; loaded/idle <= 2.5].

``--baseline-threads N`` also runs both conditions with ``--threads N`` (the old policy
was 2 torch threads): the same measurement for the thread count we moved away from.
``--tests`` also times the test suite (``python -m pytest -q``) in both conditions.

Usage: ``python benchmarks/demo_under_load.py [--baseline-threads 2] [--tests]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def busy_process(on: bool) -> Iterator[None]:
    """One process spinning on a core for the duration of the block (when ``on``)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if on else None
    try:
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                              check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {done.returncode}); see {log}")
    return seconds


def run_demo(work: Path, name: str, threads: int | None, loaded: bool) -> float:
    home = work / f"home-{name}"
    env = {**os.environ, "HELDOUT_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("HELDOUT_THREADS", None)
    cmd = [sys.executable, "-m", "heldout"]
    cmd += [] if threads is None else ["--threads", str(threads)]
    cmd += ["demo", "--out", str(work / f"demo-{name}")]
    with busy_process(loaded):
        seconds = timed(cmd, env, work / f"demo-{name}.log")
    steps = [line for line in (work / f"demo-{name}.log").read_text().splitlines()
             if line.startswith("time per step")]
    print(f"  {name:<24} {seconds:7.1f} s   {steps[-1] if steps else ''}", flush=True)
    return seconds


def run_tests(work: Path, name: str, loaded: bool) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("HELDOUT_TEST_HOME", None)
    with busy_process(loaded):
        seconds = timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                        env, work / f"tests-{name}.log")
    tail = (work / f"tests-{name}.log").read_text().strip().splitlines()[-1]
    print(f"  {name:<24} {seconds:7.1f} s   {tail}", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-threads", type=int, default=None)
    parser.add_argument("--tests", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="heldout-demo-bench-") as tmp:
        work = Path(tmp)
        print("heldout demo (default threads):")
        idle = run_demo(work, "idle", None, loaded=False)
        loaded = run_demo(work, "loaded", None, loaded=True)
        print(f"  loaded/idle = {loaded / idle:.2f}   [goal <= 2.5]; idle "
              f"{'<=' if idle <= 180 else '>'} 180 s")
        if args.baseline_threads:
            n = args.baseline_threads
            print(f"baseline: heldout --threads {n} demo:")
            b_idle = run_demo(work, f"idle-{n}threads", n, loaded=False)
            b_loaded = run_demo(work, f"loaded-{n}threads", n, loaded=True)
            print(f"  loaded/idle = {b_loaded / b_idle:.2f}; default vs baseline: idle "
                  f"{idle / b_idle:.2f}, loaded {loaded / b_loaded:.2f}")
        if args.tests:
            print("python -m pytest:")
            t_idle = run_tests(work, "tests idle", loaded=False)
            t_loaded = run_tests(work, "tests loaded", loaded=True)
            print(f"  loaded/idle = {t_loaded / t_idle:.2f}")


if __name__ == "__main__":
    main()
