"""The run's spending: every model call metered by role, and a hard budget.

Every backend a run builds — the teacher, and the model of every stage that calls one
(judge, difficulty) — is wrapped in a :class:`BudgetedBackend` *below* the response cache, so
it sees exactly the calls that are paid for (cache hits are free). Each call is counted under
its role (``teacher``, ``judge``, ``difficulty``...) in the run directory, so the report's
``model_calls``, cost and cost per accepted example include every model call the run paid
for — those of batches a failure or the budget left unfinished, too.

A recipe's ``budget:`` (``max_cost``, ``max_tokens``, ``max_requests``) is a hard stop: before a
call is sent, its worst case — one request, its prompt's tokens (estimated from its characters
at the highest tokens-per-character ratio seen in this run, at least :data:`START_TOKENS_PER_CHAR`)
plus ``max_tokens`` out, priced by ``pricing:`` — is reserved; a call that does not fit waits
for the calls in flight to settle (their real use frees most of what they reserved) and is sent
if it fits then; a call that does not fit with nothing in flight is not sent. It comes back as a transient ``budget`` failure, so its batch is left unfinished (every
response already received is in the cache), the run stops after the batch in flight, says so,
and a re-run with a larger budget continues from there. When calls come back, the reservation is
replaced by what they actually used.

What has been spent is kept in the run directory (``budget/spent-*.json``, one file per
process, written atomically after each batch and at most every second while calls arrive),
so the budget covers all sessions of a run. ``--fresh`` starts the count again.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from distillery.backends.base import Backend, GenerationRequest, GenerationResult
from distillery.errors import DistilleryError
from distillery.io.atomic import atomic_write_text

START_TOKENS_PER_CHAR = 0.5
"""Tokens per character assumed for a prompt before any call has said (real tokenizers give
about 0.25 for English; a byte-level worst case is 1)."""


class BudgetConfig(BaseModel):
    """The ``budget:`` section: hard limits over the whole run (all sessions), checked before
    every model call (teacher and stages). Unset limits are not enforced.

    Attributes:
        max_cost: most money spent, in ``pricing.currency`` (priced by ``pricing:``).
        max_tokens: most tokens, in plus out, over every call.
        max_requests: most model calls (a call retried after a 429 or a 5xx counts once: a
            refused attempt is not billed).
    """

    model_config = ConfigDict(extra="forbid")

    max_cost: float | None = Field(None, gt=0)
    max_tokens: int | None = Field(None, ge=1)
    max_requests: int | None = Field(None, ge=1)

    @property
    def enabled(self) -> bool:
        """Any limit is set."""
        return any(v is not None for v in (self.max_cost, self.max_tokens, self.max_requests))


@dataclass
class Usage:
    """Paid model calls: requests (retries included), tokens in and out, cost (currency units)."""

    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    def add(self, other: Usage) -> None:
        self.requests += other.requests
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        self.cost += other.cost

    def minus(self, other: Usage) -> Usage:
        return Usage(self.requests - other.requests, self.tokens_in - other.tokens_in,
                     self.tokens_out - other.tokens_out, self.cost - other.cost)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cost"] = round(d["cost"], 8)
        return d


class BudgetExhausted(DistilleryError):
    """The run stopped because the next call would exceed ``budget:``; finished batches are
    checkpointed and a re-run with a larger budget continues."""


class Budget:
    """The hard budget of one process (see the module doc).

    Args:
        config: the recipe's limits.
        price_in, price_out: price per million tokens in and out.
        folder: where spending is kept (``<run_dir>/budget``); ``None``: not kept.
        share: this process's share of what is left (a Ray worker of ``n`` gets ``1/n``, so
            together they cannot exceed it).
    """

    def __init__(self, config: BudgetConfig, price_in: float, price_out: float,
                 folder: Path | None = None, share: float = 1.0) -> None:
        self.config = config
        self.price_in = price_in / 1e6
        self.price_out = price_out / 1e6
        self.folder = folder
        self.earlier = total(spent_in(folder)) if folder is not None else Usage()
        self.share = share
        self.spent = Usage()        # by this process
        self.by_role: dict[str, Usage] = {}
        self.reserved = Usage()     # sent, not yet back
        self.refused = 0
        self.reason: str | None = None
        self.tokens_per_char = START_TOKENS_PER_CHAR
        self._lock = threading.Lock()
        self._file = folder / f"spent-{os.getpid()}-{uuid.uuid4().hex[:8]}.json" if folder is not None else None
        self._saved_at = 0.0

    @property
    def exhausted(self) -> bool:
        """A call was refused: the run should stop after the batch in flight."""
        return self.reason is not None

    def _limits(self) -> dict[str, float]:
        c = self.config
        out: dict[str, float] = {}
        for name, value, used in (
            ("max_requests", c.max_requests, self.earlier.requests),
            ("max_tokens", c.max_tokens, self.earlier.tokens),
            ("max_cost", c.max_cost, self.earlier.cost),
        ):
            if value is not None:
                out[name] = max(0.0, value - used) * self.share
        return out

    def estimate(self, request: GenerationRequest) -> Usage:
        """The worst case of ``request``: one request, its prompt's estimated tokens, ``max_tokens`` out."""
        chars = len(request.prompt) if request.prompt is not None else sum(len(c) + 8 for _, c in request.messages)
        tokens_in = int(chars * self.tokens_per_char) + 1
        tokens_out = request.sampling.max_tokens
        return Usage(1, tokens_in, tokens_out, tokens_in * self.price_in + tokens_out * self.price_out)

    def reserve(self, request: GenerationRequest) -> Usage | None | bool:
        """Reserve ``request``'s worst case.

        Returns:
            the reservation; ``False`` when it does not fit *yet* (calls in flight hold
            reservations that their real use will mostly free: wait for them, then ask again);
            ``None`` when it does not fit with nothing in flight (the budget is exhausted).
        """
        need = self.estimate(request)
        with self._lock:
            if self.reason is not None:  # once a call was refused, the run is stopping: send nothing more
                self.refused += 1
                return None
            used = Usage()
            used.add(self.spent)
            used.add(self.reserved)
            for name, left in self._limits().items():
                have = {"max_requests": used.requests, "max_tokens": used.tokens, "max_cost": used.cost}[name]
                want = {"max_requests": need.requests, "max_tokens": need.tokens, "max_cost": need.cost}[name]
                if have + want > left + 1e-12:
                    if self.reserved.requests:
                        return False
                    self.refused += 1
                    if self.reason is None:
                        total = getattr(self.config, name)
                        self.reason = (f"budget.{name} = {total:g}: the next call (up to {want:g}) would exceed it "
                                       f"({have + self.earlier_of(name):g} spent or in flight)")
                    return None
            self.reserved.add(need)
        return need

    def earlier_of(self, name: str) -> float:
        return {"max_requests": self.earlier.requests, "max_tokens": self.earlier.tokens,
                "max_cost": self.earlier.cost}[name]

    def settle(self, role: str, reserved: Usage, result: GenerationResult, request: GenerationRequest) -> Usage:
        """Replace a reservation by what the call (made for ``role``) used; returns the call's usage."""
        actual = Usage(1, result.tokens_in, result.tokens_out,
                       result.tokens_in * self.price_in + result.tokens_out * self.price_out)
        chars = len(request.prompt) if request.prompt is not None else sum(len(c) + 8 for _, c in request.messages)
        with self._lock:
            self.reserved = self.reserved.minus(reserved)
            self.spent.add(actual)
            self.by_role.setdefault(role, Usage()).add(actual)
            if chars and result.tokens_in:
                self.tokens_per_char = max(self.tokens_per_char, result.tokens_in / chars)
        if time.monotonic() - self._saved_at > 1.0:
            self.save()
        return actual

    def charge(self, role: str, result: GenerationResult) -> Usage:
        """Count a call (made for ``role``) sent without a reservation (no limits set)."""
        actual = Usage(1, result.tokens_in, result.tokens_out,
                       result.tokens_in * self.price_in + result.tokens_out * self.price_out)
        with self._lock:
            self.spent.add(actual)
            self.by_role.setdefault(role, Usage()).add(actual)
        if time.monotonic() - self._saved_at > 1.0:
            self.save()
        return actual

    def save(self) -> None:
        """Write this process's spending (atomically) to the run directory."""
        self._saved_at = time.monotonic()
        if self._file is None or not self.spent.requests:
            return
        self._file.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            data = {role: u.to_dict() for role, u in self.by_role.items()}
        atomic_write_text(self._file, json.dumps(data, sort_keys=True))

    def message(self) -> str:
        """Why the run stopped, and how to go on."""
        total = Usage()
        total.add(self.earlier)
        total.add(self.spent)
        return (f"budget reached: {self.reason}. Spent so far over this run: {total.requests} requests, "
                f"{total.tokens} tokens, cost {total.cost:.6g}. Finished batches are checkpointed; raise the limit "
                "under budget: and run the same command again to continue.")


def spent_in(folder: Path) -> dict[str, Usage]:
    """What the processes of a run have spent by role, from ``folder`` (``<run_dir>/budget``)."""
    out: dict[str, Usage] = {}
    if folder.is_dir():
        for p in sorted(folder.glob("spent-*.json")):
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
                for role, usage in data.items():
                    out.setdefault(role, Usage()).add(Usage(**usage))
            except (OSError, ValueError, TypeError, AttributeError):
                continue  # not a spending file of this version
    return out


def total(by_role: dict[str, Usage]) -> Usage:
    """The sum over roles."""
    out = Usage()
    for usage in by_role.values():
        out.add(usage)
    return out


ACTIVE: Budget | None = None
"""The budget of the run this process works on (set by the worker), or ``None``."""


def activate(budget: Budget | None) -> None:
    """Make ``budget`` the one every :class:`BudgetedBackend` of this process consults."""
    global ACTIVE
    ACTIVE = budget


class BudgetedBackend(Backend):
    """Meters (under ``role``) and budgets the calls of ``inner``; wrap it *inside* the cache.

    A request that would exceed the active budget is not sent: it comes back with
    ``error_kind="budget"`` (transient: its batch is retried by the next run).
    """

    def __init__(self, inner: Backend, role: str) -> None:
        super().__init__(inner.model)
        self.kind = inner.kind  # type: ignore[misc]
        self.raw_completions = inner.raw_completions  # type: ignore[misc]
        self.inner = inner
        self.role = role
        self.stats = inner.stats

    async def preflight(self) -> None:
        await self.inner.preflight()

    def cache_key(self, request: GenerationRequest) -> str:
        return self.inner.cache_key(request)

    async def stream(
        self,
        requests: list[GenerationRequest],
        on_receive: Callable[[int, GenerationResult], None] | None = None,
    ) -> AsyncIterator[tuple[int, GenerationResult]]:
        budget = ACTIVE
        if budget is None or not budget.config.enabled:
            def count(i: int, result: GenerationResult) -> None:
                if budget is not None:
                    budget.charge(self.role, result)
                if on_receive is not None:
                    on_receive(i, result)
            async for i, result in self.inner.stream(requests, on_receive=count):
                yield i, result
            return
        # Send what fits; when a wave of calls returns, what it did not use is free again.
        pending = list(range(len(requests)))
        while pending:
            sent: list[int] = []
            holds: dict[int, Usage] = {}
            hold: Usage | None | bool = None
            for i in pending:
                hold = budget.reserve(requests[i])
                if not isinstance(hold, Usage):
                    break
                sent.append(i)
                holds[i] = hold
            if not sent and hold is False:  # others' calls in flight hold the room: wait for them to settle
                await asyncio.sleep(0.02)
                continue
            if not sent:
                for i in pending:
                    refused = GenerationResult(text=None, error_kind="budget", error=budget.reason)
                    if on_receive is not None:
                        on_receive(i, refused)
                    yield i, refused
                return
            pending = pending[len(sent):]

            def settle(j: int, result: GenerationResult, sent: list[int] = sent, holds: dict[int, Usage] = holds) -> None:
                i = sent[j]
                budget.settle(self.role, holds[i], result, requests[i])
                if on_receive is not None:
                    on_receive(i, result)

            async for j, result in self.inner.stream([requests[i] for i in sent], on_receive=settle):
                yield sent[j], result

    async def aclose(self) -> None:
        await self.inner.aclose()
