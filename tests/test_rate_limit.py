"""Rate limits: ``Retry-After`` parsing, the rpm/tpm token buckets, adaptive concurrency (AIMD),
and the OpenAI-compatible backend against a real local server that enforces a rate limit
(``tests/ratelimit_server.py``: a real provider's limit cannot be hit on demand).

The token-bucket tests inject a clock and a sleep that advances it (the clock, not a mock of a
component), so they check exact schedules without waiting."""

from __future__ import annotations

import asyncio
import math
from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillery.backends.base import GenerationRequest, SamplingParams
from distillery.backends.openai_compat import OpenAIBackend
from distillery.backends.ratelimit import AdaptiveConcurrency, RateLimiter, parse_retry_after
from tests.ratelimit_server import RateLimitServer

# ---------------------------------------------------------------- parse_retry_after


def test_retry_after_in_seconds():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after("0") == 0.0


def test_retry_after_as_an_http_date_is_relative_to_now():
    now = 1445412470.0  # 10 s before Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 10.0
    assert parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now=now) == 10.0  # RFC 850, obsolete
    assert parse_retry_after("Wed Oct 21 07:28:00 2015", now=now) == 10.0  # asctime, obsolete
    assert parse_retry_after(formatdate(now + 42, usegmt=True), now=now) == 42.0


def test_retry_after_date_in_the_past_is_zero():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # now is later than 2015
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 + 3600) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1e3", "nan", "inf", "1.5s", "9" * 400,
                                   "Wed, 32 Oct 2015 07:28:00 GMT", "Wed, 21 Foo 2015 07:28:00 GMT"])
def test_retry_after_garbage_is_none(value):
    assert parse_retry_after(value) is None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_retry_after_never_raises(value):
    got = parse_retry_after(value, now=1e9)
    assert got is None or (math.isfinite(got) and got >= 0)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**9), st.integers(0, 10**6))
def test_retry_after_round_trips(seconds, ahead):
    assert parse_retry_after(str(seconds)) == seconds
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + ahead, usegmt=True), now=now) == ahead


# ---------------------------------------------------------------- RateLimiter


class Clock:
    """Time that passes only when someone sleeps: ``sleep(s)`` advances it by ``s``."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


def limiter(rpm, tpm) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    return RateLimiter(rpm, tpm, clock=clock, sleep=clock.sleep), clock


def test_rpm_lets_a_minute_through_at_once_then_one_every_60_over_rpm_seconds():
    async def main():
        lim, clock = limiter(rpm=60, tpm=None)
        times = []

        async def one():
            await lim.acquire(0)
            times.append(clock())

        await asyncio.gather(*(one() for _ in range(150)))
        return times

    times = asyncio.run(main())
    assert times[:60] == [1000.0] * 60  # the bucket starts full: one minute's worth
    assert times[60:] == pytest.approx([1000.0 + i for i in range(1, 91)])  # then 1 per second
    for start in times:  # any interval of L seconds: at most rpm * (1 + L / 60)
        for length in (1.0, 10.0, 60.0):
            assert sum(start <= t < start + length for t in times) <= 60 * (1 + length / 60) + 1e-9


def test_tpm_waits_for_tokens_and_correct_gives_them_back():
    async def main():
        lim, clock = limiter(rpm=None, tpm=600)  # 10 tokens per second
        await lim.acquire(600)  # the whole bucket
        assert clock() == 1000.0
        await lim.acquire(100)  # 10 s of refill
        assert clock() == pytest.approx(1010.0)
        lim.correct(estimated=100, actual=40)  # 60 tokens back
        await lim.acquire(60)
        assert clock() == pytest.approx(1010.0)  # no wait
        lim.correct(estimated=60, actual=260)  # 200 more used than taken: a debt
        await lim.acquire(10)
        assert clock() == pytest.approx(1031.0)  # 200 + 10 tokens at 10/s
        lim.correct(estimated=10, actual=0)
        lim.correct(estimated=10**6, actual=0)  # never above capacity
        await lim.acquire(600)
        assert clock() == pytest.approx(1031.0)  # 10 back, then capped at 600: a full bucket

    asyncio.run(main())


def test_a_request_bigger_than_tpm_passes_once_the_bucket_is_full():
    async def main():
        lim, clock = limiter(rpm=None, tpm=100)
        await lim.acquire(50)
        await lim.acquire(250)  # more than the bucket holds: waits until it is full, 30 s
        assert clock() == pytest.approx(1030.0)
        await lim.acquire(10)  # the debt: -150 -> 10 takes 160 tokens at 100/60 per second
        assert clock() == pytest.approx(1030.0 + 96.0)

    asyncio.run(asyncio.wait_for(main(), 10))


def test_first_come_first_served_a_big_request_is_not_starved():
    async def main():
        lim, clock = limiter(rpm=None, tpm=600)
        await lim.acquire(600)
        order = []

        async def one(name, tokens):
            await lim.acquire(tokens)
            order.append((name, clock()))

        big = asyncio.create_task(one("big", 600))
        await asyncio.sleep(0)
        smalls = [asyncio.create_task(one(f"small{i}", 10)) for i in range(5)]
        await asyncio.gather(big, *smalls)
        return order

    order = asyncio.run(main())
    assert order[0] == ("big", pytest.approx(1060.0))  # served first, when the bucket is full again
    assert [name for name, _ in order[1:]] == [f"small{i}" for i in range(5)]


def test_a_cancelled_waiter_leaves_the_line():
    async def main():
        lim, clock = limiter(rpm=1, tpm=None)
        await lim.acquire(0)
        head = asyncio.create_task(lim.acquire(0))
        second = asyncio.create_task(lim.acquire(0))
        third = asyncio.create_task(lim.acquire(0))
        await asyncio.sleep(0)
        second.cancel()
        head.cancel()
        await asyncio.gather(head, second, return_exceptions=True)
        await third  # not stuck behind the cancelled ones
        return clock()

    assert asyncio.run(asyncio.wait_for(main(), 10)) >= 1000.0


def test_pause_blocks_everyone_until_it_ends():
    async def main():
        lim, clock = limiter(rpm=None, tpm=None)
        await lim.acquire(5)  # no limits: no wait
        assert clock() == 1000.0
        lim.pause(5.0)
        lim.pause(1.0)  # a shorter pause does not shorten it
        times = []

        async def one():
            await lim.acquire(1)
            times.append(clock())

        await asyncio.gather(one(), one(), one())
        assert times == [1005.0] * 3
        lim.pause(0)
        lim.pause(-3)
        await lim.acquire(1)
        assert clock() == 1005.0

    asyncio.run(main())


def test_limits_must_be_positive():
    for rpm, tpm in ((0, None), (None, -1), (float("nan"), None)):
        with pytest.raises(ValueError):
            RateLimiter(rpm, tpm)


# ---------------------------------------------------------------- AdaptiveConcurrency


async def hold(limiter: AdaptiveConcurrency, n: int, then) -> None:
    """``n`` tasks take a slot each at the same time, then each calls ``then()`` in its slot."""
    started = asyncio.Event()
    count = 0

    async def one():
        nonlocal count
        async with limiter.slot():
            count += 1
            if count == n:
                started.set()
            await started.wait()
            then()

    await asyncio.gather(*(one() for _ in range(n)))


def test_overload_halves_once_per_window():
    async def main():
        lim = AdaptiveConcurrency(16)
        await hold(lim, 16, lim.on_overload)  # 16 requests sent together, all refused: one event
        assert lim.current == 8
        await hold(lim, 8, lim.on_overload)  # sent after the decrease: a new event
        assert lim.current == 4
        lim.on_overload()  # from outside any slot: counts
        assert lim.current == 2
        for _ in range(5):
            await hold(lim, 1, lim.on_overload)
        assert lim.current == 1  # never below the minimum

    asyncio.run(main())


def test_success_grows_one_per_window_up_to_the_limit():
    lim = AdaptiveConcurrency(6, minimum=2)
    for _ in range(3):
        lim.on_overload()
    assert lim.current == 2  # 6 -> 3 -> 2 (the minimum) -> 2
    seen = []
    for _ in range(40):
        lim.on_success()
        seen.append(lim.current)
    # 2 successes -> 3, 3 more -> 4, 4 more -> 5, 5 more -> 6, then it stays
    assert seen.index(3) == 1 and seen.index(4) == 4 and seen.index(5) == 8 and seen.index(6) == 13
    assert max(seen) == 6 and seen[-1] == 6
    lim.on_success()
    lim.on_overload()
    assert lim.current == 3


def test_shrinking_below_in_flight_cancels_nothing_and_waits():
    async def main():
        lim = AdaptiveConcurrency(8)
        release = asyncio.Event()
        done = []

        async def holder(i):
            async with lim.slot():
                await release.wait()
            done.append(i)

        holders = [asyncio.create_task(holder(i)) for i in range(8)]
        await asyncio.sleep(0)
        assert lim.in_flight == 8
        lim.on_overload()
        lim.on_overload()
        assert lim.current == 2 and lim.in_flight == 8
        got = asyncio.Event()

        async def newcomer():
            async with lim.slot():
                got.set()
                assert lim.in_flight <= 2

        late = asyncio.create_task(newcomer())
        await asyncio.sleep(0.01)
        assert not got.is_set()
        release.set()
        await asyncio.gather(*holders, late)
        assert sorted(done) == list(range(8)) and got.is_set() and lim.in_flight == 0

    asyncio.run(asyncio.wait_for(main(), 10))


def test_slots_are_bounded_by_current_and_fifo():
    async def main():
        lim = AdaptiveConcurrency(3)
        most = 0
        order = []

        async def one(i):
            nonlocal most
            async with lim.slot():
                most = max(most, lim.in_flight)
                order.append(i)
                await asyncio.sleep(0)
            lim.on_success()

        await asyncio.gather(*(one(i) for i in range(20)))
        return most, order

    most, order = asyncio.run(main())
    assert most == 3 and order == list(range(20))


def test_a_cancelled_slot_waiter_gives_its_turn_on():
    async def main():
        lim = AdaptiveConcurrency(1)
        release = asyncio.Event()

        async def holder():
            async with lim.slot():
                await release.wait()

        first = asyncio.create_task(holder())
        await asyncio.sleep(0)
        waiting = asyncio.create_task(holder())
        behind = asyncio.create_task(holder())
        await asyncio.sleep(0)
        waiting.cancel()
        release.set()
        await asyncio.gather(first, behind)
        assert lim.in_flight == 0

    asyncio.run(asyncio.wait_for(main(), 10))


def test_disabled_is_a_plain_semaphore():
    async def main():
        lim = AdaptiveConcurrency(4, enabled=False)
        await hold(lim, 4, lim.on_overload)
        for _ in range(10):
            lim.on_overload()
            lim.on_success()
        assert lim.current == 4
        most = 0

        async def one():
            nonlocal most
            async with lim.slot():
                most = max(most, lim.in_flight)
                await asyncio.sleep(0)

        await asyncio.gather(*(one() for _ in range(12)))
        assert most == 4

    asyncio.run(main())


def test_bad_bounds_are_refused():
    for limit, minimum in ((0, 1), (4, 0), (4, 5)):
        with pytest.raises(ValueError):
            AdaptiveConcurrency(limit, minimum)


# ---------------------------------------------------------------- the backend against a rate-limited server


def requests(n: int, max_tokens: int = 16) -> list[GenerationRequest]:
    sampling = SamplingParams(temperature=0.5, max_tokens=max_tokens, seed=1)
    return [GenerationRequest.make([{"role": "user", "content": f"q{i}"}], sampling, 0) for i in range(n)]


def run_all(server: RateLimitServer, n: int, max_tokens: int = 16, **kw):
    kw.setdefault("max_retries", 1000)
    kw.setdefault("retry_budget_s", 120.0)
    kw.setdefault("backoff_base_s", 0.05)
    kw.setdefault("backoff_cap_s", 0.5)
    backend = OpenAIBackend(server.model, base_url=server.base_url, **kw)

    async def main():
        out = {}
        async for i, result in backend.stream(requests(n, max_tokens)):
            out[i] = result
        await backend.aclose()
        return [out[i] for i in range(n)]

    results = asyncio.run(main())
    assert all(r.error_kind is None and r.text for r in results), [r.error for r in results if r.error]
    return results


def arrivals(server: RateLimitServer) -> list[float]:
    return sorted(hit.at for hit in server.log)


def test_rpm_at_the_servers_limit_is_never_refused():
    """A window of 40 requests per second; rpm 39 lets 39 through at once, then one every
    60 / 39 s, so no second ever sees more than 40: no 429. Without rpm the same run is refused."""
    server = RateLimitServer(requests=40, window_s=1.0)
    try:
        run_all(server, 41, concurrency=41, rpm=39, adaptive_concurrency=True)
        assert server.counts[429] == 0 and server.counts[200] == 41
        times = arrivals(server)
        assert times[-1] - times[0] >= 2 * 60 / 39 * 0.9  # the two over the burst waited for the refill
    finally:
        server.close()
    control = RateLimitServer(requests=40, window_s=1.0)
    try:
        run_all(control, 60, concurrency=60, adaptive_concurrency=True)
        assert control.counts[429] >= 1 and control.counts[200] == 60
    finally:
        control.close()


def test_tpm_at_the_servers_limit_is_never_refused():
    """A window of 940 tokens per second, each request counted as its prompt plus max_tokens
    (21 tokens) and answered that long. 45 requests are 945 tokens, more than one window
    holds; tpm 900 lets at most 900 + 15 through in any second: no 429. Without tpm the same
    requests are refused."""
    server = RateLimitServer(tokens=940, window_s=1.0, fill=True)
    try:
        results = run_all(server, 45, max_tokens=20, concurrency=45, tpm=900, adaptive_concurrency=True)
        assert server.counts[429] == 0 and server.counts[200] == 45
        assert all(r.tokens_out == 20 for r in results)
        times = arrivals(server)
        assert times[-1] - times[0] >= 1.0  # the last ones waited for the refill
    finally:
        server.close()
    control = RateLimitServer(tokens=940, window_s=1.0, fill=True)
    try:
        run_all(control, 80, max_tokens=20, concurrency=80, adaptive_concurrency=True)
        assert control.counts[429] >= 1
    finally:
        control.close()


@pytest.mark.parametrize("status", [503, 429])
def test_adaptive_concurrency_converges_on_a_concurrency_cap(status):
    """A server that serves 3 requests at a time and answers 503 (or 429, without Retry-After)
    to a fourth. With 16 allowed in flight and no rpm, every request still succeeds; adaptive
    concurrency backs off to what the server serves and gets far fewer refusals than the same
    run retrying at a fixed concurrency (about 4x fewer when measured)."""
    counts = {}
    for adaptive in (True, False):
        server = RateLimitServer(max_concurrent=3, latency_s=0.1, overload_status=status)
        try:
            run_all(server, 30, concurrency=16, adaptive_concurrency=adaptive)
            assert server.counts[200] == 30 and server.max_in_flight <= 3
            counts[adaptive] = server.counts[status]
        finally:
            server.close()
    assert counts[True] * 2 < counts[False], counts


def test_retry_after_as_an_http_date_is_honoured():
    """3 requests per second, 429s carrying Retry-After as an HTTP date (whole seconds): a
    request refused is sent again no earlier than that date, and no request is refused twice
    (the pause holds the others too, so they do not spend the window again)."""
    server = RateLimitServer(requests=3, window_s=1.0, retry_after="date")
    try:
        run_all(server, 6, concurrency=6, backoff_base_s=0.01, backoff_cap_s=5.0)
    finally:
        server.close()
    refused = [hit for hit in server.log if hit.status == 429]
    assert refused and server.counts[200] == 6
    for hit in refused:
        assert hit.retry_after.endswith(" GMT") and hit.retry_at is not None
        again = [later.at for later in server.log if later.key == hit.key and later.at > hit.at]
        assert again and min(again) >= hit.retry_at - 0.05  # room for rounding, none for early retries
    assert len({hit.key for hit in refused}) == len(refused)  # nobody refused twice
