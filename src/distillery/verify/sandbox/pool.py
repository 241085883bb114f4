"""The parent side of the sandbox: a pool of warm fork-server workers.

Each worker is a separate interpreter (``_worker.py``) started with a scrubbed
environment, which imports common modules once, enters its own network/IPC/mount
namespaces where the kernel allows, then forks a fresh confined child per program (the
fork-server pattern of ``multiprocessing``'s ``forkserver`` start method, with one program
per child). The parent only exchanges JSON frames with workers, so nothing the program
builds is ever unpickled or compared here.
"""

from __future__ import annotations

import collections
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distillery.verify.sandbox import _wire
from distillery.verify.sandbox.limits import ExecutionResult, SandboxLimits

_WORKER_SCRIPT = Path(__file__).with_name("_worker.py")

#: Modules every worker imports once, so programs using them start warm.
DEFAULT_PRELOAD: tuple[str, ...] = (
    "math",
    "cmath",
    "fractions",
    "decimal",
    "itertools",
    "functools",
    "collections",
    "heapq",
    "bisect",
    "string",
    "re",
    "operator",
    "numbers",
    "typing",
)  # each preloaded module makes every fork a little dearer; programs may import others

#: Environment of workers and programs: nothing from the parent's environment is passed on.
CHILD_ENV: dict[str, str] = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
_WORKER_ENV: dict[str, str] = {
    **CHILD_ENV,
    "PYTHONHASHSEED": "0",  # same set/dict iteration order in every worker and run
    "PYTHONDONTWRITEBYTECODE": "1",
    "MALLOC_ARENA_MAX": "2",  # threads should not reserve 64 MiB arenas under RLIMIT_AS
    # One program = one process: BLAS thread pools would only eat the address-space limit.
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
_SYSTEM_READ_PATHS = (
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
)
_HANDSHAKE_S = 60.0
_GRACE_S = 5.0  # how long past the wall limit the parent waits before declaring a worker hung


class SandboxError(RuntimeError):
    """The sandbox cannot start (a worker failed its setup or its probe program)."""


class _Worker:
    """One worker process and the job it is running."""

    def __init__(self, proc: subprocess.Popen, base: str) -> None:
        self.proc = proc
        self.base = base
        self.buf = bytearray()
        self.job: int | None = None
        self.deadline = 0.0
        self.isolation: dict[str, Any] = {}

    @property
    def rfd(self) -> int:
        return self.proc.stdout.fileno()  # type: ignore[union-attr]

    def send(self, obj: dict) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        data = memoryview(len(body).to_bytes(4, "big") + body)
        fd = self.proc.stdin.fileno()  # type: ignore[union-attr]
        while data:
            data = data[os.write(fd, data) :]

    def frames(self) -> list[dict]:
        out = []
        while len(self.buf) >= 4:
            n = int.from_bytes(self.buf[:4], "big")
            if len(self.buf) < 4 + n:
                break
            out.append(json.loads(bytes(self.buf[4 : 4 + n])))
            del self.buf[: 4 + n]
        return out

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _shutdown(workers: list[_Worker], base: str) -> None:
    for w in workers:
        try:
            w.proc.stdin.close()  # type: ignore[union-attr]  # EOF: the worker exits
        except OSError:
            pass
    for w in workers:
        try:
            w.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
        w.kill()
    shutil.rmtree(base, ignore_errors=True)


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class Sandbox:
    """Runs untrusted Python programs in confined, freshly forked processes.

    Usage::

        with Sandbox(workers=2) as sb:
            r = sb.run("def solution():\\n    return 2 + 2\\n")
            assert r.status == "ok" and r.value == 4

    Each program runs in a new process forked from a warm worker, in a fresh working
    directory removed afterwards, with the limits of :class:`SandboxLimits`, a scrubbed
    environment, and the isolation layers listed by :attr:`isolation` (see
    ``docs/sandbox.md`` for which hold where). Workers that die are replaced.

    Args:
        workers: number of worker processes (programs run in parallel); default: usable CPUs.
        limits: per-program limits.
        preload: modules each worker imports once (programs importing them start fast).
        extra_read_paths: paths programs may read besides the interpreter's own and system libraries.
        python: interpreter of the workers; default ``sys.executable``.
        disable: isolation layers to leave off, among ``"namespaces"``, ``"seccomp"`` and
            ``"landlock"`` (to debug, or to test the fallbacks; weakens the sandbox).

    A program whose worker dies while running it is retried once on a fresh worker (the
    death may not be its doing); a second death gives the status ``crashed``.

    Raises:
        SandboxError: a worker failed to start or to run its probe program.
        ValueError: ``workers < 1`` or an unknown name in ``disable``.
    """

    def __init__(
        self,
        workers: int | None = None,
        limits: SandboxLimits = SandboxLimits(),
        *,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        extra_read_paths: Sequence[str] = (),
        python: str | None = None,
        disable: Sequence[str] = (),
    ) -> None:
        unknown = set(disable) - {"namespaces", "seccomp", "landlock"}
        if unknown:
            raise ValueError(f"unknown isolation layers to disable: {sorted(unknown)}")
        self._enable = {layer: layer not in disable for layer in ("namespaces", "seccomp", "landlock")}
        self.limits = limits
        self.n_workers = workers if workers is not None else _default_workers()
        if self.n_workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.n_workers}")
        self.restarts = 0
        self._python = python or sys.executable
        self._preload = list(preload)
        self._read_paths = [str(p) for p in extra_read_paths] + list(_SYSTEM_READ_PATHS)
        self._lock = threading.Lock()
        self._base = tempfile.mkdtemp(prefix="distillery-sandbox-")
        self._spawned = 0
        self._workers: list[_Worker] = []
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._base)
        started: list[_Worker] = []
        try:
            for _ in range(self.n_workers):  # start all, then wait: the setups overlap
                started.append(self._start())
            for w in started:
                self._handshake(w)
                self._workers.append(w)
        except BaseException:
            for w in started:
                if w not in self._workers:
                    w.kill()
            self.close()
            raise

    # -- workers --------------------------------------------------------------------------
    def _start(self) -> _Worker:
        self._spawned += 1
        base = os.path.join(self._base, f"w{self._spawned}")
        os.mkdir(base, 0o700)
        proc = subprocess.Popen(
            [self._python, "-s", "-P", str(_WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(_WORKER_ENV),
            cwd=base,
            close_fds=True,
            start_new_session=True,  # terminal signals (Ctrl-C) go to the parent only
        )
        w = _Worker(proc, base)
        w.send(
            {
                "limits": asdict(self.limits),
                "preload": self._preload,
                "base": base,
                "read_paths": self._read_paths,
                "env": CHILD_ENV,
                **self._enable,
            }
        )
        return w

    def _handshake(self, w: _Worker) -> None:
        deadline = time.monotonic() + _HANDSHAKE_S
        with selectors.DefaultSelector() as sel:
            sel.register(w.rfd, selectors.EVENT_READ)
            while True:
                frames = w.frames()
                if frames:
                    hello = frames[0]
                    break
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    w.kill()
                    raise SandboxError("sandbox worker did not start in time")
                data = os.read(w.rfd, 1 << 16)
                if not data:
                    w.kill()
                    raise SandboxError(f"sandbox worker exited during setup (code {w.proc.wait()})")
                w.buf += data
        if "fatal" in hello:
            w.kill()
            raise SandboxError(hello["fatal"])
        w.isolation = hello["isolation"]

    def _replace(self, w: _Worker) -> _Worker:
        w.kill()
        shutil.rmtree(w.base, ignore_errors=True)
        self.restarts += 1
        for attempt in range(3):
            new = self._start()
            try:
                self._handshake(new)
                break
            except SandboxError:
                shutil.rmtree(new.base, ignore_errors=True)
                if attempt == 2:
                    raise
        self._workers[self._workers.index(w)] = new
        return new

    @property
    def isolation(self) -> dict[str, Any]:
        """The isolation layers in force (first worker's report): ``netns``, ``mountns``,
        ``tmpfs_mb``, ``seccomp``, ``landlock_abi``, ``capabilities_dropped``, ``rlimit_nproc``..."""
        return dict(self._workers[0].isolation) if self._workers else {}

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the current workers."""
        return [w.proc.pid for w in self._workers]

    # -- running ----------------------------------------------------------------------------
    def run(self, program: str, entry: str = "solution") -> ExecutionResult:
        """Run ``program`` and call its ``entry()``; see :meth:`run_many`."""
        return self.run_many([program], entry)[0]

    def run_many(self, programs: Sequence[str], entry: str = "solution") -> list[ExecutionResult]:
        """Run each program in its own confined process, in parallel over the workers.

        Returns:
            one :class:`ExecutionResult` per program, in the order given. Failures of the
            program (including killing its worker) are results, not exceptions.

        Raises:
            SandboxError: the sandbox is closed, or a dead worker cannot be replaced.
        """
        if not self._workers:
            raise SandboxError("the sandbox is closed")
        with self._lock:
            return self._run_many(list(programs), entry)

    def _run_many(self, programs: list[str], entry: str) -> list[ExecutionResult]:
        results: list[ExecutionResult | None] = [None] * len(programs)
        pending = collections.deque(range(len(programs)))
        deaths = [0] * len(programs)
        budget = self.limits.wall_time_s + _GRACE_S
        with selectors.DefaultSelector() as sel:
            for w in self._workers:
                sel.register(w.rfd, selectors.EVENT_READ, w)

            def replace(w: _Worker) -> None:
                sel.unregister(w.rfd)
                new = self._replace(w)
                sel.register(new.rfd, selectors.EVENT_READ, new)

            while pending or any(w.job is not None for w in self._workers):
                for w in list(self._workers):
                    if w.job is None and pending:
                        i = pending.popleft()
                        try:
                            w.send({"program": programs[i], "entry": entry})
                        except OSError:  # died while idle: not the program's doing, retry it
                            pending.appendleft(i)
                            replace(w)
                            continue
                        w.job, w.deadline = i, time.monotonic() + budget
                busy = [w for w in self._workers if w.job is not None]
                if not busy:
                    continue
                timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
                for key, _ in sel.select(timeout):
                    w = key.data
                    data = os.read(w.rfd, 1 << 20)
                    if not data:
                        if w.job is not None:
                            deaths[w.job] += 1
                            if deaths[w.job] < 2:
                                pending.appendleft(w.job)
                            else:
                                error = "the sandbox worker died while running the program (twice)"
                                results[w.job] = ExecutionResult("crashed", error=error)
                            w.job = None
                        replace(w)
                        continue
                    w.buf += data
                    for frame in w.frames():
                        if w.job is not None:
                            results[w.job] = _result(frame)
                            w.job = None
                now = time.monotonic()
                for w in list(self._workers):
                    if w.job is not None and now > w.deadline:
                        results[w.job] = ExecutionResult(
                            "crashed", error="the sandbox worker stopped responding"
                        )
                        w.job = None
                        replace(w)
        return results  # type: ignore[return-value]

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the workers and remove the working area; idempotent."""
        self._finalizer()
        self._workers.clear()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _result(frame: dict) -> ExecutionResult:
    status = frame.get("status", "crashed")
    value = None
    error = frame.get("error")
    if status == "ok":
        try:
            value = _wire.loads(frame.get("value") or "null")
        except ValueError as exc:
            status, error = "crashed", f"malformed return value: {exc}"
    return ExecutionResult(
        status=status,
        value=value,
        error=error,
        traceback=frame.get("traceback"),
        stdout=frame.get("stdout", ""),
        stderr=frame.get("stderr", ""),
        wall_s=float(frame.get("wall_s", 0.0)),
        cpu_s=float(frame.get("cpu_s", 0.0)),
    )
