"""``executor: local``: every batch in this process, one after another, on one asyncio loop."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from distillery.pipeline.batch import Worker, process_batch
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
    """Runs batches in order in this process; the progress bar moves with every candidate.

    With a :attr:`~distillery.generate.strategy.Strategy.sequential` strategy the run stops at
    the first batch left unfinished (and its later batches are pending)."""

    name = "local"

    def run(self, plan: Plan, done: dict[int, dict[str, Any]], progress: RunProgress) -> ExecutionResult:
        return asyncio.run(self._run(plan, done, progress))

    async def _run(self, plan: Plan, done: dict[int, dict[str, Any]], progress: RunProgress) -> ExecutionResult:
        result = ExecutionResult()
        worker = None
        try:
            for k, items in plan.batches():
                if k in done:
                    result.skipped[k] = done[k]
                    progress.on_batch(len(items), done[k]["accepted"], done[k]["candidates"])
                    continue
                if worker is None:
                    worker = Worker(plan)
                outcome = await process_batch(plan, worker, k, items, on_candidate=progress.on_candidate)
                result.add(outcome)
                progress.on_batch(len(items), outcome.accepted)
                if not outcome.done and (worker.strategy.sequential or worker.budget.exhausted):
                    break  # later batches build on this one, or the budget is spent: the re-run goes on
        finally:
            if worker is not None:
                await worker.aclose()
        return result
