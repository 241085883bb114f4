"""The response cache: SQLite, one row per response, committed as each arrives.

Keyed by :meth:`Backend.cache_key` (backend, model, messages, sampling parameters, sample
index), so re-running a recipe, or resuming after a crash, never pays for a response twice.
Failed requests are not cached (they are retried on the next run); empty or truncated
responses are (they are real answers of the model).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from distillery.backends.base import Backend, GenerationRequest, GenerationResult
from distillery.records import utc_now


class ResponseCache:
    """A persistent map from request key to :class:`GenerationResult`.

    Args:
        path: the SQLite file (created with its parent folder if missing).

    Uses WAL journaling and commits after every write, so a SIGKILL loses at most the
    response being written.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses ("
            " key TEXT PRIMARY KEY, backend TEXT, model TEXT, result TEXT NOT NULL, created_at TEXT)"
        )
        self.hits = 0
        self.misses = 0

    def get_many(self, keys: list[str]) -> dict[str, GenerationResult]:
        """Cached results of ``keys`` (absent keys are left out)."""
        found: dict[str, GenerationResult] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, result in self._db.execute(f"SELECT key, result FROM responses WHERE key IN ({marks})", chunk):
                found[key] = GenerationResult.from_json(result)
        return found

    def put(self, key: str, backend: str, model: str, result: GenerationResult) -> None:
        """Store ``result`` under ``key`` (replacing any earlier one) and commit."""
        self._db.execute(
            "INSERT OR REPLACE INTO responses(key, backend, model, result, created_at) VALUES (?, ?, ?, ?, ?)",
            (key, backend, model, result.to_json(), utc_now()),
        )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        """Close the database."""
        self._db.close()


class CachedBackend(Backend):
    """Wraps a backend with a :class:`ResponseCache`: hits are served without a call.

    Args:
        inner: the backend that makes real calls.
        cache: where responses are kept.
    """

    def __init__(self, inner: Backend, cache: ResponseCache) -> None:
        super().__init__(inner.model)
        self.kind = inner.kind  # type: ignore[misc]
        self.inner = inner
        self.cache = cache
        self.stats = inner.stats
        self._preflighted = False

    async def preflight(self) -> None:
        """Preflight the inner backend once, lazily: a fully cached run never contacts it."""
        if not self._preflighted:
            await self.inner.preflight()
            self._preflighted = True

    async def stream(self, requests: list[GenerationRequest]) -> AsyncIterator[tuple[int, GenerationResult]]:
        keys = [self.inner.cache_key(r) for r in requests]
        found = self.cache.get_many(keys)
        misses: list[int] = []
        for i, key in enumerate(keys):
            if key in found:
                self.cache.hits += 1
                result = found[key]
                result.cached = True
                yield i, result
            else:
                misses.append(i)
        if not misses:
            return
        self.cache.misses += len(misses)
        await self.preflight()
        async for j, result in self.inner.stream([requests[i] for i in misses]):
            i = misses[j]
            if result.error_kind is None:
                self.cache.put(keys[i], self.inner.kind, self.inner.model, result)
            yield i, result

    async def aclose(self) -> None:
        await self.inner.aclose()
