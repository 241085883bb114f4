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
        """Run (or resume, or extend) the recipe and write the dataset, report and card.

        A re-run of a finished recipe whose outputs are in place says ``already finished``,
        prints that run's figures and returns its report without recomputing anything. A higher
        ``seeds.limit`` than the finished run's extends it (its whole batches are kept). Ctrl-C
        prints ``interrupted; run the same command again to resume`` and exits with status 130;
        every response received is in the response cache. A run that fails before any batch
        finished, in a directory it created, removes that directory unless the response cache
        there holds responses.

        Returns:
            The report (also written to ``report.json``).

        Raises:
            RecipeError: invalid recipe, or a run directory of another recipe (naming the keys
                that differ).
            RunDirLocked: another process is running on the run directory.
            InputError: a bad seed row, unless ``skip_bad_rows``.
            BackendError: the teacher cannot be used.
            TransientFailures: requests failed transiently (run again to retry them).
            SystemExit: (status 130) on Ctrl-C, after the message.
        """
        created = not self.run_dir.exists()
        try:
            return self._run()
        except KeyboardInterrupt:
            self.console.print("interrupted; run the same command again to resume", highlight=False)
            raise SystemExit(130) from None
        except BaseException:
            if created:
                _remove_if_empty(self.run_dir, self.recipe)
            raise

    def _run(self) -> dict[str, Any]:
        from distillery.io.arrow import warm_up
        from distillery.report.build import finalize_run, print_funnel

        recipe = self.recipe
        started = time.perf_counter()
        plan = Plan.make(recipe, self.run_dir, self.skip_bad_rows)  # checks before touching the directory
        warm_up()  # pyarrow's one-time set-up, before any request is in flight
        strategy = plan.strategy()
        with RunDir(self.run_dir, self.console) as run_dir:
            shards = ShardStore(self.run_dir / "shards", strategy.outputs)
            recipe_hash = recipe.data_hash()
            dumped = recipe.model_dump(mode="json")
            previous = run_dir.prepare(recipe.to_yaml(), recipe_hash, self.fresh,
                                       lambda: (shards.clear(), _clear_spending(self.run_dir)))
            shards.clean()
            if previous is not None:
                old = _finished_report(self.run_dir, previous, dumped, shards, plan)
                if old is not None:
                    self.console.print(
                        f"{self.run_dir}: already finished (at {old.get('finished_at', '?')}); nothing to do. "
                        "Its figures (use --fresh to redo it, or raise --limit to extend it):", highlight=False)
                    print_funnel(old, self.console)
                    return old
                self._limit_changed(run_dir, previous, shards)
            done = shards.done()
            executor = recipe.executor.build()
            prepared = time.perf_counter()
            price = recipe.pricing
            with RunProgress(recipe.seeds.limit, enabled=self.progress, console=self.console,
                             per_seed=_per_seed(recipe),
                             prices=(price.input_per_million, price.output_per_million, price.currency)) as bar:
                result = executor.run(plan, done, bar)
            batches_done = time.perf_counter()
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
                "started": started,  # perf_counter: finalize_run adds its own time to the session's
                "phases": {"prepare": prepared - started, "batches": batches_done - prepared,
                           "reduce": time.perf_counter() - batches_done},
                "earlier_batches": dict(result.skipped),  # their time is part of the whole run's
            }
            return finalize_run(self.run_dir, recipe, strategy, shards.done(), reduced, session, self.console)

    def _limit_changed(self, run_dir: RunDir, previous: dict[str, Any], shards: ShardStore) -> None:
        """When ``seeds.limit`` differs from the previous run's, drop the batches the new limit
        does not make alike (the last, short batch; batches beyond a lower limit)."""
        old_limit = (previous.get("seeds") or {}).get("limit")
        new_limit = self.recipe.seeds.limit
        if old_limit == new_limit:
            return
        size = self.recipe.output.batch_size

        def keep(k: int, marker: dict[str, Any]) -> bool:
            return marker.get("seeds") == size and (new_limit is None or (k + 1) * size <= new_limit)

        kept = len(shards.done())
        dropped = run_dir.drop_batches(shards.folder, keep)
        self.console.print(
            f"{self.run_dir}: seeds.limit {old_limit} -> {new_limit}: keeping {kept - len(dropped)} finished batch(es)"
            + (f", redoing {len(dropped)} from the response cache" if dropped else ""), highlight=False)


def _per_seed(recipe: Recipe) -> float:
    """Candidates one seed is expected to give (the progress bar's step)."""
    generation = recipe.generation
    n = getattr(generation, "samples_per_prompt", None) or getattr(generation, "n", None) or 1
    return float(n) if isinstance(n, int | float) and n > 0 else 1.0


def _finished_report(run_dir: Path, previous: dict[str, Any], current: dict[str, Any], shards: ShardStore,
                     plan: Plan) -> dict[str, Any] | None:
    """The report of the finished run in ``run_dir`` when re-running ``current`` would redo
    nothing: the same recipe (data, limit, report and pricing sections), a report, the dataset
    files and a reduce over exactly the finished batches; else ``None``."""
    from distillery.pipeline.reduce import outputs
    from distillery.recipe import data_view

    path = run_dir / "report.json"
    state_path = run_dir / "reduce.json"
    if not path.exists() or not state_path.exists() or not all(p.exists() for p in outputs(plan)):
        return None
    if data_view(previous) != data_view(current):
        return None
    for key in ("report", "pricing", "name", "description"):
        if previous.get(key) != current.get(key):
            return None
    if (previous.get("seeds") or {}).get("limit") != (current.get("seeds") or {}).get("limit"):
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    batches = sorted(shards.done())
    if state.get("batches") != batches or report.get("batches") != len(batches):
        return None
    return report


def _remove_if_empty(path: Path, recipe: Recipe) -> None:
    """Remove a run directory this run created when no batch finished and its response cache
    (if there) holds nothing: a failed start leaves nothing behind."""
    import shutil

    from distillery.backends.cache import ResponseCache

    if not path.is_dir() or any((path / "shards").glob("batch-*.json")):
        return
    cache = path / "cache"
    if cache.exists():
        try:
            held = ResponseCache(cache)
            try:
                if len(held):
                    return
            finally:
                held.close()
        except Exception:  # noqa: BLE001 - an unreadable cache is kept, not judged
            return
    shutil.rmtree(path, ignore_errors=True)


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

