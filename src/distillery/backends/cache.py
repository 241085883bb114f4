"""The response cache: SQLite, one row per response, written the moment it is received.

Keyed by :meth:`Backend.cache_key` (backend, model, messages, sampling parameters, sample
index, step), so re-running a recipe, or resuming after a crash, never pays for a response
twice. Failed requests are not cached (they are retried on the next run); empty or truncated
responses are (they are real answers of the model).

Layout: a folder of :data:`SHARDS` SQLite files (``responses-0.sqlite`` ... ``responses-f.sqlite``),
a key living in the file named by its first hex digit. Several processes (the Ray executor's
workers) can write at once without one lock for all: each write takes only its shard's lock,
for one short transaction, and a key's shard never depends on who wrote it, so any worker
finds any response whatever batch or run produced it (see ``docs/architecture.md``). A path
ending in ``.sqlite`` is one SQLite file instead (the layout before sharding).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

from distillery.backends.base import Backend, GenerationRequest, GenerationResult
from distillery.errors import DistilleryError
from distillery.records import utc_now

SHARDS = 16
"""SQLite files of a cache folder (keys are spread by their first hex digit)."""

BUSY_TIMEOUT_MS = 60_000
"""How long a write waits for another process's transaction on the same shard."""


class CacheError(DistilleryError):
    """The response cache cannot be read or written (locked by another process, disk full).
    Nothing half-written: every response stored before is intact (SQLite's transactions)."""


def _cache_error(path: Path, e: sqlite3.Error, waited_s: float | None = None) -> CacheError:
    """A clear message for a SQLite failure on the cache file ``path`` (``waited_s``: how long a
    lock was waited for; default the busy timeout)."""
    text = str(e)
    if "locked" in text or "busy" in text:
        waited = BUSY_TIMEOUT_MS / 1000 if waited_s is None else waited_s
        why = (f"it is locked by another process (another run using the same cache?) and stayed locked for "
               f"{waited:g} s; run again once that process is done")
    elif "full" in text:
        why = "the disk is full; free some space and run the same command again (responses stored so far are kept)"
    elif "readonly" in text or "permission" in text.lower():
        why = "it cannot be written (read-only file or folder); point output.cache at a writable place"
    else:
        why = f"{type(e).__name__}: {text}"
    return CacheError(f"response cache {path}: {why}")


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS responses ("
        " key TEXT PRIMARY KEY, backend TEXT, model TEXT, result TEXT NOT NULL, created_at TEXT)"
    )
    return db


def cache_location(folder: str | Path) -> Path:
    """Where the cache ``folder`` is: ``folder`` itself, or the one-file cache an earlier
    version kept beside it (``<folder>.sqlite``) while no folder exists, so an upgrade
    does not pay again for responses already received."""
    folder = Path(folder)
    legacy = folder.with_name(folder.name + ".sqlite")
    return legacy if legacy.is_file() and not folder.exists() else folder


class ResponseCache:
    """A persistent map from request key (64 hex digits) to :class:`GenerationResult`.

    Args:
        path: the cache folder (created if missing), or a ``.sqlite`` file.

    Uses WAL journaling and commits every write, so a SIGKILL loses at most the response being
    written; a killed process's responses are all there for the next run.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.single = self.path.suffix == ".sqlite" or self.path.is_file()
        if self.single:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        else:
            self.path.mkdir(parents=True, exist_ok=True)
        self._dbs: dict[int, sqlite3.Connection] = {}
        self.hits = 0
        self.misses = 0
        self._creating: threading.Thread | None = None
        self._made: dict[int, threading.Event] = {}  # shards the background thread is making
        missing = [] if self.single else [s for s in range(SHARDS) if not self._shard_path(s).exists()]
        if missing:  # a new cache: make its files in the background (each costs fsyncs), not at the first request
            self._made = {s: threading.Event() for s in missing}
            self._creating = threading.Thread(target=self._create, args=(missing,), name="cache-create", daemon=True)
            self._creating.start()

    def _create(self, shards: list[int]) -> None:
        """Make the files of ``shards`` (in the background thread, each with its own connection)."""
        for shard in shards:
            try:
                _connect(self._shard_path(shard)).close()
            except sqlite3.Error:
                pass  # the first real use will make it, or say why not
            finally:
                self._made[shard].set()

    def _shard_path(self, shard: int) -> Path:
        return self.path if self.single else self.path / f"responses-{shard:x}.sqlite"

    def _shard(self, key: str) -> int:
        return 0 if self.single else int(key[0], 16) % SHARDS

    def _db(self, shard: int) -> sqlite3.Connection:
        db = self._dbs.get(shard)
        if db is None:
            made = self._made.get(shard)
            if made is not None:
                made.wait()  # not while the background thread sets it up: two first connections race on WAL
            try:
                db = self._dbs[shard] = _connect(self._shard_path(shard))
            except sqlite3.Error as e:
                raise _cache_error(self._shard_path(shard), e) from None
        return db

    def probe(self, timeout_s: float = 2.0) -> None:
        """Check at once that the existing cache files can be written: a run fails before any
        work when another process holds one locked, instead of after SQLite's busy timeout.

        Raises:
            CacheError: a file stays locked for ``timeout_s`` seconds, or cannot be written.
        """
        for shard in range(1 if self.single else SHARDS):
            path = self._shard_path(shard)
            if shard in self._made or not path.exists():
                continue  # being made now, or not made yet: nothing else holds it
            try:
                db = sqlite3.connect(path, isolation_level=None, timeout=timeout_s)
                try:
                    db.execute("BEGIN IMMEDIATE")  # takes the write lock, or waits up to timeout_s
                    db.execute("ROLLBACK")
                finally:
                    db.close()
            except sqlite3.Error as e:
                raise _cache_error(path, e, waited_s=timeout_s) from None

    def get_many(self, keys: list[str]) -> dict[str, GenerationResult]:
        """Cached results of ``keys`` (absent keys are left out)."""
        by_shard: dict[int, list[str]] = {}
        for key in keys:
            by_shard.setdefault(self._shard(key), []).append(key)
        found: dict[str, GenerationResult] = {}
        for shard, shard_keys in by_shard.items():
            made = self._made.get(shard)
            if shard not in self._dbs and ((made is not None and not made.is_set()) or not self._shard_path(shard).exists()):
                continue  # still being made, or not made: nothing is cached there
            db = self._db(shard)
            for start in range(0, len(shard_keys), 500):
                chunk = shard_keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                try:
                    rows = db.execute(f"SELECT key, result FROM responses WHERE key IN ({marks})", chunk).fetchall()
                except sqlite3.Error as e:
                    raise _cache_error(self._shard_path(shard), e) from None
                for key, result in rows:
                    found[key] = GenerationResult.from_json(result)
        return found

    def put(self, key: str, backend: str, model: str, result: GenerationResult) -> None:
        """Store ``result`` under ``key`` (replacing any earlier one), committed at once.

        Raises:
            CacheError: the cache is locked by another process, the disk is full, or it is read-only.
        """
        shard = self._shard(key)
        try:
            self._db(shard).execute(
                "INSERT OR REPLACE INTO responses(key, backend, model, result, created_at) VALUES (?, ?, ?, ?, ?)",
                (key, backend, model, result.to_json(), utc_now()),
            )
        except sqlite3.Error as e:
            raise _cache_error(self._shard_path(shard), e) from None

    def __len__(self) -> int:
        shards = [0] if self.single else [s for s in range(SHARDS) if (self.path / f"responses-{s:x}.sqlite").exists()]
        return sum(self._db(s).execute("SELECT COUNT(*) FROM responses").fetchone()[0] for s in shards)

    def close(self) -> None:
        """Close the databases."""
        if self._creating is not None:
            self._creating.join()
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()


_FRESH: contextvars.ContextVar[bool] = contextvars.ContextVar("distillery_fresh_calls", default=False)


@contextlib.contextmanager
def fresh_calls() -> Iterator[None]:
    """Within this block, cached backends call the model for every request (and still store
    each response): a pilot that measures what calls cost, whose responses a run then reuses."""
    token = _FRESH.set(True)
    try:
        yield
    finally:
        _FRESH.reset(token)


class CachedBackend(Backend):
    """Wraps a backend with a :class:`ResponseCache`: hits are served without a call, and every
    response is stored the moment the inner backend receives it.

    Args:
        inner: the backend that makes real calls.
        cache: where responses are kept.
    """

    def __init__(self, inner: Backend, cache: ResponseCache) -> None:
        super().__init__(inner.model)
        self.kind = inner.kind  # type: ignore[misc]
        self.raw_completions = inner.raw_completions  # type: ignore[misc]
        self.inner = inner
        self.cache = cache
        self.stats = inner.stats
        self._preflighted = False
        self._inflight: dict[str, asyncio.Future] = {}  # keys being fetched now -> their answer

    async def preflight(self) -> None:
        """Preflight the inner backend once, lazily: a fully cached run never contacts it."""
        if not self._preflighted:
            await self.inner.preflight()
            self._preflighted = True

    async def stream(
        self,
        requests: list[GenerationRequest],
        on_receive: Callable[[int, GenerationResult], None] | None = None,
    ) -> AsyncIterator[tuple[int, GenerationResult]]:
        """Results of ``requests`` as they come: cache hits first, then the inner backend's.

        A request whose key another stream of this backend is already fetching (two batches
        running at once that ask the same thing) is not sent again: it waits for that answer
        and gets it as a cache hit."""
        keys = [self.inner.cache_key(r) for r in requests]
        found = {} if _FRESH.get() else self.cache.get_many(keys)
        misses: list[int] = []
        borrowed: list[tuple[int, asyncio.Future]] = []
        for i, key in enumerate(keys):
            if key in found:
                self.cache.hits += 1
                result = found[key]
                result.cached = True
                if on_receive is not None:
                    on_receive(i, result)
                yield i, result
            elif key in self._inflight and not _FRESH.get():
                borrowed.append((i, self._inflight[key]))
            else:
                misses.append(i)
        if not misses and not borrowed:
            return
        self.cache.misses += len(misses)
        loop = asyncio.get_running_loop()
        owned: dict[str, asyncio.Future] = {}
        for i in misses:
            if keys[i] not in self._inflight:
                owned[keys[i]] = self._inflight[keys[i]] = loop.create_future()

        def store(j: int, result: GenerationResult) -> None:
            key = keys[misses[j]]
            if result.error_kind is None:
                self.cache.put(key, self.inner.kind, self.inner.model, result)
            future = owned.pop(key, None)
            if future is not None:
                self._inflight.pop(key, None)
                if not future.done():
                    future.set_result(result)
            if on_receive is not None:
                on_receive(misses[j], result)

        try:
            if not borrowed:  # the usual case: no other stream is fetching any of these
                await self.preflight()
                async for j, result in self.inner.stream([requests[i] for i in misses], on_receive=store):
                    yield misses[j], result
                return
            async for item in self._merged(requests, misses, borrowed, store, on_receive):
                yield item
        finally:
            for key, future in owned.items():  # never answered (cancelled, failed): waiters get a failure
                self._inflight.pop(key, None)
                if not future.done():
                    future.set_exception(RuntimeError("the request was not answered"))
                    future.exception()  # retrieved: no "never retrieved" warning when no one waited

    async def _merged(self, requests: list[GenerationRequest], misses: list[int],
                      borrowed: list[tuple[int, asyncio.Future]], store: Callable[[int, GenerationResult], None],
                      on_receive: Callable[[int, GenerationResult], None] | None,
                      ) -> AsyncIterator[tuple[int, GenerationResult]]:
        """The answers of ``misses`` (sent) and of ``borrowed`` (another stream's), as they come."""
        queue: asyncio.Queue = asyncio.Queue()

        async def own() -> None:
            if misses:
                await self.preflight()
                async for j, result in self.inner.stream([requests[i] for i in misses], on_receive=store):
                    queue.put_nowait((misses[j], result))

        async def wait(i: int, future: asyncio.Future) -> None:
            try:
                result = replace(await asyncio.shield(future), cached=True)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the owner failed before answering: a transient failure here too
                result = GenerationResult(text=None, error_kind="exception", error=f"{type(e).__name__}: {e}")
            if on_receive is not None:
                on_receive(i, result)
            queue.put_nowait((i, result))

        tasks = [asyncio.create_task(own())] + [asyncio.create_task(wait(i, f)) for i, f in borrowed]
        try:
            for _ in range(len(misses) + len(borrowed)):
                getter = asyncio.ensure_future(queue.get())
                done, _pending = await asyncio.wait({getter, *[t for t in tasks if not t.done()]},
                                                    return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    for t in done:
                        t.result()  # re-raise a failure of the inner stream
                    item = await queue.get()
                else:
                    item = getter.result()
                yield item
        finally:
            for t in tasks:
                t.cancel()

    async def aclose(self) -> None:
        await self.inner.aclose()
