"""A sandbox for untrusted Python programs: run a program, call its entry function, get the value.

Public API:

- :class:`Sandbox` (``run``, ``run_many``, ``close``, ``isolation``): a pool of warm
  fork-server workers; each program runs in a fresh confined process.
- :class:`SandboxLimits`, :class:`ExecutionResult`, :data:`STATUSES`.
- :func:`answers_match`: compare a returned value with a reference answer.

What isolation holds on which system is documented in ``docs/sandbox.md``.
"""

from distillery.verify.sandbox.compare import answers_match
from distillery.verify.sandbox.limits import STATUSES, ExecutionResult, SandboxLimits
from distillery.verify.sandbox.pool import DEFAULT_PRELOAD, Sandbox, SandboxError

__all__ = [
    "DEFAULT_PRELOAD",
    "STATUSES",
    "ExecutionResult",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "answers_match",
]
