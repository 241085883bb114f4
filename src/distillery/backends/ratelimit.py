"""Client-side rate limiting for the OpenAI-compatible backend: the provider's ``rpm`` / ``tpm``
limits as token buckets, adaptive concurrency (AIMD) on 429/503 answers, and ``Retry-After``.

* :class:`RateLimiter`: two token buckets (Turner, "New directions in communications (or which
  way to the information age?)", IEEE Communications Magazine 24(10), 1986; the same meter as
  RFC 2697's committed bucket), one of requests and one of tokens, each holding at most one
  minute's worth and refilled continuously. A request waits, first come first served, until one
  request and its estimated tokens fit; after the call the estimate is corrected from the usage
  the server reports.
* :class:`AdaptiveConcurrency`: the requests allowed in flight, grown by one per window of
  successes and halved on overload, at most once per window (additive increase, multiplicative
  decrease: Chiu & Jain, "Analysis of the increase and decrease algorithms for congestion
  avoidance in computer networks", Computer Networks and ISDN Systems 17(1), 1989; TCP's
  congestion avoidance, RFC 5681 sec. 3.1), so that clients of a rate-limited provider converge
  on what it serves instead of retrying in lockstep.
* :func:`parse_retry_after`: the ``Retry-After`` header (RFC 9110 sec. 10.2.3), in seconds or as
  an HTTP date.

Everything here runs on one asyncio event loop (no threads, no locks beyond asyncio's).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = ["AdaptiveConcurrency", "RateLimiter", "parse_retry_after"]

_SECONDS = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait, from a ``Retry-After`` header (RFC 9110 sec. 10.2.3).

    Args:
        value: the header's value: delay-seconds (``"120"``; a decimal such as ``"1.5"`` is
            accepted too, as some servers send it), or an HTTP date
            (``"Wed, 21 Oct 2015 07:28:00 GMT"``; the obsolete RFC 850 and asctime forms too).
        now: the current unix time in seconds, that a date is measured from (default
            ``time.time()``).

    Returns:
        Seconds to wait (``>= 0``; a date in the past gives ``0.0``), or ``None`` for a missing
        or unparseable value, or one too large to be a finite number of seconds. Never raises.
    """
    if value is None:
        return None
    text = value.strip()
    if _SECONDS.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: the RFC's dates are always UTC
        when = when.replace(tzinfo=UTC)
    try:
        at = when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    return max(0.0, at - (time.time() if now is None else now))


class _Bucket:
    """A token bucket: ``capacity`` tokens at most, ``rate`` tokens per second refilled
    continuously; its level may go negative (a debt paid back by the refill)."""

    def __init__(self, per_minute: float, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait(self, amount: float) -> float:
        """Seconds until ``min(amount, capacity)`` tokens are in the bucket (0: now)."""
        missing = min(amount, self.capacity) - self.level
        return missing / self.rate if missing > 0 else 0.0


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits, as two token buckets (see the module doc).

    Each bucket holds one minute's worth (``rpm`` requests, ``tpm`` tokens), starts full and
    refills continuously at ``rpm / 60`` requests and ``tpm / 60`` tokens per second. Over any
    interval of ``L`` seconds at most ``rpm * (1 + L / 60)`` requests are let through (and as many
    tokens, give or take the corrections of estimates).

    Args:
        rpm: requests per minute, or ``None`` for no request limit.
        tpm: tokens (prompt + completion) per minute, or ``None`` for no token limit.
        clock: monotonic time in seconds (injectable for tests).
        sleep: ``async sleep(seconds)`` (injectable for tests).

    Raises:
        ValueError: ``rpm`` or ``tpm`` is not a positive number.
    """

    def __init__(self, rpm: float | None, tpm: float | None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        for name, limit in (("rpm", rpm), ("tpm", tpm)):
            if limit is not None and not (limit > 0 and math.isfinite(limit)):
                raise ValueError(f"{name} must be a positive number, not {limit!r}")
        self.rpm, self.tpm = rpm, tpm
        self._clock, self._sleep = clock, sleep
        now = clock()
        self._requests = _Bucket(rpm, now) if rpm is not None else None
        self._tokens = _Bucket(tpm, now) if tpm is not None else None
        self._paused_until = -math.inf
        self._line: deque[asyncio.Future[None]] = deque()  # FIFO: the head waits for tokens, the rest for it

    async def acquire(self, tokens: int) -> None:
        """Wait until one request and ``tokens`` tokens fit, then take them.

        Callers are served first come first served: the first in line waits for its own
        tokens while those behind it wait for it, so a big request is not starved by small
        ones. A request of more tokens than ``tpm`` is let through once the bucket is full
        (leaving it in debt), so it never waits forever. A :meth:`pause` holds everyone.

        Args:
            tokens: the request's estimated tokens (prompt + ``max_tokens``), ``>= 0``.
        """
        if self._requests is None and self._tokens is None and not self._line and self._paused_until <= self._clock():
            return  # no limits, no pause, no one waiting: the hot path of an unlimited server
        me = asyncio.get_running_loop().create_future()
        self._line.append(me)
        try:
            if self._line[0] is not me:
                await me  # resolved when the caller before us leaves the line
            while True:
                now = self._clock()
                delay = self._paused_until - now
                for bucket, amount in ((self._requests, 1), (self._tokens, tokens)):
                    if bucket is not None:
                        bucket.refill(now)
                        delay = max(delay, bucket.wait(amount))
                if delay <= 0:
                    break
                await self._sleep(delay)
            if self._requests is not None:
                self._requests.level -= 1
            if self._tokens is not None:
                self._tokens.level -= tokens
        finally:  # served or cancelled: leave the line, and hand the head on
            was_head = self._line[0] is me
            self._line.remove(me)
            if was_head and self._line and not self._line[0].done():
                self._line[0].set_result(None)

    def correct(self, estimated: int, actual: int) -> None:
        """After a call: give back ``estimated - actual`` tokens (or take the excess; the bucket
        may go negative, delaying later requests until the refill pays the debt back)."""
        if self._tokens is not None:
            self._tokens.refill(self._clock())
            self._tokens.level = min(self._tokens.capacity, self._tokens.level + (estimated - actual))

    def pause(self, seconds: float) -> None:
        """Let no request through until ``seconds`` from now (a 429's ``Retry-After``); a pause
        never shortens one already in force."""
        if seconds > 0 and math.isfinite(seconds):
            self._paused_until = max(self._paused_until, self._clock() + seconds)


# The decrease epoch at which the current task was last granted a slot (see on_overload).
_GRANTED_EPOCH: contextvars.ContextVar[int | None] = contextvars.ContextVar("_granted_epoch", default=None)


class AdaptiveConcurrency:
    """The requests allowed in flight, adapted by AIMD (see the module doc).

    ``current`` starts at ``limit``. :meth:`on_success` adds one to it after ``current``
    successes (one window, as TCP's congestion avoidance adds one segment per round trip), up to
    ``limit``; :meth:`on_overload` (a 429 or 503) sets it to ``max(minimum, current // 2)``, at
    most once per window: an overload of a request that was granted its slot before the last
    decrease was sent into the same congestion and is not counted again (TCP's one reduction
    per window of data, RFC 5681 sec. 3.1 / RFC 6582). Call ``on_*`` from the task that held the
    slot (the slot's grant is remembered in a context variable of that task); an overload
    reported from a task that never held a slot always counts.

    Shrinking ``current`` below ``in_flight`` cancels nothing: new slots are granted, first come
    first served, only once ``in_flight < current``.

    Args:
        limit: most slots, ``>= 1`` (the backend's ``concurrency``).
        minimum: fewest slots a decrease leaves, ``1 <= minimum <= limit``.
        enabled: ``False``: a plain semaphore of ``limit`` slots; ``on_*`` do nothing.

    Raises:
        ValueError: ``limit < 1`` or ``minimum`` outside ``[1, limit]``.
    """

    def __init__(self, limit: int, minimum: int = 1, enabled: bool = True) -> None:
        if limit < 1 or not 1 <= minimum <= limit:
            raise ValueError(f"need 1 <= minimum <= limit, got minimum={minimum}, limit={limit}")
        self.limit, self.minimum, self.enabled = limit, minimum, enabled
        self._current = limit
        self._in_flight = 0
        self._successes = 0
        self._epoch = 0  # decreases so far
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def current(self) -> int:
        """Slots allowed now, ``minimum <= current <= limit``."""
        return self._current

    @property
    def in_flight(self) -> int:
        """Slots held now (may exceed :attr:`current` just after a decrease)."""
        return self._in_flight

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._in_flight >= self._current or self._waiters:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():  # granted, then cancelled: hand it on
                    self._in_flight -= 1
                    self._wake()
                elif waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise
        else:
            self._in_flight += 1
        _GRANTED_EPOCH.set(self._epoch)
        try:
            yield
        finally:
            self._in_flight -= 1
            self._wake()

    def slot(self) -> AbstractAsyncContextManager[None]:
        """An async context manager holding one slot while its body runs:
        ``async with limiter.slot(): ...`` (waits, first come first served, for a free slot)."""
        return self._slot()

    def _wake(self) -> None:
        while self._waiters and self._in_flight < self._current:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_flight += 1  # the slot is the waiter's from now on
                waiter.set_result(None)

    def on_success(self) -> None:
        """A request succeeded: additive increase, ``current + 1`` after ``current`` successes."""
        if not self.enabled or self._current >= self.limit:
            return
        self._successes += 1
        if self._successes >= self._current:
            self._current += 1
            self._successes = 0
            self._wake()

    def on_overload(self) -> None:
        """A request was answered 429 or 503: multiplicative decrease,
        ``current = max(minimum, current // 2)``, once per window (see the class doc)."""
        if not self.enabled:
            return
        granted = _GRANTED_EPOCH.get()
        if granted is not None and granted < self._epoch:
            return  # sent before the last decrease: the same congestion event
        self._epoch += 1
        self._current = max(self.minimum, self._current // 2)
        self._successes = 0
