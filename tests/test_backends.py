"""The OpenAI-compatible backend against real HTTP servers: retries with backoff on 429,
5xx and timeouts; preflight failures; the response cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from distillery.backends.base import GenerationRequest, SamplingParams
from distillery.backends.cache import CachedBackend, ResponseCache
from distillery.backends.openai_compat import OpenAIBackend, backoff_delay
from distillery.errors import BackendError
from tests.fault_server import FaultServer
from tests.helpers import free_port

SAMPLING = SamplingParams(temperature=0.5, max_tokens=16, seed=1)


def requests(n: int) -> list[GenerationRequest]:
    return [GenerationRequest.make([{"role": "user", "content": f"q{i}"}], SAMPLING, 0) for i in range(n)]


async def collect(backend, reqs):
    out = {}
    try:
        async for i, r in backend.stream(reqs):
            out[i] = r
    finally:
        await backend.aclose()
    return [out[i] for i in range(len(reqs))]


def fast_backend(server: FaultServer, **kw) -> OpenAIBackend:
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("backoff_cap_s", 0.05)
    return OpenAIBackend(server.model, base_url=server.base_url, **kw)


def test_429_storm_then_success_is_retried_and_counted():
    server = FaultServer(lambda n, body: ("status", 429) if n < 12 else ("ok", "fine #### 1"))
    try:
        backend = fast_backend(server, concurrency=4, max_retries=8)
        results = asyncio.run(collect(backend, requests(6)))
        assert all(r.error_kind is None and r.text == "fine #### 1" for r in results)
        assert backend.stats.retries["rate_limit"] == 12
        assert sum(r.retries for r in results) == 12
        assert results[0].tokens_in == 11 and results[0].tokens_out == 7
    finally:
        server.close()


def test_server_errors_and_timeouts_are_retried():
    def script(n, body):
        return [("status", 500), ("status", 503), ("hang", 2.0)][n] if n < 3 else ("ok", "x")

    server = FaultServer(script)
    try:
        backend = fast_backend(server, concurrency=1, timeout_s=0.5, max_retries=5)
        (result,) = asyncio.run(collect(backend, requests(1)))
        assert result.text == "x" and result.retries == 3
        assert backend.stats.retries == {"server_error": 2, "timeout": 1}
    finally:
        server.close()


def test_retries_exhausted_gives_a_failed_result_not_an_exception():
    server = FaultServer(lambda n, body: ("status", 429))
    try:
        backend = fast_backend(server, max_retries=2)
        (result,) = asyncio.run(collect(backend, requests(1)))
        assert result.text is None and result.error_kind == "rate_limit" and result.retries == 2
        assert "after 2 retries" in result.error
        assert backend.stats.failures == {"rate_limit": 1}
    finally:
        server.close()


def test_client_errors_are_not_retried():
    server = FaultServer(lambda n, body: ("status", 400))
    try:
        backend = fast_backend(server, max_retries=5)
        (result,) = asyncio.run(collect(backend, requests(1)))
        assert result.error_kind == "http_400" and result.retries == 0 and server.requests == 1
    finally:
        server.close()


def test_backoff_is_capped_full_jitter():
    import random

    rng = random.Random(0)
    delays = [backoff_delay(a, 0.5, 4.0, rng) for a in range(10) for _ in range(50)]
    assert all(0 <= d <= 4.0 for d in delays) and max(delays) > 2.0


def test_preflight_unreachable_server_fails_fast_with_the_url():
    backend = OpenAIBackend("m", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0)
    with pytest.raises(BackendError, match=r"cannot reach the server at http://127\.0\.0\.1:\d+/v1"):
        asyncio.run(backend.preflight())


def test_preflight_unknown_model_lists_what_the_server_offers():
    server = FaultServer(lambda n, body: ("ok", "x"), model="served-model")
    try:
        backend = OpenAIBackend("other-model", base_url=server.base_url)
        with pytest.raises(BackendError, match=r"cannot serve model 'other-model'.*served-model"):
            asyncio.run(backend.preflight())
        asyncio.run(OpenAIBackend("served-model", base_url=server.base_url).preflight())
    finally:
        server.close()


def test_cache_serves_repeats_without_calls_and_skips_failures(tmp_path: Path):
    server = FaultServer(lambda n, body: ("status", 400) if body["messages"][0]["content"] == "q2" else ("ok", "a"))
    try:
        cache = ResponseCache(tmp_path / "c.sqlite")
        backend = CachedBackend(fast_backend(server, max_retries=0), cache)
        first = asyncio.run(collect(backend, requests(3)))
        assert [r.cached for r in first] == [False] * 3 and server.requests == 3
        assert len(cache) == 2  # the failed one is not cached
        second = asyncio.run(collect(backend, requests(3)))
        assert [r.cached for r in second] == [True, True, False] and server.requests == 4
        assert cache.hits == 2
        cache.close()
        # a new process sees the same cache (keys are stable values, not object ids)
        again = CachedBackend(fast_backend(server), ResponseCache(tmp_path / "c.sqlite"))
        third = asyncio.run(collect(again, requests(2)))
        assert all(r.cached for r in third) and server.requests == 4
    finally:
        server.close()


def test_cache_key_covers_every_part_of_the_request():
    b = OpenAIBackend("m", base_url="http://127.0.0.1:1/v1")
    r = GenerationRequest.make([{"role": "user", "content": "q"}], SAMPLING, 0)
    variants = [
        GenerationRequest.make([{"role": "user", "content": "q!"}], SAMPLING, 0),
        GenerationRequest.make([{"role": "user", "content": "q"}], SamplingParams(temperature=0.6, max_tokens=16, seed=1), 0),
        GenerationRequest.make([{"role": "user", "content": "q"}], SAMPLING, 1),
    ]
    keys = {b.cache_key(r)} | {b.cache_key(v) for v in variants} | {OpenAIBackend("m2").cache_key(r)}
    assert len(keys) == 5
    assert b.cache_key(r) == OpenAIBackend("m", base_url="http://elsewhere/v1").cache_key(r)


def test_a_locked_cache_is_a_clear_error_and_keeps_what_it_has(tmp_path: Path, monkeypatch):
    """Another process holds the cache file's write lock (a real second SQLite connection):
    a write fails with one clear message naming the file, and what was stored before is intact."""
    import sqlite3

    import distillery.backends.cache as cache_module
    from distillery.backends.base import GenerationResult
    from distillery.backends.cache import CacheError

    path = tmp_path / "cache.sqlite"
    cache = ResponseCache(path)
    cache.put("a" * 64, "openai", "m", GenerationResult(text="kept"))
    cache.close()
    monkeypatch.setattr(cache_module, "BUSY_TIMEOUT_MS", 200)  # the real wait is 60 s
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        locked = ResponseCache(path)
        with pytest.raises(CacheError, match=r"cache\.sqlite: it is locked by another process .* for 0\.2 s"):
            locked.probe(timeout_s=0.2)  # what a run does before any work
        assert locked.get_many(["a" * 64])["a" * 64].text == "kept"  # WAL: readers are not blocked
        with pytest.raises(CacheError, match=r"cache\.sqlite: it is locked by another process"):
            locked.put("b" * 64, "openai", "m", GenerationResult(text="new"))
        locked.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert ResponseCache(path).get_many(["a" * 64])["a" * 64].text == "kept"


def test_a_full_disk_is_named_as_such():
    """A full disk cannot be caused here: the message for SQLite's own error text is checked."""
    import sqlite3

    from distillery.backends.cache import _cache_error

    error = _cache_error(Path("/runs/x/cache/responses-0.sqlite"), sqlite3.OperationalError("database or disk is full"))
    assert str(error).startswith("response cache /runs/x/cache/responses-0.sqlite: the disk is full")
