"""The runner: plan -> executor (map over batches) -> reduce (deduplication) -> dataset, report, card.

:class:`Pipeline` only orchestrates; each part lives in its own module:

- :mod:`distillery.pipeline.plan`: the recipe checked and resolved; the seed batches.
- :mod:`distillery.pipeline.rundir`: the run directory's lock, recipe and ``--fresh``.
- :mod:`distillery.pipeline.executors`: what runs the batches (``local``, ``ray``), each
  through :func:`distillery.pipeline.batch.process_batch` (read -> strategy -> stateless
  stages -> shard ``k`` and its marker).
- :mod:`distillery.pipeline.reduce`: the stateful stages over the finished shards, in order,
  and the dataset files.
- :mod:`distillery.report.build`: ``report.json`` and the dataset card.

A killed run resumes from the markers: finished batches are skipped, and responses already
received come from the response cache. Transiently failed requests leave their batch
unfinished; the run goes on with the others, then stops with :class:`TransientFailures`
(exit status 1) so that running the same command again retries exactly those requests. A call
that would exceed ``budget:`` stops the run after the batch in flight with
:class:`~distillery.pipeline.budget.BudgetExhausted` (exit status 1); a re-run with a larger
budget continues.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console

from distillery.errors import DistilleryError, RecipeError
from distillery.io.shards import ShardStore
from distillery.pipeline.budget import BudgetExhausted, spent_in
from distillery.pipeline.plan import Plan
from distillery.pipeline.progress import RunProgress
from distillery.pipeline.reduce import reduce
from distillery.pipeline.rundir import RunDir
from distillery.recipe import Recipe


class TransientFailures(DistilleryError):
    """Some requests failed transiently; their batches are left for the next run.

    Attributes:
        failures: failed requests by error kind. errors: the first message of each kind.
        batches: the unfinished batches.
    """

    def __init__(self, failures: Counter, errors: dict[str, str], batches: list[int]) -> None:
        self.failures = failures
        self.errors = errors
        self.batches = batches
        n = sum(failures.values())
        kinds = ", ".join(f"{k}: {v}" for k, v in failures.most_common())
        first = "; ".join(f"{k}: {errors[k]}" for k, _ in failures.most_common(3) if k in errors)
        super().__init__(
            f"{n} requests failed transiently ({kinds}) in {len(batches)} batch(es); "
            "run the same command again to retry them (every other response is kept)"
            + (f"\nfirst errors: {first}" if first else "")
        )


class Pipeline:
    """Runs a recipe into a run directory.

    Args:
        recipe: the validated recipe.
        run_dir: override of ``recipe.output.dir``.
        skip_bad_rows: record unreadable seed rows as rejected instead of stopping.
        fresh: discard earlier results in the run directory (the response cache is kept).
        progress: draw a progress bar.
        console: rich console for messages.

    Example::

        from distillery import Pipeline, Recipe
        report = Pipeline(Recipe.from_yaml("recipes/gsm8k.yaml")).run()
    """

    def __init__(
        self,
        recipe: Recipe,
        run_dir: str | Path | None = None,
        skip_bad_rows: bool = False,
        fresh: bool = False,
        progress: bool = True,
        console: Console | None = None,
    ) -> None:
        self.recipe = recipe
        self.run_dir = Path(run_dir or recipe.output.dir)
        self.skip_bad_rows = skip_bad_rows
        self.fresh = fresh
        self.progress = progress
        self.console = console or Console(stderr=True)

    def run(self) -> dict[str, Any]:
        """Run (or resume) the recipe and write the dataset, report and card.

        Returns:
            The report (also written to ``report.json``).

        Raises:
            RecipeError: invalid recipe, or a run directory of another recipe.
            RunDirLocked: another process is running on the run directory.
            InputError: a bad seed row, unless ``skip_bad_rows``.
            BackendError: the teacher cannot be used.
            TransientFailures: requests failed transiently (run again to retry them).
        """
        from distillery.io.arrow import warm_up
        from distillery.report.build import finalize_run

        recipe = self.recipe
        started = time.perf_counter()
        plan = Plan.make(recipe, self.run_dir, self.skip_bad_rows)  # checks before touching the directory
        warm_up()  # pyarrow's one-time set-up, before any request is in flight
        strategy = plan.strategy()
        with RunDir(self.run_dir, self.console) as run_dir:
            shards = ShardStore(self.run_dir / "shards", strategy.outputs)
            recipe_hash = recipe.data_hash()
            run_dir.prepare(recipe.to_yaml(), recipe_hash, self.fresh, lambda: (shards.clear(), _clear_spending(self.run_dir)))
            shards.clean()
            done = shards.done()
            executor = recipe.executor.build()
            with RunProgress(recipe.seeds.limit, enabled=self.progress, console=self.console) as bar:
                result = executor.run(plan, done, bar)
            if result.pending:
                if result.budget is not None:
                    raise BudgetExhausted(
                        f"budget reached: {result.budget}. {len(result.finished) + len(result.skipped)} batches are finished "
                        f"and checkpointed, {len(result.pending)} wait; raise the limit under budget: and run the same "
                        "command again to continue (responses already received are reused)."
                    )
                raise TransientFailures(result.transient, result.errors, sorted(result.pending))
            unseen = sorted(set(result.finished) - set(shards.done()))
            if unseen:
                raise DistilleryError(
                    f"{len(unseen)} batches finished on workers but their markers are not in {self.run_dir / 'shards'} "
                    f"(first: {unseen[0]}): every worker must see the run directory at the same path (a shared filesystem)"
                )
            reduced = asyncio.run(reduce(plan, shards, recipe_hash))
            session = {
                "backend_calls": result.backend_calls,
                "cache_hits": result.cache_hits,
                "executor": executor.name,
                "model_calls": {role: u.to_dict() for role, u in spent_in(self.run_dir / "budget").items()},
                "seconds": time.perf_counter() - started,
            }
            return finalize_run(self.run_dir, recipe, strategy, shards.done(), reduced, session, self.console)


def _clear_spending(run_dir: Path) -> None:
    for p in (run_dir / "budget").glob("spent-*.json"):
        p.unlink()


def load_report(run_dir: str | Path) -> dict[str, Any]:
    """The ``report.json`` of a finished run.

    Raises:
        RecipeError: no report there (the run has not finished).
    """
    path = Path(run_dir) / "report.json"
    if not path.exists():
        raise RecipeError(f"{run_dir}: no report.json (is this a finished run directory?)")
    return json.loads(path.read_text(encoding="utf-8"))

