"""A stage's own model: the ``model:`` section of the judge and difficulty stages.

The section has the shape of the recipe's ``teacher:`` section
(:class:`distillery.recipe.TeacherConfig`: ``backend``, ``model``, ``base_url``,
``concurrency``, ``sampling``, ...). It is validated lazily (:func:`model_section`) because
``distillery.recipe`` imports the stage registry, which imports the stage modules: a
module-level import of ``TeacherConfig`` here would be circular.

:class:`StageBackend` builds the backend the section names (as the runner does for the
teacher), wraps it in a :class:`~distillery.backends.cache.CachedBackend` whose SQLite file
lies under the run directory, so a re-run or resume never repeats a judge or student call,
and rebinds OpenAI-compatible clients to the running event loop (an ``httpx`` client must
not be shared across event loops).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from distillery.backends.base import Backend, GenerationRequest, GenerationResult

T = TypeVar("T")


def model_section(value: Any, defaults: dict[str, Any] | None = None) -> Any:
    """Validate a ``model:`` section as a :class:`distillery.recipe.TeacherConfig`.

    Args:
        value: a mapping (or an already built ``TeacherConfig``).
        defaults: keys filled in when the mapping lacks them (e.g. greedy ``sampling`` for a judge).

    Returns:
        The ``TeacherConfig``.

    Raises:
        ValueError: an unknown key or a bad value, each named by its path inside the section
            (pydantic reports it under the stage's ``model`` key).
    """
    from pydantic import ValidationError

    from distillery.recipe import TeacherConfig

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


def build_backend(config: Any, base_dir: str | Path | None = None) -> Backend:
    """The (uncached) backend a ``TeacherConfig`` names; ``builtin:`` names resolve to the shipped models.

    Raises:
        distillery.errors.RecipeError: ``api_key_env`` names an unset variable.
    """
    from distillery.builtin.models import resolve_model

    if config.backend == "openai":
        from distillery.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(
            config.model,
            base_url=config.base_url,
            api_key=config.api_key(),
            concurrency=config.concurrency,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
        )
    from distillery.backends.transformers_local import TransformersBackend

    backend = TransformersBackend(
        resolve_model(config.model, base_dir), device=config.device, dtype=config.dtype, batch_size=config.batch_size
    )
    backend.model = config.model  # the recipe's name enters the cache key (stable across machines)
    return backend


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
    """The cached backend of one stage, built on first use.

    Args:
        config: the stage's ``TeacherConfig``.
        base_dir: folder relative model paths resolve against (the recipe's).
        cache_path: SQLite response cache, or ``None`` for no cache.

    Attributes:
        calls, cache_hits: requests sent to the model and requests answered by the cache.
    """

    def __init__(self, config: Any, base_dir: str | Path | None, cache_path: str | Path | None) -> None:
        self.config = config
        self.base_dir = base_dir
        self.cache_path = Path(cache_path) if cache_path else None
        self._inner: Backend | None = None
        self._backend: Backend | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cache: Any = None
        self._closing: list[asyncio.Task] = []
        self.calls = 0
        self.cache_hits = 0

    @property
    def model(self) -> str:
        """The model name as the recipe gives it."""
        return self.config.model

    def _get(self) -> Backend:
        loop = asyncio.get_running_loop()
        loop_bound = self.config.backend == "openai"
        if self._backend is not None and (not loop_bound or self._loop is loop):
            return self._backend
        if self._inner is not None and self._loop is not None and not self._loop.is_closed():
            self._closing.append(self._loop.create_task(self._inner.aclose()))
        self._inner = build_backend(self.config, self.base_dir)
        backend: Backend = self._inner
        if self.cache_path is not None:
            from distillery.backends.cache import CachedBackend, ResponseCache

            if self._cache is None:
                self._cache = ResponseCache(self.cache_path)
            backend = CachedBackend(self._inner, self._cache)
        self._backend, self._loop = backend, loop
        return backend

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Results of ``requests`` in order (failures carry ``error_kind``; never raises for one).

        Raises:
            distillery.errors.BackendError: the model cannot be used at all (preflight).
        """
        backend = self._get()
        out: list[GenerationResult | None] = [None] * len(requests)
        async for i, result in backend.stream(requests):
            out[i] = result
            if result.cached:
                self.cache_hits += 1
            else:
                self.calls += 1
        return out  # type: ignore[return-value]

    def close(self) -> None:
        """Release the model or client and close the cache.

        Inside a running event loop (the runner calls stages' ``close`` there) the client's
        ``aclose`` is scheduled on that loop; a client whose loop has ended is dropped.
        """
        if self._inner is not None and self._loop is not None and not self._loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is self._loop:
                self._closing.append(running.create_task(self._inner.aclose()))
        self._inner = self._backend = None
        self._loop = None
        if self._cache is not None:
            self._cache.close()
            self._cache = None
