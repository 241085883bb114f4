"""Finishing a run: the report from the batch markers and the reduce, and the dataset card."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from distillery import __version__
from distillery.generate.strategy import Strategy
from distillery.io.atomic import atomic_write_text
from distillery.pipeline.stage import StageStats
from distillery.recipe import Recipe
from distillery.records import utc_now
from distillery.report.card import dataset_card, time_summary


def aggregate(markers: dict[int, dict[str, Any]], reduced: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sum the per-batch markers of a run into run totals (stage stats merged by name, in
    order), then apply the reduce's: its stages come last, and its counts of accepted,
    rejected and prompts with an accepted record replace the batches' (they are after
    deduplication)."""
    totals: Counter = Counter()
    stages: dict[str, StageStats] = {}
    spans: list[tuple[float, float]] = []
    for _, m in sorted(markers.items()):
        if "started_unix" in m and "finished_unix" in m:
            spans.append((m["started_unix"], m["finished_unix"]))
        else:  # a marker from before batches overlapped: its own time
            totals["busy_seconds"] += m.get("seconds", 0.0)
        for key in (
            "seeds", "candidates", "accepted", "rejected", "prompts", "prompts_with_accepted", "cache_hits",
            "backend_calls", "waves", "stopped_early", "tokens_in", "tokens_out", "billed_tokens_in", "billed_tokens_out", "retries",
        ):
            totals[key] += m.get(key, 0)
        totals["seconds"] += m.get("seconds", 0.0)
        for s in m["stages"]:
            st = StageStats.from_dict(s)
            if st.name in stages:
                stages[st.name].merge(st)
            else:
                stages[st.name] = st
    totals["busy_seconds"] += busy_time(spans)
    if reduced is not None:
        for s in reduced["stages"]:
            stages[s["name"]] = StageStats.from_dict(s)
        for key in ("accepted", "rejected", "prompts_with_accepted"):
            totals[key] = reduced[key]
    return {"totals": dict(totals), "stages": list(stages.values())}


def busy_time(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by the union of ``spans`` (``(start, end)`` unix times): the time some
    batch was running, overlapping batches counted once."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def build_report(
    recipe: Recipe,
    strategy: Strategy,
    markers: dict[int, dict[str, Any]],
    reduced: dict[str, Any] | None,
    session: dict[str, Any],
) -> dict[str, Any]:
    """The ``report.json`` content from the batch markers and the reduce's counts.

    Keys: ``funnel`` (``[{stage, in, out}]``, seeds first, accepted last; the ``generate`` row
    has prompts in, the candidates the checks received out and every candidate made as
    ``candidates``; a curate run has no ``generate`` row), ``accept_rate``
    (accepted / candidates), ``tokens``, ``wall_time_s`` (the time some batch was
    running, over all sessions and workers: batches that overlapped are counted once),
    ``session_wall_s`` (this session, start to finish: plan, batches, reduce, diversity, files;
    set by :func:`finalize_run`), ``run_time_s`` (the whole run: this session plus the batch time
    of earlier sessions), ``phases_s`` (this session's time by phase), ``generation_time_s`` (time
    spent waiting for the teacher, summed over batches), ``throughput`` (per second of
    ``wall_time_s``), ``failures`` (by kind), ``model_calls`` (paid calls by role: ``teacher``,
    ``judge``...: requests, tokens, cost), ``cost`` (every paid call, priced by
    ``recipe.pricing``; ``per_accepted`` divides it by the accepted records), ``cache``,
    ``stages`` (per stage: in, out, seconds, rejection reasons), ``strategy``, ``executor``.
    """
    agg = aggregate(markers, reduced)
    t = agg["totals"]
    stages: list[StageStats] = agg["stages"]
    funnel = []
    for st in stages:
        if st.kind == "generate":
            if strategy.mode == "curate" or not strategy.needs_teacher:
                continue  # nothing was generated: the seeds' own responses go straight to the checks
            # prompts in; out: the candidates the checks received (failed generations are its reasons)
            funnel.append({"stage": st.name, "kind": st.kind, "in": t.get("prompts", 0), "out": st.records_out,
                           "candidates": st.records_in})
            continue
        label = "seeds" if st.kind == "read" else st.name
        funnel.append({"stage": label, "kind": st.kind, "in": st.records_in, "out": st.records_out})
    candidates = t.get("candidates", 0)
    accepted = t.get("accepted", 0)
    failures: Counter = Counter()
    for st in stages:
        if st.kind in ("read", "generate"):
            failures.update(st.reasons)
    gen = next((s for s in stages if s.kind == "generate"), None)
    gen_seconds = gen.seconds if gen else 0.0
    seconds = t.get("busy_seconds", 0.0) or t.get("seconds", 0.0)
    price = recipe.pricing
    model_calls = session.get("model_calls") or {}
    if model_calls:  # every call the run paid for, teacher and stages (judge, difficulty), in all sessions
        cost = sum(u.get("cost", 0.0) for u in model_calls.values())
    else:  # a run directory from before calls were counted by role
        cost = (t.get("billed_tokens_in", 0) * price.input_per_million
                + t.get("billed_tokens_out", 0) * price.output_per_million) / 1e6
    calls = t.get("backend_calls", 0)
    return {
        "name": recipe.name,
        "recipe_hash": recipe.data_hash(),
        "distillery_version": __version__,
        "mode": strategy.mode,
        "strategy": strategy.name,
        "executor": session.get("executor", "local"),
        "teacher": None if recipe.teacher is None or not strategy.needs_teacher
        else {"backend": recipe.teacher.backend, "model": recipe.teacher.model},
        "finished_at": utc_now(),
        "funnel": funnel,
        "seeds": t.get("seeds", 0),
        "prompts": t.get("prompts", 0),
        "candidates": candidates,
        "accepted": accepted,
        "rejected": t.get("rejected", 0),
        "accept_rate": round(accepted / candidates, 4) if candidates else 0.0,
        "prompts_with_accepted": t.get("prompts_with_accepted", 0),
        "prompt_yield": round(t.get("prompts_with_accepted", 0) / t["prompts"], 4) if t.get("prompts") else 0.0,
        "tokens": {
            "in": t.get("tokens_in", 0),
            "out": t.get("tokens_out", 0),
            "billed_in": t.get("billed_tokens_in", 0),
            "billed_out": t.get("billed_tokens_out", 0),
        },
        "wall_time_s": round(seconds, 3),
        "session_wall_s": round(session.get("seconds", 0.0), 3),
        "run_time_s": round(session.get("seconds", 0.0) + _earlier_time(session), 3),
        "phases_s": {k: round(v, 3) for k, v in (session.get("phases") or {}).items()},
        "generation_time_s": round(gen_seconds, 3),
        "throughput": {
            "requests_per_s": round(calls / seconds, 3) if seconds else None,
            "candidates_per_s": round(candidates / seconds, 3) if seconds else None,
            "accepted_per_s": round(accepted / seconds, 3) if seconds else None,
            "tokens_out_per_s": round(t.get("billed_tokens_out", 0) / seconds, 1) if seconds else None,
        },
        "failures": dict(failures.most_common()),
        "retries": t.get("retries", 0),
        "cache": {"hits": t.get("cache_hits", 0), "backend_calls": calls, "session_backend_calls": session.get("backend_calls", 0)},
        "waves": t.get("waves", 0),
        "stopped_early": t.get("stopped_early", 0),
        "model_calls": model_calls,
        "cost": {
            "currency": price.currency,
            "estimated": round(cost, 6),
            "per_accepted": round(cost / accepted, 8) if accepted else None,
            "input_per_million": price.input_per_million,
            "output_per_million": price.output_per_million,
        },
        "stages": [s.to_dict() for s in stages],
        "batches": len(markers),
    }


def _earlier_time(session: dict[str, Any]) -> float:
    """Batch time of the batches earlier sessions finished (their spans' union)."""
    markers = (session.get("earlier_batches") or {}).values()
    spans = [(m["started_unix"], m["finished_unix"]) for m in markers if "started_unix" in m and "finished_unix" in m]
    return busy_time(spans) + sum(m.get("seconds", 0.0) for m in markers if "started_unix" not in m)


def print_funnel(report: dict[str, Any], console: Console) -> None:
    """Print the funnel table and headline figures of a report."""
    table = Table(title=f"distillery · {report['name']} · funnel")
    table.add_column("stage")
    table.add_column("kind")
    table.add_column("in", justify="right")
    table.add_column("out", justify="right")
    table.add_column("kept", justify="right")
    table.add_column("top rejection reasons")
    reasons = {s["name"]: s["reasons"] for s in report["stages"]}
    for row in report["funnel"]:
        kept = f"{row['out'] / row['in']:.1%}" if row["in"] else "-"
        name = "read" if row["stage"] == "seeds" else row["stage"]
        top = ", ".join(f"{k} {v}" for k, v in list(reasons.get(name, {}).items())[:3])
        table.add_row(row["stage"], row["kind"], str(row["in"]), str(row["out"]), kept, top)
    console.print(table)
    tp = report["throughput"]
    console.print(
        f"accepted {report['accepted']} of {report['candidates']} candidates "
        f"(accept rate {report['accept_rate']:.1%}) from {report['seeds']} seeds · "
        f"tokens in/out {report['tokens']['in']}/{report['tokens']['out']} · "
        f"time {time_summary(report)} · requests/s {tp['requests_per_s']} · "
        f"backend calls {report['cache']['backend_calls']} (cache hits {report['cache']['hits']}) · "
        f"cost {report['cost']['estimated']} {report['cost']['currency']}"
    )


LEXICAL_SAMPLE = 20_000


def run_diversity(accepted: Path, recipe: Recipe) -> dict[str, Any] | None:
    """Diversity metrics (:mod:`distillery.report.diversity`) of the accepted responses in
    ``accepted`` (a Parquet file), or ``None`` when ``report.diversity_sample`` is 0 or nothing
    was accepted.

    Lexical metrics use a uniform reservoir sample of at most :data:`LEXICAL_SAMPLE` responses
    (Vitter, 1985, algorithm R; memory stays bounded), embedding metrics ``report.diversity_sample`` of them.
    """
    size = recipe.report.diversity_sample
    if not size:
        return None
    import pyarrow.parquet as pq

    from distillery.report.diversity import diversity_metrics

    rng = random.Random(0)
    texts: list[str] = []
    seen = 0
    for batch in pq.ParquetFile(accepted).iter_batches(columns=["response"], batch_size=4096):
        for response in batch.column(0).to_pylist():
            if not response:
                continue
            seen += 1
            if len(texts) < LEXICAL_SAMPLE:
                texts.append(response)
            elif (j := rng.randrange(seen)) < LEXICAL_SAMPLE:
                texts[j] = response
    if not texts:
        return None
    metrics = diversity_metrics(texts, sample=size, seed=0, embed_model=recipe.report.embedding_model)
    metrics["accepted_responses"] = seen
    return metrics


def finalize_run(
    run_dir: Path,
    recipe: Recipe,
    strategy: Strategy,
    markers: dict[int, dict[str, Any]],
    reduced: dict[str, Any],
    session: dict[str, Any],
    console: Console,
) -> dict[str, Any]:
    """Write ``report.json`` and the dataset card ``README.md`` of a run whose dataset the
    reduce has written; print the funnel; return the report.

    Raises:
        RuntimeError: the reduce's counts disagree with the batches' (a bug).
    """
    started = time.perf_counter()
    report = build_report(recipe, strategy, markers, reduced, session)
    before_dedup = sum(m["accepted"] for m in markers.values()) + sum(m["rejected"] for m in markers.values())
    if reduced["accepted"] + reduced["rejected"] != before_dedup:
        raise RuntimeError(f"the dataset holds {reduced['accepted']} + {reduced['rejected']} records, the batches {before_dedup}")
    report["diversity"] = run_diversity(run_dir / "accepted.parquet", recipe)
    finished = time.perf_counter()
    report["finalize_s"] = round(finished - started, 3)
    if "started" in session:  # the session's time includes this (diversity embeddings can dominate it)
        seconds = finished - session["started"]
        report["session_wall_s"] = round(seconds, 3)
        report["run_time_s"] = round(seconds + _earlier_time(session), 3)
        report["phases_s"]["diversity"] = round(finished - started, 3)
    atomic_write_text(run_dir / "report.json", json.dumps(report, indent=2, sort_keys=False))
    atomic_write_text(run_dir / "README.md", dataset_card(recipe, report, strategy))
    print_funnel(report, console)
    console.print(f"wrote {run_dir}/accepted.parquet ({reduced['accepted']}), rejected.parquet ({reduced['rejected']}), "
                  "report.json, README.md")
    return report
