"""``executor: ray``: each batch as a task on a Ray cluster (``pip install distillery[ray]``).

The driver (the ``distillery run`` process) reads the seeds, cuts them into batches and sends
each unfinished one to a pool of Ray actors, as many as the cluster has CPUs (or
``workers``). An actor builds the strategy, stages and cached backend once (a
:class:`~distillery.pipeline.batch.Worker`: models, sandbox pools and benchmark indexes stay
warm across its batches) and runs :func:`~distillery.pipeline.batch.process_batch`, which
writes the shard and marker into the run directory — so every worker must see the run
directory at the same path (one machine, or a shared filesystem). At most one batch per
actor is in flight, so the driver's memory holds a few batches, not the seed file. When the
map is done the driver runs the reduce (deduplication) as for the local executor.

The cluster: ``address`` (or ``RAY_ADDRESS``); without one, a local cluster is started for
the run (``num_cpus`` CPUs, default all) and stopped after it. Killing the driver ends its
actors; running the same command again skips the finished batches, as with ``local``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any, Literal

from pydantic import Field

from distillery.errors import DistilleryError, RecipeError
from distillery.pipeline.batch import BatchOutcome, Worker, process_batch
from distillery.pipeline.executors import ExecutionResult, Executor, ExecutorConfig
from distillery.pipeline.plan import Plan
from distillery.pipeline.progress import RunProgress
from distillery.registry import register


@register("executor")
class RayExecutorConfig(ExecutorConfig):
    """Run batches as Ray tasks.

    Attributes:
        address: the cluster (``ray://host:10001``, ``host:6379`` or ``auto``); default
            ``$RAY_ADDRESS``, else a local cluster started for the run.
        num_cpus: CPUs of the local cluster (default: all of this machine's).
        workers: actors running batches (default: the cluster's CPUs / ``cpus_per_worker``).
        cpus_per_worker: CPUs Ray reserves for each actor.
    """

    type: Literal["ray"] = "ray"
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    workers: int | None = Field(None, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)

    def build(self) -> RayExecutor:
        return RayExecutor(self)


class BatchActor:
    """A Ray actor holding one :class:`Worker` for a plan; runs one batch per call."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.worker: Worker | None = None

    async def process(self, k: int, items: list[Any]) -> BatchOutcome:
        """:func:`process_batch` of batch ``k``."""
        if self.worker is None:
            self.worker = Worker(self.plan)
        return await process_batch(self.plan, self.worker, k, items)

    async def close(self) -> None:
        """Release the worker's resources."""
        if self.worker is not None:
            await self.worker.aclose()
            self.worker = None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RecipeError("executor: ray needs Ray: pip install 'distillery[ray]'") from None
    return ray


class RayExecutor(Executor):
    """Runs batches on Ray actors (see the module doc)."""

    name = "ray"
    config: RayExecutorConfig

    def run(self, plan: Plan, done: dict[int, dict[str, Any]], progress: RunProgress) -> ExecutionResult:
        strategy = plan.strategy()
        if strategy.sequential:
            raise RecipeError(f"executor: ray: generation.strategy {strategy.name!r} builds each batch on the ones "
                              "before (its task pool), so its batches cannot run in parallel; use executor: local")
        ray = _import_ray()
        cfg = self.config
        address = cfg.address or os.environ.get("RAY_ADDRESS") or None
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no telemetry from a data pipeline, unless asked
        started = not ray.is_initialized()
        if started:
            try:
                ray.init(
                    address=address,
                    num_cpus=None if address else cfg.num_cpus,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                )
            except (ConnectionError, ray.exceptions.RayError) as e:
                where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
                raise DistilleryError(f"executor: ray: cannot start or reach {where}: {str(e).splitlines()[0]}") from e
        result = ExecutionResult()
        actors: list[Any] = []
        try:
            cpus = ray.cluster_resources().get("CPU", 0.0)
            if cpus < cfg.cpus_per_worker:
                raise RecipeError(
                    f"executor.cpus_per_worker: {cfg.cpus_per_worker:g} CPUs per worker, but the cluster has {cpus:g}"
                )
            n = cfg.workers or max(1, int(cpus // cfg.cpus_per_worker))
            unfinished = sum(1 for k, _ in plan.batches() if k not in done)
            # actors start as batches need them: at most this many, and together they cannot spend more than is left
            plan.budget_share = 1.0 / max(1, min(n, unfinished))
            remote = ray.remote(num_cpus=cfg.cpus_per_worker, max_restarts=0)(BatchActor)
            idle: list[Any] = []
            in_flight: dict[Any, tuple[Any, int, int]] = {}

            def settle(block: bool) -> None:
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=None if block else 0)
                for ref in ready:
                    actor, k, seeds = in_flight.pop(ref)
                    try:
                        outcome = _get(ray, ref)
                    except ray.exceptions.RayActorError as e:  # killed (out of memory, a crash): retry next run
                        actors.remove(actor)
                        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                        outcome = BatchOutcome(k, None, Counter({"worker_died": 1}), {"worker_died": reason}, seeds)
                    else:
                        idle.append(actor)
                    result.add(outcome)
                    progress.on_batch(seeds, outcome.accepted, outcome.marker["candidates"] if outcome.marker else 0)

            for k, items in plan.batches():
                if k in done:
                    result.skipped[k] = done[k]
                    progress.on_batch(len(items), done[k]["accepted"], done[k]["candidates"])
                    continue
                if not idle and len(actors) < n:
                    actors.append(remote.remote(plan))
                    idle.append(actors[-1])
                while not idle:
                    settle(block=True)
                actor = idle.pop()
                in_flight[actor.process.remote(k, items)] = (actor, k, len(items))
            while in_flight:
                settle(block=True)
        finally:
            for actor in actors:
                try:
                    ray.get(actor.close.remote(), timeout=60)
                except Exception:  # noqa: BLE001 - an actor that died has nothing left to close
                    pass
                ray.kill(actor)
            if started:
                ray.shutdown()
        return result


def _get(ray: Any, ref: Any) -> BatchOutcome:
    """``ray.get(ref)``, re-raising a user-facing error from a worker as itself (no Ray traceback)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, DistilleryError):
            raise cause from None
        raise
