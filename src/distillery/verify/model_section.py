"""A stage's own model: the ``model:`` section of the judge and difficulty stages.

The section has the shape of the recipe's ``teacher:`` section
(:class:`distillery.backends.config.TeacherConfig`: ``backend``, ``model``, ``base_url``,
``concurrency``, ``sampling``, ...), validated by :func:`model_section`.

:class:`StageBackend` builds the backend the section names (as the runner does for the
teacher), wraps it in a :class:`~distillery.backends.cache.CachedBackend` whose cache folder
lies under the run directory, so a re-run or resume never repeats a judge or student call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from distillery.backends.base import Backend, GenerationRequest, GenerationResult
from distillery.backends.config import TeacherConfig, build_backend

T = TypeVar("T")


def model_section(value: Any, defaults: dict[str, Any] | None = None) -> Any:
    """Validate a ``model:`` section as a :class:`~distillery.backends.config.TeacherConfig`.

    Args:
        value: a mapping (or an already built ``TeacherConfig``).
        defaults: keys filled in when the mapping lacks them (e.g. greedy ``sampling`` for a judge).

    Returns:
        The ``TeacherConfig``.

    Raises:
        ValueError: an unknown key or a bad value, each named by its path inside the section
            (pydantic reports it under the stage's ``model`` key).
    """
    if isinstance(value, TeacherConfig):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"model: expected a mapping like the teacher section, got {type(value).__name__}")
    data = {**(defaults or {}), **value}
    try:
        return TeacherConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"model.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise ValueError(problems) from None


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code (a stage's ``check_batch``).

    Raises:
        RuntimeError: called from a running event loop (use the stage's ``apply_async`` there).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise RuntimeError("this stage calls a model: inside an event loop use Stage.apply_async, not Stage.apply")


class StageBackend:
    """The cached backend of one stage.

    An in-process (``transformers``) model is loaded once and kept until :meth:`close`. An
    OpenAI-compatible client is made for each :meth:`generate` call and closed before it
    returns, inside the same event loop: an ``httpx`` client must not outlive or change its
    loop, and a stage may be driven from several loops (the runner's, or one ``asyncio.run``
    per synchronous ``apply``). The response cache is opened once.

    Args:
        config: the stage's ``TeacherConfig``.
        base_dir: folder relative model paths resolve against (the recipe's).
        cache_path: SQLite response cache, or ``None`` for no cache.
        role: the name its calls are metered under (the stage's kind: ``judge``, ``difficulty``).

    Attributes:
        calls, cache_hits: requests answered by the model and by the cache.
    """

    def __init__(self, config: Any, base_dir: str | Path | None, cache_path: str | Path | None,
                 role: str = "stage") -> None:
        self.config = config
        self.role = role
        self.base_dir = base_dir
        self.cache_path = Path(cache_path) if cache_path else None
        self._local: Backend | None = None
        self._cache: Any = None
        self.calls = 0
        self.cache_hits = 0

    @property
    def model(self) -> str:
        """The model name as the recipe gives it."""
        return self.config.model

    def _wrap(self, inner: Backend) -> Backend:
        from distillery.pipeline.budget import BudgetedBackend

        inner = BudgetedBackend(inner, self.role)  # metered and budgeted below the cache
        if self.cache_path is None:
            return inner
        from distillery.backends.cache import CachedBackend, ResponseCache

        if self._cache is None:
            self._cache = ResponseCache(self.cache_path)
        return CachedBackend(inner, self._cache)

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Results of ``requests`` in order (failures carry ``error_kind``; never raises for one).

        Raises:
            distillery.errors.BackendError: the model cannot be used at all (preflight).
        """
        if self.config.backend == "openai":
            inner = build_backend(self.config, self.base_dir)
            try:
                return await self._collect(self._wrap(inner), requests)
            finally:
                await inner.aclose()
        if self._local is None:
            self._local = build_backend(self.config, self.base_dir)
        return await self._collect(self._wrap(self._local), requests)

    async def _collect(self, backend: Backend, requests: list[GenerationRequest]) -> list[GenerationResult]:
        out: list[GenerationResult | None] = [None] * len(requests)
        async for i, result in backend.stream(requests):
            out[i] = result
            if result.cached:
                self.cache_hits += 1
            else:
                self.calls += 1
        return out  # type: ignore[return-value]

    def close(self) -> None:
        """Release the in-process model and close the cache."""
        self._local = None  # the in-process model is freed with its last reference
        if self._cache is not None:
            self._cache.close()
            self._cache = None
