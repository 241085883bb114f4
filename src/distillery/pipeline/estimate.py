"""``distillery plan``: what a run will cost, from a pilot through the real backend.

Before anything is spent at scale, the first batch of the run (or ``pilot`` seeds of it) goes
through exactly what the run does — the strategy, the verifiers and filters in its loop, every
stage that calls a model — with the run's response cache, so the run that follows reuses every
pilot response. The pilot's figures per seed are scaled to the whole seed set:

- requests, tokens in and out, and cost (``pricing:``), separately for generation (``teacher``)
  and for every stage that calls a model (``judge``, ``difficulty``);
- seconds of every stage (``perplexity`` runs in-process: time, not tokens);
- wall time at the configured concurrency: the executor runs batches one after another, each
  like the pilot's, so the estimate is ``startup + batches * seconds per batch`` (the pilot is
  one whole batch by default, so its concurrency is the run's);
- the budget ratio (query budget / seeds, Chan et al., 2024) and the strategy that paper
  favours at it.

The pilot always calls the model (a second ``plan`` pays for its pilot again), so what it
measures is what calls cost now; each response is stored in the run's cache as it arrives, so
the run reuses the latest pilot's responses. A :attr:`~distillery.generate.strategy.Strategy.sequential`
strategy's pilot is the whole first batch (its work per batch does not shrink with fewer seeds).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from distillery.backends.cache import fresh_calls
from distillery.pipeline.batch import Worker, process_batch
from distillery.pipeline.budget import total
from distillery.pipeline.plan import Plan
from distillery.recipe import Recipe


def _count_seeds(plan: Plan) -> tuple[int, list[Any], int]:
    """``(seeds, first batch's items, batches)`` of the run."""
    first: list[Any] = []
    seeds = batches = 0
    for k, items in plan.batches():
        if k == 0:
            first = list(items)
        seeds += len(items)
        batches += 1
    return seeds, first, batches


def estimate(recipe: Recipe, run_dir: str | Path | None = None, pilot: int | None = None) -> dict[str, Any]:
    """Run a pilot of ``recipe`` and estimate the whole run (see the module doc).

    Args:
        recipe: the validated recipe.
        run_dir: the run directory whose response caches the pilot fills (default
            ``output.dir``); the pilot's spending counts toward the run's ``budget:`` (its
            responses are the run's). No results are written there.
        pilot: seeds in the pilot (default: the first batch, ``output.batch_size``).

    Returns:
        ``{"seeds", "batches", "pilot": {...measured...}, "estimate": {"requests", "tokens_in",
        "tokens_out", "cost", "wall_s", "by_role": {role: {...}}, "stages": {name: seconds}},
        "budget_ratio", "favoured_strategy", "currency"}``.

    Raises:
        RecipeError, InputError, BackendError: as a run would.
    """
    run_dir = Path(run_dir or recipe.output.dir)
    plan = Plan.make(recipe, run_dir)
    seeds, first, batches = _count_seeds(plan)
    strategy = plan.strategy()
    items = first if strategy.sequential or not pilot else first[:pilot]
    n = len(items)
    with tempfile.TemporaryDirectory(prefix="distillery-plan-") as scratch, fresh_calls():
        # the pilot writes its shard and state to a scratch folder; its responses go to the run's caches
        # (the run reuses them) and its spending to the run's budget (it paid for the run's data)
        measured = asyncio.run(_pilot(plan, items, Path(scratch)))
    per_seed = 1.0 / n if n else 0.0
    scale = seeds * per_seed
    by_role = {}
    for role, u in measured["by_role"].items():
        by_role[role] = {
            "requests": round(u["requests"] * scale), "tokens_in": round(u["tokens_in"] * scale),
            "tokens_out": round(u["tokens_out"] * scale), "cost": u["cost"] * scale,
        }
    batch_size = max(1, min(recipe.output.batch_size, seeds or 1))
    per_batch = measured["batch_s"] * (batch_size / n) if n else 0.0
    wall = measured["startup_s"] + per_batch * batches
    requests = sum(r["requests"] for r in by_role.values())
    query_budget = recipe.budget.max_requests or requests
    ratio = query_budget / seeds if seeds else 0.0
    out = {
        "recipe": recipe.name,
        "strategy": strategy.name,
        "seeds": seeds,
        "batches": batches,
        "currency": recipe.pricing.currency,
        "pilot": {**measured, "seeds": n},
        "estimate": {
            "requests": requests,
            "tokens_in": sum(r["tokens_in"] for r in by_role.values()),
            "tokens_out": sum(r["tokens_out"] for r in by_role.values()),
            "cost": sum(r["cost"] for r in by_role.values()),
            "wall_s": wall,
            # the run replays the pilot's responses from the cache; its checks run again
            "wall_s_after_pilot": max(0.0, wall - measured["generate_s"]),
            "by_role": by_role,
            "stages": {name: s * scale for name, s in measured["stage_s"].items()},
            "accepted": round(measured["accepted"] * scale),
        },
        "budget_ratio": ratio,
        "query_budget": query_budget,
        "favoured_strategy": _favoured(ratio),
        "budget": recipe.budget.model_dump(),
    }
    return out


def _favoured(ratio: float) -> dict[str, str] | None:
    from distillery.generate.chan import favoured_strategy

    if ratio <= 0:  # nothing calls a model
        return None
    name, why = favoured_strategy(ratio)
    return {"strategy": name, "why": why}


async def _pilot(plan: Plan, items: list[Any], scratch: Path) -> dict[str, Any]:
    started = time.perf_counter()
    worker = Worker(plan, shards_dir=scratch / "shards", state_dir=scratch / "state")  # stages are built once per run too
    try:
        if worker.backend is not None:
            await worker.backend.preflight()  # loads an in-process model: the run's startup, not per batch
        startup = time.perf_counter() - started
        started = time.perf_counter()
        outcome = await process_batch(plan, worker, 0, items)
        batch_s = time.perf_counter() - started
        spent = dict(worker.budget.by_role)
        marker = outcome.marker or {}
        stage_s: Counter = Counter()
        for s in marker.get("stages", []):
            if s["kind"] != "read":
                stage_s[s["name"]] += s.get("seconds", 0.0)
        return {
            "startup_s": startup,
            "batch_s": batch_s,
            "generate_s": stage_s.get("generate", 0.0),
            "calls": outcome.calls,
            "candidates": marker.get("candidates", 0),
            "accepted": marker.get("accepted", 0),
            "transient": dict(outcome.transient),
            "by_role": {role: u.to_dict() for role, u in spent.items()},
            "spent": total(spent).to_dict(),
            "stage_s": dict(stage_s),
        }
    finally:
        await worker.aclose()


def format_plan(p: dict[str, Any]) -> list[str]:
    """The plan as lines for the terminal."""
    e, pilot, cur = p["estimate"], p["pilot"], p["currency"]
    lines = [
        f"plan for {p['recipe']} (strategy {p['strategy']}): {p['seeds']} seeds in {p['batches']} batches",
        f"pilot: {pilot['seeds']} seeds, {pilot['calls']} calls, {pilot['candidates']} candidates, "
        f"{pilot['accepted']} accepted; startup {pilot['startup_s']:.1f} s, batch {pilot['batch_s']:.1f} s",
        "estimate for the whole run:",
    ]
    for role, r in sorted(e["by_role"].items()):
        lines.append(f"  {role:<12} {r['requests']:>9,} requests  {r['tokens_in']:>12,} tokens in  "
                     f"{r['tokens_out']:>12,} tokens out  {r['cost']:.4g} {cur}")
    lines.append(f"  {'total':<12} {e['requests']:>9,} requests  {e['tokens_in']:>12,} tokens in  "
                 f"{e['tokens_out']:>12,} tokens out  {e['cost']:.4g} {cur}")
    for name, s in e["stages"].items():
        lines.append(f"  stage {name:<20} {s:9.1f} s")
    lines.append(f"  wall time ~{_duration(e['wall_s'])} at the configured concurrency "
                 f"(~{_duration(e['wall_s_after_pilot'])} after the pilot, whose responses the run reuses); "
                 f"~{e['accepted']:,} accepted before deduplication")
    lines.append(f"budget ratio {p['budget_ratio']:.2f} ({p['query_budget']:,} queries / {p['seeds']:,} seeds)"
                 + (f": Chan et al. (2024) favour {p['favoured_strategy']['strategy']} — {p['favoured_strategy']['why']}"
                    if p.get("favoured_strategy") else ""))
    b = p["budget"]
    if any(v is not None for v in b.values()):
        lines.append("budget: " + ", ".join(f"{k} {v:g}" for k, v in b.items() if v is not None))
    if pilot["transient"]:
        lines.append(f"warning: {sum(pilot['transient'].values())} pilot requests failed transiently "
                     f"({dict(pilot['transient'])}); the estimate is from the rest")
    return lines


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"

