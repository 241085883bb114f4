"""The streaming runner: seeds -> prompts -> candidates -> stages -> checkpointed shards
-> dataset, report and card.

Seeds are read in batches of ``output.batch_size``. Each batch is generated (or, in curate
mode, taken from the seeds), run through the stateless stages (cheapest first) inside the
sampling loop, then through the stateful ones (deduplication), and written as a shard with a
marker. Memory holds one batch plus the deduplication indexes. A killed run resumes from
the markers: finished batches are skipped, the stateful stages are rebuilt from their
accepted records, and responses already received come from the response cache.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from distillery import __version__
from distillery.backends.base import Backend
from distillery.backends.cache import CachedBackend, ResponseCache
from distillery.backends.config import build_backend
from distillery.errors import InputError, RecipeError
from distillery.generate.candidates import PromptItem, bad_row_record, curated_record, seed_id
from distillery.generate.prompt import PromptBuilder
from distillery.generate.sampler import RejectionSampler, run_stages
from distillery.io.atomic import atomic_write_text
from distillery.io.seeds import BadRow, SeedItem, SeedReader
from distillery.io.shards import ShardStore
from distillery.pipeline.progress import RunProgress
from distillery.pipeline.stage import BuildContext, Stage, StageStats
from distillery.recipe import Recipe
from distillery.records import utc_now


def make_backend(recipe: Recipe) -> Backend:
    """The teacher backend a recipe names (uncached).

    Raises:
        RecipeError: missing API key variable.
    """
    assert recipe.teacher is not None
    return build_backend(recipe.teacher, recipe.base_dir)


def build_stages(recipe: Recipe, ctx: BuildContext) -> tuple[list[Stage], list[Stage]]:
    """Build the recipe's stages: ``(in_loop, after_sampling)``.

    Record-scoped stateless stages (verifiers, filters, decontamination) run inside the
    sampling loop, cheapest first unless ``stage_order: recipe``. After sampling come the
    prompt-scoped stages (e.g. self-consistency, which needs all of a prompt's candidates),
    then the stateful ones (deduplication), in that order.
    """
    configs: list[Any] = [*recipe.verifiers, *recipe.filters]
    if recipe.decontamination is not None:
        configs.append(recipe.decontamination)
    configs.extend(recipe.dedup)
    stages = [c.build(ctx) for c in configs]
    names = Counter(s.name for s in stages)
    for name, count in names.items():
        if count > 1:
            raise RecipeError(f"two stages are named {name!r}; give one a distinct `name:`")
    in_loop = [s for s in stages if not s.stateful and s.scope == "record"]
    grouped = [s for s in stages if not s.stateful and s.scope == "prompt"]
    stateful = [s for s in stages if s.stateful]
    if recipe.stage_order == "auto":
        in_loop.sort(key=lambda s: s.cost)  # stable: equal costs keep recipe order
        grouped.sort(key=lambda s: s.cost)
    return in_loop, grouped + stateful


def _batches(items: Iterator[SeedItem], size: int) -> Iterator[list[SeedItem]]:
    while chunk := list(islice(items, size)):
        yield chunk


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

    # -- run directory -------------------------------------------------------------------
    def _prepare_run_dir(self) -> ShardStore:
        recipe_hash = self.recipe.data_hash()
        meta_path = self.run_dir / "run.json"
        shards = ShardStore(self.run_dir / "shards")
        if meta_path.exists():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if self.fresh:
                shards.clear()
                for name in ("accepted.parquet", "rejected.parquet", "accepted.jsonl", "rejected.jsonl", "report.json", "README.md"):
                    (self.run_dir / name).unlink(missing_ok=True)
            elif meta.get("recipe_hash") != recipe_hash:
                raise RecipeError(
                    f"{self.run_dir} holds a run of a different recipe (hash {meta.get('recipe_hash')} != {recipe_hash}); "
                    "use another output.dir or --fresh to start over (the response cache is kept)"
                )
        atomic_write_text(self.run_dir / "recipe.yaml", self.recipe.to_yaml())
        atomic_write_text(
            meta_path,
            json.dumps({"recipe_hash": recipe_hash, "distillery_version": __version__, "created_at": utc_now()}, indent=2),
        )
        return shards

    def _seed_reader(self, required: tuple[str, ...]) -> SeedReader:
        s = self.recipe.seeds
        path = s.path if (s.format in ("hub", "builtin") or s.path.startswith("builtin:")) else str(self.recipe.resolve(s.path))
        return SeedReader(
            path=path,
            fmt=s.format,
            fields=s.fields,
            required=required,
            limit=s.limit,
            shuffle_seed=s.shuffle_seed,
            split=s.split,
            subset=s.subset,
            options=s.options,
        )

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run (or resume) the recipe and write the dataset, report and card.

        Returns:
            The report (also written to ``report.json``).

        Raises:
            RecipeError: invalid recipe or a run directory of another recipe.
            InputError: a bad seed row, unless ``skip_bad_rows``.
            BackendError: the teacher cannot be used.
        """
        return asyncio.run(self._run())

    async def _run(self) -> dict[str, Any]:
        recipe = self.recipe
        shards = self._prepare_run_dir()
        ctx = BuildContext(base_dir=recipe.base_dir, run_dir=self.run_dir)
        in_loop, after_sampling = build_stages(recipe, ctx)
        prompt = PromptBuilder(
            recipe.prompt.template, recipe.prompt.system, [t.model_dump() for t in recipe.prompt.few_shot]
        )
        required = set(prompt.variables)
        for stage in in_loop + after_sampling:
            required |= set(getattr(stage, "required_seed_fields", ()))
        responder = None
        if recipe.curate:
            responder = PromptBuilder(recipe.response_template() or "")
            required |= responder.variables
        reader = self._seed_reader(tuple(sorted(required)))
        done = shards.done()
        backend = cache = None
        if not recipe.curate:
            cache = ResponseCache(recipe.output.cache or self.run_dir / "cache.sqlite")
            backend = CachedBackend(make_backend(recipe), cache)
        session = {"backend_calls": 0, "cache_hits": 0, "started": time.perf_counter()}
        try:
            # rebuild deduplication state from batches finished in an earlier session
            if after_sampling and done:
                for path in shards.paths("accepted"):
                    import pyarrow.parquet as pq

                    records = pq.read_table(path).to_pylist()
                    for stage in after_sampling:
                        stage.commit(records)
            total = recipe.seeds.limit
            with RunProgress(total, enabled=self.progress, console=self.console) as bar:
                for k, items in enumerate(_batches(iter(reader), recipe.output.batch_size)):
                    if k in done:
                        bar.on_batch(len(items), done[k]["accepted"], done[k]["candidates"])
                        continue
                    marker = await self._run_batch(
                        k, items, reader, prompt, responder, backend, in_loop, after_sampling, shards, bar
                    )
                    done[k] = marker
                    session["backend_calls"] += marker["backend_calls"]
                    session["cache_hits"] += marker["cache_hits"]
        finally:
            for stage in in_loop + after_sampling:
                stage.close()
            if backend is not None:
                await backend.aclose()
            if cache is not None:
                cache.close()
        from distillery.report.build import finalize_run

        return finalize_run(self.run_dir, recipe, shards, in_loop + after_sampling, session, self.console)

    async def _run_batch(
        self,
        k: int,
        items: list[SeedItem],
        reader: SeedReader,
        prompt: PromptBuilder,
        responder: PromptBuilder | None,
        backend: Backend | None,
        in_loop: list[Stage],
        after_sampling: list[Stage],
        shards: ShardStore,
        bar: RunProgress,
    ) -> dict[str, Any]:
        recipe = self.recipe
        started = time.perf_counter()
        for stage in in_loop + after_sampling:
            stage.stats = StageStats(stage.name, stage.kind)
        read = StageStats("read", "read")
        records: list[dict[str, Any]] = []
        prompts: list[PromptItem] = []
        for item in items:
            read.records_in += 1
            if isinstance(item, BadRow):
                self._bad_row(item, reader)
                records.append(bad_row_record(item, reader.path, reader.source_name))
                read.reasons[item.reason.split(":", 1)[0]] += 1
                continue
            try:
                messages = prompt.messages(item.data)
            except KeyError as e:
                bad = BadRow(item.index, item.line, f"missing_field: {e.args[0]}")
                self._bad_row(bad, reader)
                records.append(bad_row_record(bad, reader.path, reader.source_name))
                read.reasons["missing_field"] += 1
                continue
            read.records_out += 1
            prompts.append(PromptItem(item, seed_id(item, recipe.seeds.id_field, reader.source_name), messages))
        generate = StageStats("generate", "generate")
        cache_hits = backend_calls = waves = retries = 0
        if recipe.curate:
            assert responder is not None
            candidates = [
                curated_record(p, reader.path, responder.render(p.row.data), prompt.template_hash) for p in prompts
            ]
            generate.records_in = len(candidates)
            generate.records_out = sum(r["accepted"] for r in candidates)
            for r in candidates:
                if not r["accepted"]:
                    generate.reasons[r["reject_reason"].split(":", 1)[0]] += 1
            await run_stages(in_loop, candidates)
        else:
            assert backend is not None and recipe.teacher is not None
            sampler = RejectionSampler(
                backend,
                in_loop,
                recipe.teacher.sampling.params(),
                recipe.generation.samples_per_prompt,
                recipe.generation.accept_per_prompt,
                recipe.generation.wave_size,
                reader.path,
                prompt.template_hash,
                on_result=bar.on_candidate,
            )
            result = await sampler.sample(prompts)
            candidates = result.records
            generate = result.generate
            cache_hits = result.cache_hits
            backend_calls = len(candidates) - cache_hits
            waves = result.waves
            retries = result.retries
        survivors = [r for r in candidates if r["accepted"]]
        for stage in after_sampling:
            stage.prepare(candidates)
            survivors = await stage.apply_async(survivors)
        for stage in after_sampling:
            stage.commit(survivors)
        records.extend(candidates)
        accepted = [r for r in records if r["accepted"]]
        rejected = [r for r in records if not r["accepted"]]
        live_tokens = [r for r in candidates if not r.get("cached")]
        marker = {
            "batch": k,
            "seeds": len(items),
            "candidates": len(candidates),
            "accepted": len(accepted),
            "rejected": len(rejected),
            "prompts": len(prompts),
            "prompts_with_accepted": len({r["seed_id"] for r in accepted}),
            "cache_hits": cache_hits,
            "backend_calls": backend_calls,
            "waves": waves,
            "tokens_in": sum(r.get("tokens_in") or 0 for r in candidates),
            "tokens_out": sum(r.get("tokens_out") or 0 for r in candidates),
            "billed_tokens_in": sum(r.get("tokens_in") or 0 for r in live_tokens),
            "billed_tokens_out": sum(r.get("tokens_out") or 0 for r in live_tokens),
            "retries": retries,
            "stages": [s.to_dict() for s in (read, generate, *[st.stats for st in in_loop + after_sampling])],
            "seconds": round(time.perf_counter() - started, 4),
            "finished_at": utc_now(),
        }
        shards.write(k, accepted, rejected, marker)
        bar.on_batch(len(items), len(accepted))
        return marker

    def _bad_row(self, bad: BadRow, reader: SeedReader) -> None:
        if not self.skip_bad_rows:
            raise InputError(reader.path, bad.line, bad.field, bad.reason + " (use --skip-bad-rows to record it as rejected and go on)")


def load_report(run_dir: str | Path) -> dict[str, Any]:
    """The ``report.json`` of a finished run.

    Raises:
        RecipeError: no report there (the run has not finished).
    """
    path = Path(run_dir) / "report.json"
    if not path.exists():
        raise RecipeError(f"{run_dir}: no report.json (is this a finished run directory?)")
    return json.loads(path.read_text(encoding="utf-8"))


def copy_recipe(run_dir: str | Path) -> dict[str, Any]:
    """The resolved recipe a run used, as a dict."""
    return yaml.safe_load((Path(run_dir) / "recipe.yaml").read_text(encoding="utf-8"))

