"""Decontamination speed: the numpy n-gram index against a plain Python set of n-gram tuples.

Candidate text is GSM8K *train* (question + answer per record, about 4 MB), repeated up to
``--mb`` megabytes; the index covers the shipped benchmarks (GSM8K test, MATH-500,
HumanEval). Both methods run on one pinned core in this process and must report the same
hits. Throughput is given per CPU second (the process's own CPU time, which is what "per
core" means on a shared machine) and per wall second. Prints a Markdown table.

    .venv/bin/python benchmarks/decontaminate.py --mb 20
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from distillery.decontaminate.benchmarks import load_benchmark  # noqa: E402
from distillery.decontaminate.index import NgramIndex, SubstringIndex  # noqa: E402
from distillery.decontaminate.reference import SetNgramIndex  # noqa: E402

T = TypeVar("T")
GSM8K_TRAIN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gsm8k" / "train.jsonl"


def candidates(path: Path, target_mb: float) -> list[str]:
    """GSM8K train records as ``question\\nanswer`` texts, repeated to ``target_mb`` MB of UTF-8."""
    base = [r["question"] + "\n" + r["answer"] for r in map(json.loads, path.read_text().splitlines())]
    size = sum(len(t.encode()) for t in base)
    return base * max(1, round(target_mb * 1e6 / size))


def timed(fn: Callable[..., T], *args: Any) -> tuple[T, float, float]:
    """``(result, wall seconds, CPU seconds)`` of ``fn(*args)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20.0, help="candidate text size in MB (default 20)")
    parser.add_argument("--n", type=int, default=13, help="n-gram length (default 13)")
    parser.add_argument("--corpus", type=Path, default=GSM8K_TRAIN, help="GSM8K train.jsonl")
    parser.add_argument("--benchmarks", nargs="+", default=["gsm8k_test", "math500", "humaneval"])
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    texts = candidates(args.corpus, args.mb)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    items = {name: load_benchmark(name) for name in args.benchmarks}

    def build_fast() -> NgramIndex:
        index = NgramIndex(args.n)
        for name, pairs in items.items():
            index.add_items(name, pairs)
        index.freeze()
        return index

    def build_ref() -> SetNgramIndex:
        ref = SetNgramIndex(args.n)
        for pairs in items.values():
            for _, text in pairs:
                ref.add(text)
        return ref

    def build_sub() -> SubstringIndex:
        sub = SubstringIndex()
        for name, pairs in items.items():
            sub.add_items(name, pairs)
        sub.freeze()
        return sub

    rows = []
    index, _, build = timed(build_fast)
    index.find(texts[:3000])  # warm-up: one full chunk allocates the power tables and buffers
    found, wall, cpu = timed(index.find, texts)
    rows.append(("numpy index (this)", [m.matched for m in found], build, wall, cpu))

    ref, _, build = timed(build_ref)
    counts, wall, cpu = timed(lambda: [ref.matched(t) for t in texts])
    rows.append(("python set of tuples (baseline)", counts, build, wall, cpu))

    sub, _, build = timed(build_sub)
    sub.find(texts[:3000])
    found, wall, cpu = timed(sub.find, texts)
    rows.append(
        (f"GPT-4 50-char substrings, {sub.samples}/item (this)", [m.matched for m in found], build, wall, cpu)
    )

    print(f"candidates: {len(texts):,} texts, {mb:.1f} MB (GSM8K train x{len(texts) // 7473}); ", end="")
    print(f"index: {', '.join(args.benchmarks)} ({len(index):,} distinct {args.n}-grams); one core\n")
    print(
        "| method | index build CPU s | scan CPU s | MB/s per CPU s | MB/s wall | matched windows | contaminated texts |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, counts, build, wall, cpu in rows:
        dirty = sum(c > 0 for c in counts)
        print(
            f"| {label} | {build:.2f} | {cpu:.2f} | {mb / cpu:.1f} | {mb / wall:.1f} | {sum(counts):,} | {dirty:,} |"
        )
    agree = rows[0][1] == rows[1][1]
    print(f"\nspeed-up (CPU time, baseline / this): {rows[1][4] / rows[0][4]:.1f}x; ", end="")
    print(f"per-text {args.n}-gram hit counts agree: {agree}")
    if not agree:
        raise SystemExit("numpy index and baseline disagree")


if __name__ == "__main__":
    main()
