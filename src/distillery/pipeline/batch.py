"""One batch: read -> strategy -> stateless stages -> shard ``k`` and its marker.

:func:`process_batch` is the unit an executor schedules. It is the same whatever runs it —
the local executor in its own process, or a Ray worker — so every executor writes the same
run directory. The stages, the strategy and the cached teacher backend are built once per
process by a :class:`Worker` and reused for every batch it runs.

A batch with a transiently failed request (timeout, connection, 429 storm, 5xx, garbled body,
in the strategy or in a stage that calls a model) is left unfinished: no shard, no marker.
Every response it did receive is in the response cache, so the next run replays the batch
and pays only for the failed requests.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.backends.cache import CachedBackend, ResponseCache
from distillery.backends.config import build_backend
from distillery.generate.strategy import GenerationContext, SharedWork
from distillery.io.seeds import BadRow, SeedItem, SeedRow
from distillery.io.shards import ShardStore
from distillery.pipeline import budget as budget_module
from distillery.pipeline.budget import BudgetedBackend
from distillery.pipeline.plan import MAP_SECTIONS, Plan, section_configs
from distillery.pipeline.stage import BuildContext, Stage, StageStats
from distillery.records import utc_now


@dataclass
class BatchOutcome:
    """What :func:`process_batch` did with batch ``k``.

    Attributes:
        batch: ``k``.
        marker: the marker written (``None`` when the batch was left unfinished).
        transient: transiently failed requests by error kind (non-empty: left unfinished).
        errors: the first error message of each kind in ``transient``.
        seeds: seeds in the batch. accepted: records accepted (before deduplication).
        calls, cache_hits: backend calls and cache hits this time.
        budget: why a call was not sent (``budget:`` reached), if one was not.
    """

    batch: int
    marker: dict[str, Any] | None
    transient: Counter = field(default_factory=Counter)
    errors: dict[str, str] = field(default_factory=dict)
    seeds: int = 0
    accepted: int = 0
    calls: int = 0
    cache_hits: int = 0
    budget: str | None = None

    @property
    def done(self) -> bool:
        """The batch is finished (its shard and marker are written)."""
        return self.marker is not None


def build_map_stages(plan: Plan, ctx: BuildContext) -> tuple[list[Stage], list[Stage]]:
    """The stateless stages of the plan: ``(record-scoped, prompt-scoped)``.

    Record-scoped stages (verifiers, filters, decontamination) run inside the strategy's loop,
    cheapest first unless ``stage_order: recipe``; prompt-scoped ones (self-consistency, a
    pairwise judge without a reference) run after the strategy on all of a prompt's candidates.

    Raises:
        RecipeError: a stage cannot be built (a resource it names is missing).
    """
    stages = [config.build(ctx) for _, config in section_configs(plan.recipe, MAP_SECTIONS)]
    for stage in stages:
        if stage.stateful:
            from distillery.errors import RecipeError

            raise RecipeError(f"stage {stage.name!r} remembers what it accepted: list it under dedup:, not with the checks")
    in_loop = [s for s in stages if s.scope == "record"]
    grouped = [s for s in stages if s.scope == "prompt"]
    if plan.recipe.stage_order == "auto":
        in_loop.sort(key=lambda s: s.cost)  # stable: equal costs keep recipe order
        grouped.sort(key=lambda s: s.cost)
    return in_loop, grouped


class Worker:
    """The per-process resources of a plan: strategy, stateless stages, cached teacher backend,
    and what the batches it runs at the same time share (:attr:`shared`).

    Attributes:
        concurrency: teacher requests worth keeping in flight across batch boundaries: the
            backend's ``concurrency`` when it serves requests concurrently (a server) and the
            strategy is not sequential; 0 (one batch at a time) otherwise.

    Args:
        plan: the run's plan.
        shards_dir, state_dir: where finished batches and a strategy's state are written
            (default ``<run_dir>/shards``, ``<run_dir>/state``; the pilot of ``distillery plan``
            writes them to a scratch folder and shares the rest of the run directory: its caches
            and spending).

    Use as an async context manager, or call :meth:`aclose`.
    """

    def __init__(self, plan: Plan, shards_dir: Path | None = None, state_dir: Path | None = None) -> None:
        self.plan = plan
        self.budget = plan.budget()
        budget_module.activate(self.budget)  # every model call of this process is metered and budgeted
        self.strategy = plan.strategy()
        self.in_loop, self.grouped = build_map_stages(plan, BuildContext(base_dir=plan.recipe.base_dir, run_dir=plan.run_dir))
        self.reader = plan.reader()  # for names and paths only; seeds are read by the executor
        self.shards = ShardStore(shards_dir or plan.run_dir / "shards", self.strategy.outputs)
        self.state_dir = state_dir or plan.run_dir / "state"
        self.cache: ResponseCache | None = None
        self.backend: CachedBackend | None = None
        self.concurrency = 0  # teacher requests worth keeping in flight across batches (0: one batch at a time)
        if self.strategy.needs_teacher and plan.recipe.teacher is not None:
            self.cache = ResponseCache(plan.cache_dir)
            self.cache.probe()  # a cache another process holds locked: a clear error now, not after a minute
            raw = build_backend(plan.recipe.teacher, plan.recipe.base_dir)
            if raw.concurrent and not self.strategy.sequential:
                self.concurrency = int(getattr(raw, "concurrency", 0) or 0)
            self.backend = CachedBackend(BudgetedBackend(raw, "teacher"), self.cache)
        self.shared = SharedWork(low_water=2 * self.concurrency)

    @property
    def stages(self) -> list[Stage]:
        """Every stage this worker runs."""
        return self.in_loop + self.grouped

    async def aclose(self) -> None:
        """Close stages, strategy, backend and cache; save what was spent."""
        self.budget.save()
        if budget_module.ACTIVE is self.budget:
            budget_module.activate(None)
        for stage in self.stages:
            stage.close()
        self.strategy.close()
        if self.backend is not None:
            await self.backend.aclose()
        if self.cache is not None:
            self.cache.close()

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def _history(shards: ShardStore, k: int) -> Callable[[], Iterator[dict[str, Any]]]:
    def records() -> Iterator[dict[str, Any]]:
        for b in sorted(shards.done()):
            if b < k:
                yield from shards.read(b)
    return records


def _generate_stats(candidates: list[dict[str, Any]], seconds: float) -> StageStats:
    stats = StageStats("generate", "generate", records_in=len(candidates), seconds=seconds)
    for r in candidates:
        failed = next((v for v in r["verdicts"] if not v["passed"]), None)
        if failed is not None and failed["stage"] == "generate":
            stats.reasons[r["reject_reason"].split(":", 1)[0]] += 1
        else:
            stats.records_out += 1
    return stats


async def process_batch(
    plan: Plan,
    worker: Worker,
    k: int,
    items: list[SeedItem],
    on_candidate: Callable[[dict[str, Any]], None] | None = None,
) -> BatchOutcome:
    """Run batch ``k`` (its seed ``items``) and write its shard and marker, unless a request
    failed transiently (then nothing is written; see the module doc).

    Raises:
        InputError: a bad seed row (without ``--skip-bad-rows``).
        BackendError: the teacher cannot be used at all.
    """
    started = time.perf_counter()
    started_unix = time.time()
    reader = worker.reader
    ctx = GenerationContext(
        worker.strategy, worker.backend, worker.in_loop,
        plan.recipe.teacher.sampling.params() if plan.recipe.teacher else None,  # type: ignore[arg-type]
        reader.path, reader.source_name, plan.recipe.seeds.id_field, plan.skip_bad_rows, on_candidate,
        batch=k, history=_history(worker.shards, k) if worker.strategy.sequential else None,
        base_dir=plan.recipe.base_dir, state_dir=worker.state_dir, shared=worker.shared,
    )
    records = [ctx.bad_row(item) for item in items if isinstance(item, BadRow)]  # raises without --skip-bad-rows
    seeds = [item for item in items if isinstance(item, SeedRow)]
    made = await worker.strategy.generate(seeds, ctx)
    records += [r for r in made if r["reject_stage"] == "read"]  # seeds the strategy could not prompt
    candidates = [r for r in made if r["reject_stage"] != "read"]
    read = StageStats("read", "read", records_in=len(items), records_out=len(items) - sum(ctx.bad.values()),
                      reasons=Counter(ctx.bad))
    await ctx.check(ctx.unchecked([r for r in candidates if r["accepted"]]))
    survivors = [r for r in candidates if r["accepted"]]
    for stage in worker.grouped:
        survivors = await ctx.apply(stage, survivors, prepare=candidates)
    ledger = ctx.ledger
    transient, errors = Counter(ledger.transient), dict(ledger.errors)
    stage_stats = [ctx.stats_of(stage) for stage in worker.stages]
    for stats in stage_stats:
        transient.update({f"{stats.name}: {kind}": n for kind, n in stats.transient.items()})
        errors.update({f"{stats.name}: {kind}": e for kind, e in stats.transient_errors.items()})
    outcome = BatchOutcome(k, None, transient, errors, len(items), calls=ledger.calls, cache_hits=ledger.cache_hits,
                           budget=worker.budget.reason)
    if transient:
        return outcome
    records.extend(candidates)
    generate = _generate_stats(candidates, ledger.seconds)
    marker = {
        "batch": k,
        "seeds": len(items),
        "candidates": len(candidates),
        "prompts": ctx.prompted,
        "prompts_with_accepted": len({r["seed_id"] for r in survivors}),
        "cache_hits": ledger.cache_hits,
        "backend_calls": ledger.calls,
        "waves": ledger.waves,
        "stopped_early": ledger.stopped_early,
        "tokens_in": ledger.tokens_in,
        "tokens_out": ledger.tokens_out,
        "billed_tokens_in": ledger.billed_tokens_in,
        "billed_tokens_out": ledger.billed_tokens_out,
        "retries": ledger.retries,
        "stages": [s.to_dict() for s in (read, generate, *stage_stats)],
        "seconds": round(time.perf_counter() - started, 4),
        "started_unix": round(started_unix, 3),  # batches may overlap: the report counts their union
        "finished_unix": round(time.time(), 3),
        "finished_at": utc_now(),
    }
    # in a thread: building and writing the shard (tens of ms) must not stall the event loop
    # while other batches' requests are in flight
    await asyncio.to_thread(worker.shards.write, k, records, marker)
    worker.budget.save()
    outcome.marker = marker
    outcome.accepted = marker["accepted"]
    return outcome
