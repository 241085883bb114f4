"""CPU threads for in-process torch work on a machine other work shares.

torch's default is one OpenMP thread per core it sees. When other processes keep some of those
cores busy, the threads of each parallel region wait for one another at its barrier while the
scheduler runs someone else, and OpenMP's waiting threads spin meanwhile: on 2 cores with one
of them busy, the tiny built-in teacher took about twice the CPU seconds per candidate, and
more with more load. The cure is to ask for no more threads than there are free cores
(:func:`default_threads`) and to let waiting threads sleep (``OMP_WAIT_POLICY=PASSIVE``, which
OpenMP reads once, when torch is first imported: :func:`prepare_torch_import`).

Only the standard library is imported here; torch is imported by :func:`apply_torch_threads`
alone.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

_START_LOAD: float | None = None
_INTEROP_SET = False


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask (``sched_getaffinity``), capped by a
    cgroup v2 CPU quota (``cpu.max``, rounded up) where one is set; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, quota)
    return max(1, cores)


def _cgroup_cpu_quota() -> int | None:
    """Whole cores allowed by this process's cgroup v2 ``cpu.max`` (``None``: no quota, or not v2)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    rel = next((line[3:] for line in lines if line.startswith("0::")), None)
    if rel is None:
        return None
    for folder in (Path("/sys/fs/cgroup") / rel.lstrip("/"), Path("/sys/fs/cgroup")):
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota == "max":
            return None
        try:
            return max(1, math.ceil(int(quota) / int(period)))
        except (ValueError, ZeroDivisionError):
            return None
    return None


def load_at_start() -> float:
    """The 1-minute load average (``os.getloadavg()[0]``: runnable and uninterruptible tasks,
    averaged) read the first time this is called in the process, before our own torch work
    starts, so that it counts other processes' load and (almost) none of ours; later calls
    return the same reading. 0.0 where the platform has no load average."""
    global _START_LOAD
    if _START_LOAD is None:
        try:
            _START_LOAD = max(0.0, os.getloadavg()[0])
        except (AttributeError, OSError):
            _START_LOAD = 0.0
    return _START_LOAD


def default_threads(cores: int | None = None, load: float | None = None) -> int:
    """Threads for torch: the usable cores less the load other processes put on them, rounded,
    at least 1.

    Args:
        cores: usable cores (default :func:`usable_cores`).
        load: the load other processes put on the machine, in runnable tasks (default
            :func:`load_at_start`). The load average is machine-wide, so on a machine with more
            cores than this process may use, it is scaled by ``cores / os.cpu_count()`` (the
            share of it that falls on our cores when the scheduler spreads it evenly).

    Returns:
        an integer in ``[1, cores]``.
    """
    cores = usable_cores() if cores is None else max(1, cores)
    if load is None:
        load = load_at_start()
        total = os.cpu_count() or cores
        if total > cores:
            load *= cores / total
    return max(1, min(cores, math.floor(cores - load + 0.5)))


def prepare_torch_import() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` (threads that wait at a barrier sleep instead of spinning)
    unless the environment sets it already. OpenMP reads it when its runtime loads, that is when
    torch is first imported: once torch is in ``sys.modules`` this changes nothing (and does not
    try)."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def apply_torch_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (``torch.set_num_threads``) to ``threads`` (``None``:
    :func:`default_threads`), and its inter-op pool to 1 thread when that is still possible
    (torch allows it once, before any inter-op work; generation uses none).

    Args:
        threads: at least 1, or ``None``.

    Returns:
        the intra-op thread count now set.

    Raises:
        ValueError: ``threads`` is below 1.
    """
    global _INTEROP_SET
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    n = default_threads() if threads is None else threads
    prepare_torch_import()
    import torch

    torch.set_num_threads(n)
    if not _INTEROP_SET:
        _INTEROP_SET = True
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set, or inter-op work already started: keep torch's
            pass
    return n
