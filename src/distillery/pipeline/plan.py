"""The plan of a run: the resolved recipe, its strategy and stages, and the batches of seeds.

A :class:`Plan` is made (and checked) before any work: the strategy is built, stage names
must be unique, and every record field a stage reads must be one the strategy makes; every
seed field the strategy or a stage reads is then required of each seed row as it is read
(a row without one is a bad row naming the field). It is a small,
picklable value: executors ship it to their workers, which build the stages and the backend
from it (:class:`~distillery.pipeline.batch.Worker`).

Seeds are cut into batches of ``output.batch_size`` by :meth:`Plan.batches`, which also
refuses a duplicate seed id (``1`` and ``"1"`` are the same id) at the row where it repeats,
naming both lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from distillery import registry
from distillery.backends.cache import cache_location
from distillery.errors import InputError, RecipeError
from distillery.generate.candidates import seed_id
from distillery.generate.strategy import Strategy
from distillery.io.seeds import BadRow, SeedItem, SeedReader, SeedRow
from distillery.pipeline.budget import Budget
from distillery.pipeline.config import StageConfig
from distillery.recipe import Recipe
from distillery.records import RECORD_FIELDS

MAP_SECTIONS = ("verifiers", "filters", "decontamination")
"""Recipe sections whose stages run in each batch (stateless)."""
REDUCE_SECTIONS = ("dedup",)
"""Recipe sections whose stages run after the map, over all batches in order (stateful)."""


def section_configs(recipe: Recipe, sections: tuple[str, ...]) -> list[tuple[str, StageConfig]]:
    """``(key path, config)`` of the stage entries of ``sections``, in recipe order."""
    out: list[tuple[str, StageConfig]] = []
    for section in sections:
        value = getattr(recipe, section)
        if value is None:
            continue
        if isinstance(value, list):
            out.extend((f"{section}.{i}", c) for i, c in enumerate(value))
        else:
            out.append((section, value))
    return out


@dataclass
class Plan:
    """What a run does, checked; see the module doc.

    Attributes:
        recipe: the validated recipe.
        run_dir: the run directory.
        skip_bad_rows: record bad seed rows as rejected instead of stopping.
        required: seed fields every row must have (the strategy's and the stages' inputs).
        cache_dir: the response cache (folder, or ``.sqlite`` file).
        budget_share: the share of the budget left that each worker process may spend
            (``1/n`` for ``n`` parallel workers; see :mod:`distillery.pipeline.budget`).
    """

    recipe: Recipe
    run_dir: Path
    skip_bad_rows: bool
    required: tuple[str, ...]
    cache_dir: Path
    budget_share: float = 1.0

    def budget(self) -> Budget:
        """This process's :class:`~distillery.pipeline.budget.Budget` of the run."""
        price = self.recipe.pricing
        return Budget(self.recipe.budget, price.input_per_million, price.output_per_million,
                      self.run_dir / "budget", self.budget_share)

    @classmethod
    def make(cls, recipe: Recipe, run_dir: str | Path, skip_bad_rows: bool = False) -> Plan:
        """Check ``recipe`` for a run into ``run_dir`` and make its plan.

        Raises:
            RecipeError: the strategy cannot be built, two stages share a name, or a stage reads
                a record field the strategy does not make.
        """
        strategy = recipe.generation.build(recipe)
        entries = section_configs(recipe, MAP_SECTIONS + REDUCE_SECTIONS)
        seen: dict[str, str] = {}
        for key, config in entries:
            name = config.stage_name
            if name in seen:
                raise RecipeError(f"{key}: two stages are named {name!r} ({seen[name]} too); give one a distinct `name:`")
            seen[name] = key
        made = set(RECORD_FIELDS) | set(strategy.outputs)
        required = set(strategy.inputs)
        for key, config in entries:
            for field in config.inputs:
                if field.startswith("seed."):
                    required.add(field[5:])
                elif field not in made:
                    extra = f" (it adds {', '.join(sorted(strategy.outputs))})" if strategy.outputs else ""
                    raise RecipeError(
                        f"{key} ({config.stage_name}): reads the record field {field!r}, which strategy "
                        f"{strategy.name!r} does not make{extra}"
                    )
        # absolute: executor workers may run in another working directory
        run_dir = Path(run_dir).expanduser().resolve()
        cache = Path(recipe.output.cache).expanduser().resolve() if recipe.output.cache else cache_location(run_dir / "cache")
        return cls(recipe, run_dir, skip_bad_rows, tuple(sorted(required)), cache)

    def strategy(self) -> Strategy:
        """A new instance of the recipe's strategy."""
        return self.recipe.generation.build(self.recipe)

    def reader(self) -> SeedReader:
        """A reader of the recipe's seeds that requires :attr:`required`."""
        s = self.recipe.seeds
        fmt = registry.get("seed_format", s.format) if s.format != "auto" else None
        local = fmt.local if fmt is not None else not s.path.startswith("builtin:")
        path = str(self.recipe.resolve(s.path)) if local else s.path
        return SeedReader(
            path=path,
            fmt=s.format,
            fields=s.fields,
            required=self.required,
            limit=s.limit,
            shuffle_seed=s.shuffle_seed,
            split=s.split,
            subset=s.subset,
            options=s.options,
        )

    def batches(self, reader: SeedReader | None = None) -> Iterator[tuple[int, list[SeedItem]]]:
        """``(k, seed items)`` of every batch, in order.

        A seed whose id repeats an earlier one becomes a :class:`BadRow` (``duplicate_id``)
        with ``--skip-bad-rows``.

        Raises:
            InputError: a duplicate seed id, naming both lines (without ``--skip-bad-rows``).
        """
        reader = reader or self.reader()
        id_field = self.recipe.seeds.id_field
        first_line: dict[str, Any] = {}
        items = (self._unique(item, reader, id_field, first_line) for item in reader)
        k = 0
        while chunk := list(islice(items, self.recipe.output.batch_size)):
            yield k, chunk
            k += 1

    def _unique(self, item: SeedItem, reader: SeedReader, id_field: str | None, first: dict[str, Any]) -> SeedItem:
        if isinstance(item, BadRow):
            return item
        sid = seed_id(item, id_field, reader.source_name)
        where = item.line if item.line is not None else f"row {item.index + 1}"
        if sid in first:
            reason = f"duplicate_id: seed id {sid!r} is also on line {first[sid]}"
            if not self.skip_bad_rows:
                raise InputError(reader.path, item.line, id_field, reason.split(": ", 1)[1] + " (ids must be unique)")
            return BadRow(item.index, item.line, reason, field=id_field, raw=_raw(item))
        first[sid] = where
        return item


def _raw(row: SeedRow) -> str:
    import json

    try:
        return json.dumps(row.data, ensure_ascii=False, default=str)[:500]
    except (ValueError, RecursionError):
        return repr(row.data)[:500]
