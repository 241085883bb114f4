"""Near-duplicate detection: ours vs datasketch and rensa on one planted GSM8K corpus.

    taskset -c 0 .venv/bin/python benchmarks/minhash.py --n 20000 --threshold 0.8

(the script also pins itself to one core with ``os.sched_setaffinity``). Every method runs
end to end on the same texts, from raw strings to duplicate pairs: tokenising and shingling
included. The anchors tokenise with :func:`distillery.text.words` and hash word 5-gram
strings, the way one uses them; they get the same bands x rows as ours (and datasketch
also its own default choice), and report their LSH candidates (no exact check).

Quality is measured against the exact Jaccard of shingle sets (``benchmarks/corpus.py``):

- all pairs: precision and recall of the reported pairs ``(i, j)`` against every pair with
  ``J >= threshold``;
- streaming (ours, stage semantics): a document should be rejected iff it has
  ``J >= threshold`` with an earlier kept document; precision and recall of the rejections.

Speed is documents per second of CPU time (``time.process_time``, robust on a shared
machine) and of wall time, best of ``--repeat`` runs for ours, one run for the anchors.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import Benchmark, build  # noqa: E402
from distillery.dedup.lsh import optimal_params  # noqa: E402
from distillery.dedup.neardup import NearDuplicateIndex  # noqa: E402
from distillery.dedup.signatures import MinHasher  # noqa: E402
from distillery.text import words  # noqa: E402

Pairs = set[tuple[int, int]]


def string_shingles(text: str, n: int) -> list[str]:
    """Word n-gram strings of ``text`` (what the anchors hash), same fallback as ours."""
    w = words(text)
    if len(w) < n:
        return [" ".join(w)] if w else []
    return [" ".join(w[i : i + n]) for i in range(len(w) - n + 1)]


def timed(fn: Callable[[], object], repeat: int) -> tuple[object, float, float]:
    """``(result, best cpu seconds, best wall seconds)`` of ``repeat`` calls."""
    best_cpu = best_wall = float("inf")
    result = None
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        result = fn()
        best_cpu = min(best_cpu, time.process_time() - c)
        best_wall = min(best_wall, time.perf_counter() - w)
    return result, best_cpu, best_wall


def ours_pairs(texts: list[str], args: argparse.Namespace, verify: bool = True) -> Pairs:
    index = NearDuplicateIndex(args.threshold, args.num_perm, args.ngram, verify_jaccard=verify)
    clusters = index.cluster(texts)
    return set(zip(clusters.left.tolist(), clusters.right.tolist(), strict=True))


def datasketch_pairs(texts: list[str], args: argparse.Namespace, params: tuple[int, int] | None) -> Pairs:
    from datasketch import MinHash, MinHashLSH

    shingles = [[s.encode() for s in string_shingles(t, args.ngram)] for t in texts]
    sketches = MinHash.bulk(shingles, num_perm=args.num_perm, seed=1)
    lsh = MinHashLSH(threshold=args.threshold, num_perm=args.num_perm, params=params)
    with lsh.insertion_session() as session:
        for i, m in enumerate(sketches):
            session.insert(i, m)
    return {(min(i, j), max(i, j)) for i, m in enumerate(sketches) for j in lsh.query(m) if j != i}


def rensa_pairs(texts: list[str], args: argparse.Namespace, bands: int, rows: int) -> Pairs:
    from rensa import RMinHash, RMinHashLSH

    # rensa needs num_perm = bands * rows exactly (ours uses the first b * r of its values)
    sketches = RMinHash.from_token_sets([string_shingles(t, args.ngram) for t in texts], bands * rows, 1)
    lsh = RMinHashLSH(args.threshold, bands * rows, bands)
    lsh.insert_many(sketches, 0)
    return {(min(i, j), max(i, j)) for i, hits in enumerate(lsh.query_all(sketches)) for j in hits if j != i}


def precision_recall(found: Pairs, truth: Pairs) -> tuple[float, float]:
    hit = len(found & truth)
    return (hit / len(found) if found else 1.0), (hit / len(truth) if truth else 1.0)


def streaming_truth(n: int, truth: Pairs) -> set[int]:
    """Documents a perfect streaming deduplicator rejects (J >= t with an earlier kept one)."""
    earlier: dict[int, list[int]] = {}
    for i, j in truth:
        earlier.setdefault(j, []).append(i)
    rejected: set[int] = set()
    for j in range(n):
        if any(i not in rejected for i in earlier.get(j, ())):
            rejected.add(j)
    return rejected


def row(
    name: str, n: int, cpu: float, wall: float, pr: tuple[float, float], found: int, ours_cpu: float
) -> str:
    ratio = f"{cpu / ours_cpu:.2f}x"  # CPU seconds of this method / ours
    return f"| {name} | {n / cpu:,.0f} | {n / wall:,.0f} | {pr[0]:.4f} | {pr[1]:.4f} | {found} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20000, help="corpus size")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--ngram", type=int, default=5)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")
    parser.add_argument("--repeat", type=int, default=3, help="runs of ours (best is kept)")
    parser.add_argument("--batch", type=int, default=1000, help="streaming batch size")
    parser.add_argument("--skip-anchors", action="store_true")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    bench: Benchmark = build(args.n, args.threshold, args.ngram, args.seed)
    texts = bench.corpus.texts
    truth = set(bench.truth)
    n = len(texts)
    b, r = optimal_params(args.threshold, args.num_perm, 0.1, 0.9)
    b_ds, r_ds = optimal_params(args.threshold, args.num_perm, 0.5, 0.5)
    print(
        f"corpus: {n} texts, {sum(s is not None for s in bench.corpus.source)} planted copies, "
        f"{len(truth)} true pairs (J >= {args.threshold}); truth built in {bench.seconds:.1f} s; "
        f"cpu {os.sched_getaffinity(0) if hasattr(os, 'sched_getaffinity') else '?'}"
    )

    ours_pairs(texts[:500], args)  # warm-up (lazy imports, caches)
    found, cpu, wall = timed(lambda: ours_pairs(texts, args), args.repeat)
    ours_cpu = cpu
    pr = precision_recall(found, truth)
    lines = [row("ours (numpy MinHash-LSH + exact Jaccard)", n, cpu, wall, pr, len(found), cpu)]
    found, cpu, wall = timed(lambda: ours_pairs(texts, args, verify=False), args.repeat)
    pr = precision_recall(found, truth)
    lines.append(row("ours, estimate only (verify_jaccard=False)", n, cpu, wall, pr, len(found), ours_cpu))
    if not args.skip_anchors:
        for name, fn in [
            (f"datasketch 2.0 MinHash+MinHashLSH, {b}x{r}", lambda: datasketch_pairs(texts, args, (b, r))),
            (f"datasketch 2.0, its default {b_ds}x{r_ds}", lambda: datasketch_pairs(texts, args, None)),
            (f"rensa 0.5 RMinHash+RMinHashLSH, {b}x{r}", lambda: rensa_pairs(texts, args, b, r)),
        ]:
            found, cpu, wall = timed(fn, 1)
            lines.append(row(name, n, cpu, wall, precision_recall(found, truth), len(found), ours_cpu))
    print(
        f"\n### All pairs, threshold {args.threshold}, {args.num_perm} permutations, word {args.ngram}-grams\n"
    )
    print("| method | docs/s (CPU) | docs/s (wall) | precision | recall | pairs | CPU time vs ours |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(lines))

    # streaming (stage semantics): batches, each document against kept ones
    def stream() -> tuple[list, NearDuplicateIndex]:
        index = NearDuplicateIndex(args.threshold, args.num_perm, args.ngram)
        out: list = []
        for lo in range(0, n, args.batch):
            out += index.add(texts[lo : lo + args.batch], list(range(lo, min(lo + args.batch, n))))
        return out, index

    (matches, index), cpu, wall = timed(stream, args.repeat)
    flagged = {j for j, m in enumerate(matches) if m is not None}
    wrong = sum((m.duplicate_of, j) not in truth for j, m in enumerate(matches) if m is not None)
    should = streaming_truth(n, truth)
    hit = len(flagged & should)
    print(f"\n### Streaming (`NearDuplicateIndex.add`, batches of {args.batch}; the stage's semantics)\n")
    print("| method | docs/s (CPU) | docs/s (wall) | precision | recall | rejected | kept | bytes/kept doc |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| ours, streaming | {n / cpu:,.0f} | {n / wall:,.0f} | {hit / max(len(flagged), 1):.4f} | "
        f"{hit / max(len(should), 1):.4f} | {len(flagged)} | {len(index)} | {index.memory_bytes() / len(index):,.0f} |"
    )
    if wrong:
        print(f"({wrong} rejections name a partner below the threshold)")

    # MinHash kernels alone, same shingle hashes, same k
    sketch = index.sketch(texts)
    hasher = MinHasher(args.num_perm, 1)
    _, cpu_ours, _ = timed(lambda: hasher.signatures(sketch.shingles), args.repeat)
    line = f"\nMinHash kernel alone on the same {len(sketch.shingles.hashes):,} shingle hashes: ours {n / cpu_ours:,.0f} docs/s"
    if not args.skip_anchors:
        from rensa import RMinHash

        offsets = sketch.shingles.offsets.astype(np.uint64)
        _, cpu_r, _ = timed(
            lambda: RMinHash.digest_matrix_from_flat_token_hashes(
                sketch.shingles.hashes, offsets, args.num_perm, 1
            ),
            args.repeat,
        )
        line += f", rensa digest_matrix_from_flat_token_hashes {n / cpu_r:,.0f} docs/s"
    print(line)
    print(
        f"bands x rows: ours {b}x{r} (weights fp 0.1 / fn 0.9); datasketch default {b_ds}x{r_ds} (0.5 / 0.5)"
    )


if __name__ == "__main__":
    main()
