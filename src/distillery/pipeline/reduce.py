"""The reduce step: the stateful stages (deduplication) over the finished shards, in batch order.

Batches may finish in any order and on any worker; the reduce reads their shards in batch
order, runs each dedup stage on the accepted records (a stage remembers what it accepted,
so the first of two duplicates in seed order is kept), and writes the dataset:
``accepted.parquet`` and ``rejected.parquet`` (and ``.jsonl`` with ``output.jsonl``), with one
seed type over all shards. Memory holds one shard plus the dedup indexes (the datatrove way:
a map over shards, then a reduce).

``reduce.json`` records which batches it covered and its counts; a re-run of a finished
recipe whose outputs are in place reuses them instead of deduplicating again.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from distillery.io.arrow import record_schema, records_to_table
from distillery.io.atomic import atomic_path, atomic_write_text
from distillery.io.shards import ShardStore
from distillery.pipeline.plan import REDUCE_SECTIONS, Plan, section_configs
from distillery.pipeline.stage import BuildContext, Stage


def outputs(plan: Plan) -> list[Path]:
    """The dataset files the reduce writes for ``plan``."""
    names = ["accepted.parquet", "rejected.parquet"]
    if plan.recipe.output.jsonl:
        names += ["accepted.jsonl", "rejected.jsonl"]
    return [plan.run_dir / n for n in names]


def build_reduce_stages(plan: Plan) -> list[Stage]:
    """The plan's stateful stages (the ``dedup:`` section), in recipe order."""
    ctx = BuildContext(base_dir=plan.recipe.base_dir, run_dir=plan.run_dir)
    return [config.build(ctx) for _, config in section_configs(plan.recipe, REDUCE_SECTIONS)]


async def reduce(plan: Plan, shards: ShardStore, recipe_hash: str) -> dict[str, Any]:
    """Deduplicate the finished shards in order and write the dataset (see the module doc).

    Returns:
        ``{"batches", "accepted", "rejected", "prompts_with_accepted", "stages", "reused"}``;
        ``stages`` are the dedup stages' counters (``StageStats.to_dict``).
    """
    batches = sorted(shards.done())
    state_path = plan.run_dir / "reduce.json"
    if state_path.exists() and all(p.exists() for p in outputs(plan)):
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if state.get("batches") == batches and state.get("recipe_hash") == recipe_hash:
            return {**state, "reused": True}
    stages = build_reduce_stages(plan)
    schema = record_schema(shards.seed_type(), shards.extra)
    seed_type = schema.field("seed").type
    counts = {"accepted": 0, "rejected": 0, "prompts_with_accepted": 0}
    jsonl = plan.recipe.output.jsonl
    try:
        with contextlib.ExitStack() as stack:
            writers = {}
            lines = {}
            for part in ("accepted", "rejected"):
                tmp = stack.enter_context(atomic_path(plan.run_dir / f"{part}.parquet"))
                writers[part] = stack.enter_context(pq.ParquetWriter(tmp, schema))
                if jsonl:
                    jtmp = stack.enter_context(atomic_path(plan.run_dir / f"{part}.jsonl"))
                    lines[part] = stack.enter_context(open(jtmp, "w", encoding="utf-8"))
            for _, records in shards.iter_batches():
                live = [r for r in records if r["accepted"]]
                for stage in stages:
                    live = await stage.apply_async(live)
                for stage in stages:
                    stage.commit(live)
                counts["prompts_with_accepted"] += len({r["seed_id"] for r in live})
                for part, chosen in (("accepted", [r for r in records if r["accepted"]]),
                                     ("rejected", [r for r in records if not r["accepted"]])):
                    counts[part] += len(chosen)
                    table = records_to_table(chosen, seed_type=seed_type, extra=shards.extra)
                    writers[part].write_table(table)
                    if jsonl:
                        for rec in table.to_pylist():
                            lines[part].write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
    finally:
        for stage in stages:
            stage.close()
    state = {"recipe_hash": recipe_hash, "batches": batches, **counts, "stages": [s.stats.to_dict() for s in stages]}
    atomic_write_text(state_path, json.dumps(state, indent=2))
    return {**state, "reused": False}
