"""Limits of one sandboxed program and the result of running it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STATUSES: tuple[str, ...] = (
    "ok",  # the entry function returned plain data: ``value`` holds it
    "error",  # an exception escaped the program (``error`` = "Type: message (line n)")
    "syntax_error",  # the program does not compile
    "missing_entry",  # the program defines no callable named ``entry``
    "unsupported_return",  # the value is not plain data, too deep or too large
    "timeout",  # wall-clock or CPU-time limit exceeded
    "memory",  # MemoryError under the address-space limit
    "output_limit",  # stdout + stderr exceeded ``max_output_bytes``
    "exited",  # sys.exit / os._exit before returning
    "crashed",  # killed by a signal (e.g. SIGSEGV), or the sandbox worker died
)


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits applied to each program's process.

    Attributes:
        wall_time_s: wall-clock seconds from fork to result; the worker then kills the
            process group.
        cpu_time_s: CPU seconds (``RLIMIT_CPU``, rounded up to whole seconds; SIGXCPU).
        memory_mb: address space in MiB (``RLIMIT_AS``), the interpreter included.
        file_size_mb: largest file the program may write, MiB (``RLIMIT_FSIZE``).
        disk_mb: size of the ``tmpfs`` holding the working directories of one worker, MiB
            (only where a private mount namespace can be made; see docs/sandbox.md).
        max_output_bytes: cap on stdout + stderr bytes; beyond it the verdict is ``output_limit``.
        max_value_bytes: cap on the encoded return value, bytes.
        max_open_files: ``RLIMIT_NOFILE``.
        max_processes: headroom of ``RLIMIT_NPROC`` over the user's current process count,
            applied only where seccomp is unavailable and the user is not root (root ignores it).

    Raises:
        ValueError: a limit is not positive.
    """

    wall_time_s: float = 2.0
    cpu_time_s: float = 1.0
    memory_mb: int = 256
    file_size_mb: int = 1
    disk_mb: int = 64
    max_output_bytes: int = 65536
    max_value_bytes: int = 1 << 20
    max_open_files: int = 64
    max_processes: int = 16

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"SandboxLimits.{name} must be > 0, got {value!r}")


@dataclass
class ExecutionResult:
    """What running one program produced.

    Attributes:
        status: one of :data:`STATUSES`.
        value: the entry function's return value (plain data) when ``status == "ok"``.
        error: a one-line explanation for every other status.
        traceback: the formatted traceback for ``status == "error"`` (last 4000 chars).
        stdout, stderr: captured output (each at most ``max_output_bytes``, UTF-8 with replacement).
        wall_s: seconds from fork to the end of the program's process.
        cpu_s: user + system CPU seconds of the program's process.
    """

    status: str
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the program returned a value."""
        return self.status == "ok"
