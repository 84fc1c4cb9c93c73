"""How many CPU threads heldout's work uses: one by default, more on request.

Why one: on a 2-core machine where another process holds a core, a second torch or BLAS
thread waits for a core it rarely gets, and every step waits for it. Measured here
(organism training, 2 cores): idle, 9.4 steps/s with 2 threads and 6.6 with 1; beside
one busy process, 2.5 steps/s with 2 threads and 7.9 with 1. One thread also makes
float reductions, and so trained models, independent of the machine's core count.
Models large enough to gain from parallel matmuls ask for more with ``--threads N`` or
``HELDOUT_THREADS=N``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from heldout.errors import ConfigError

DEFAULT_THREADS = 1
"""Threads used when neither ``--threads`` nor ``HELDOUT_THREADS`` says otherwise."""

ENV_VAR = "HELDOUT_THREADS"


def check_threads(value: object, source: str = "threads") -> int:
    """``value`` as a positive thread count, or a ConfigError naming ``source``."""
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1 or isinstance(value, bool):
        raise ConfigError(f"{source} must be a positive integer, got {value!r}",
                          fix=f"set {source} to 1 (the default), or to at most the number "
                              "of idle cores")
    return n


def default_threads() -> int:
    """``$HELDOUT_THREADS`` if set, else :data:`DEFAULT_THREADS`."""
    value = os.environ.get(ENV_VAR)
    return DEFAULT_THREADS if value in (None, "") else check_threads(value, ENV_VAR)


THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def default_environment() -> None:
    """Make heldout's default the process default where nothing chose yet: the thread
    variables torch and BLAS read when they load (``OMP_NUM_THREADS``, ...), unless one
    of them is already set. Called when ``heldout`` is imported, so notebooks and
    scripts that import heldout before torch get the policy too; a process that loaded
    torch first keeps its threads (``limit_threads`` changes them for a block)."""
    if any(name in os.environ for name in THREAD_ENV_VARS):
        return  # the user chose (torch reads MKL_NUM_THREADS over OMP_NUM_THREADS)
    try:
        count = str(default_threads())
    except ConfigError:
        return  # a bad $HELDOUT_THREADS is reported by the command that reads it
    for name in THREAD_ENV_VARS:
        os.environ[name] = count


@contextmanager
def limit_threads(n: int | None = None) -> Iterator[int]:
    """Run the block with ``n`` torch intra-op threads and ``n`` BLAS/OpenMP threads
    (numpy, scipy, scikit-learn); the previous settings come back afterwards.

    n : default :func:`default_threads`. Yields the count in force.
    """
    import torch
    from threadpoolctl import threadpool_limits

    count = default_threads() if n is None else check_threads(n)
    old = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        with threadpool_limits(limits=count):
            yield count
    finally:
        torch.set_num_threads(old)


__all__ = ["DEFAULT_THREADS", "ENV_VAR", "THREAD_ENV_VARS", "check_threads",
           "default_environment", "default_threads", "limit_threads"]
