"""``executor: local``: every batch in this process, on one asyncio loop, with no barrier
between batches when the teacher is a server.

Against a backend that serves requests concurrently (an OpenAI-compatible server), the next
batch starts as soon as the requests in flight over all running batches fall below twice the
teacher's ``concurrency``, so the server's slots stay busy while a batch's slowest requests
drain and while it is checked and written. Each batch still writes its own shard and marker
when it is whole (the resume guarantees are per batch, whatever order batches finish in).
With an in-process backend, a strategy that calls nothing, or a
:attr:`~distillery.generate.strategy.Strategy.sequential` strategy, batches run one at a time.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Literal

from distillery.pipeline.batch import BatchOutcome, Worker, process_batch
from distillery.pipeline.executors import ExecutionResult, Executor, ExecutorConfig
from distillery.pipeline.plan import Plan
from distillery.pipeline.progress import RunProgress
from distillery.registry import register


@register("executor")
class LocalExecutorConfig(ExecutorConfig):
    """Run in this process (the default)."""

    type: Literal["local"] = "local"

    def build(self) -> LocalExecutor:
        return LocalExecutor(self)


class LocalExecutor(Executor):
    """Runs batches in this process, overlapping them against a server (see the module doc);
    the progress bar moves with every candidate.

    The run stops starting batches at the first batch left unfinished when the strategy is
    :attr:`~distillery.generate.strategy.Strategy.sequential` (later batches build on it) or the
    budget is spent; batches already running finish, later ones are pending."""

    name = "local"

    def run(self, plan: Plan, done: dict[int, dict[str, Any]], progress: RunProgress) -> ExecutionResult:
        return asyncio.run(self._run(plan, done, progress))

    async def _run(self, plan: Plan, done: dict[int, dict[str, Any]], progress: RunProgress) -> ExecutionResult:
        result = ExecutionResult()
        worker: Worker | None = None
        running: dict[asyncio.Task, int] = {}
        stop = False

        def finish(task: asyncio.Task) -> None:
            nonlocal stop
            seeds = running.pop(task)
            outcome: BatchOutcome = task.result()  # re-raises a batch's error (bad input, unusable teacher)
            result.add(outcome)
            progress.on_batch(seeds, outcome.accepted, made=outcome.marker["candidates"] if outcome.done else None)
            if not outcome.done and (worker.strategy.sequential or worker.budget.exhausted):  # type: ignore[union-attr]
                stop = True  # later batches build on this one, or the budget is spent: the re-run goes on

        async def wait(room_signal: bool) -> None:
            """Until a batch finishes, or (``room_signal``) the requests in flight fall low."""
            waiters = set(running)
            signal = None
            if room_signal:
                worker.shared.changed.clear()  # type: ignore[union-attr]
                signal = asyncio.create_task(worker.shared.changed.wait())  # type: ignore[union-attr]
                waiters.add(signal)
            finished, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if signal is not None and not signal.done():
                signal.cancel()
            for task in finished:
                if task is not signal:
                    finish(task)

        try:
            for k, items in plan.batches():
                if k in done:
                    result.skipped[k] = done[k]
                    progress.on_batch(len(items), done[k]["accepted"], done[k]["candidates"])
                    continue
                if worker is None:
                    worker = Worker(plan)
                limit = self._most_batches(worker, plan)
                while running and not stop and not self._room(worker, len(running), limit):
                    await wait(room_signal=len(running) < limit and worker.concurrency > 0)
                if stop:
                    result.pending.append(k)
                    continue
                running[asyncio.create_task(process_batch(plan, worker, k, items, on_candidate=progress.on_candidate))] = len(items)
                await asyncio.sleep(0)  # let it send its requests before the room is measured again
            while running:
                await wait(room_signal=False)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            if worker is not None:
                await worker.aclose()
        return result

    @staticmethod
    def _most_batches(worker: Worker, plan: Plan) -> int:
        """Most batches in flight at once: 1 unless the teacher serves requests concurrently;
        then enough batches to hold four times its concurrency in seeds, at least 2."""
        if worker.concurrency <= 0:
            return 1
        return max(2, math.ceil(4 * worker.concurrency / plan.recipe.output.batch_size))

    @staticmethod
    def _room(worker: Worker, running: int, limit: int) -> bool:
        """Whether another batch may start now: fewer than ``limit`` run, and the requests in
        flight over them are below twice the teacher's concurrency."""
        return running < limit and worker.shared.outstanding < 2 * worker.concurrency
