"""Semantic deduplication: the streaming stage and offline SemDeDup vs brute-force baselines.

    .venv/bin/python benchmarks/semantic_dedup.py --n 5000 --threshold 0.95

Corpus: the first ``n`` GSM8K train questions, of which ``--planted`` (default 5%) are
replaced by reworded copies of earlier questions ("Question: " prefix, lower case,
"How many" -> "What is the number of", "bought" -> "purchased"; cosine 0.95-0.996 with
all-MiniLM-L6-v2), so every method has duplicates to find.

Every text is embedded once, inside the streaming stage (``SemanticDedup.apply`` then
``commit`` on batches of ``--batch`` records, exactly as the runner calls it); the encoder
calls are timed, and the other methods reuse those embeddings. Reported per method:
documents per second with the embedding time added (end to end) and without it (the
deduplication itself), and the duplicates found, which must agree at the same threshold:

- streaming stage (greedy keep-first against kept records) == brute force greedy: the full
  ``n x n`` numpy similarity matrix, then the same greedy rule;
- offline SemDeDup (faiss spherical k-means, then pairs within the 2 nearest clusters, or
  within the own cluster only as in the paper; ``keep="first"``) == brute force paper rule
  (``max_{i<j} cos(i, j) >= t`` over the full matrix) == sentence-transformers
  ``util.paraphrase_mining_embeddings`` (its pairs >= t, counted with the same rule). A
  difference is a pair split across k-means clusters.

Pinned to ``--threads`` cores (torch, faiss and BLAS threads; ``os.sched_setaffinity``).
Timings are wall seconds of one run; CPU seconds are shown for the embedding.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--n", type=int, default=5000, help="corpus size (GSM8K train questions)")
ap.add_argument("--threshold", type=float, default=0.95, help="cosine similarity of duplicates (1 - eps)")
ap.add_argument("--planted", type=float, default=0.05, help="fraction of texts replaced by reworded copies")
ap.add_argument("--batch", type=int, default=1000, help="records per stage batch")
ap.add_argument("--threads", type=int, default=1, help="cores used")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--data", default=os.environ.get("DISTILLERY_DATA", "/work/shared/data"))
ARGS = ap.parse_args()
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: ARGS.threads])

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from distillery.dedup.embed import load_embedding_model  # noqa: E402
from distillery.dedup.semantic import SemanticDedup, SemanticDedupConfig, semdedup  # noqa: E402
from distillery.records import new_record  # noqa: E402

torch.set_num_threads(ARGS.threads)
faiss.omp_set_num_threads(ARGS.threads)


def reword(question: str) -> str:
    q = question.replace("How many", "What is the number of").replace("how many", "what number of")
    return "Question: " + re.sub(r"\bbought\b", "purchased", q).lower()


def build_corpus(n: int, planted: float, seed: int) -> tuple[list[str], dict[int, int]]:
    """``n`` texts and ``{copy position: original position}`` of the planted rewordings."""
    with (Path(ARGS.data) / "gsm8k" / "train.jsonl").open() as f:
        texts = [json.loads(line)["question"] for _, line in zip(range(n), f, strict=False)]
    rng = np.random.default_rng(seed)
    copies = np.sort(rng.choice(np.arange(n // 10, n), size=int(planted * n), replace=False))
    origin: dict[int, int] = {}
    for pos in copies.tolist():
        src = int(rng.integers(0, pos))
        while src in origin:  # reword an original, not a copy
            src = origin[src]
        texts[pos] = reword(texts[src])
        origin[pos] = src
    return texts, origin


class TimedModel:
    """Forwards ``encode`` to the real model, timing the calls and keeping their outputs in order."""

    def __init__(self, model: object) -> None:
        self.model, self.wall, self.cpu, self.outputs = model, 0.0, 0.0, []

    def encode(self, texts: list[str], **kwargs: object) -> np.ndarray:
        w, c = time.perf_counter(), time.process_time()
        out = self.model.encode(texts, **kwargs)
        self.wall += time.perf_counter() - w
        self.cpu += time.process_time() - c
        self.outputs.append(out)
        return out

    def get_embedding_dimension(self) -> int:
        return self.model.get_embedding_dimension()


def _earlier_similarities(x: np.ndarray) -> np.ndarray:
    """The full ``n x n`` cosine matrix with ``sim[i, j] = -inf`` unless ``i < j``."""
    sim = x @ x.T
    sim[np.tri(len(x), dtype=bool)] = -np.inf
    return sim


def greedy_brute(x: np.ndarray, t: float) -> np.ndarray:
    """Rejected mask: ``j`` is rejected when ``cos(i, j) >= t`` for a kept ``i < j`` (full matrix)."""
    i, j = np.nonzero(_earlier_similarities(x) >= t)
    rejected = np.zeros(len(x), dtype=bool)
    for a, b in sorted(zip(j.tolist(), i.tolist(), strict=True)):  # by later document
        if not rejected[b]:
            rejected[a] = True
    return rejected


def paper_brute(x: np.ndarray, t: float) -> np.ndarray:
    """Removed mask of SemDeDup without clustering: ``max_{i<j} cos(i, j) >= t``."""
    return _earlier_similarities(x).max(axis=0) >= t


def paraphrase_mining(x: np.ndarray, t: float) -> np.ndarray:
    """Removed mask from sentence-transformers' paraphrase mining pairs (``j`` has an earlier partner >= t)."""
    from sentence_transformers.util import paraphrase_mining_embeddings

    pairs = paraphrase_mining_embeddings(torch.from_numpy(x), top_k=10, max_pairs=10**7)
    removed = np.zeros(len(x), dtype=bool)
    for score, i, j in pairs:
        if score >= t:
            removed[max(i, j)] = True
    return removed


def timed(fn, *args):  # noqa: ANN001, ANN202
    w = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - w


def main() -> None:
    n, t = ARGS.n, ARGS.threshold
    texts, origin = build_corpus(n, ARGS.planted, ARGS.seed)
    w = time.perf_counter()
    model = load_embedding_model()
    load_s = time.perf_counter() - w
    timed_model = TimedModel(model)
    stage = SemanticDedup(SemanticDedupConfig(threshold=t, fields=["response"]), timed_model)
    records = [new_record(id=f"q{i}", response=text) for i, text in enumerate(texts)]
    w = time.perf_counter()
    for lo in range(0, n, ARGS.batch):
        batch = records[lo : lo + ARGS.batch]
        stage.commit(stage.apply(batch))  # commit reuses the batch's embeddings: one encode per batch
    stage_s = time.perf_counter() - w
    embed_s = timed_model.wall
    x = np.vstack(timed_model.outputs).astype(np.float32)
    assert len(x) == n
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)  # as distillery.dedup.embed.embed does
    stage_rejected = np.array([not r["accepted"] for r in records])

    greedy, greedy_s = timed(greedy_brute, x, t)
    result, kmeans_s = timed(lambda: semdedup(x, threshold=t, keep="first", probes=2, seed=ARGS.seed))
    result1, kmeans1_s = timed(lambda: semdedup(x, threshold=t, keep="first", probes=1, seed=ARGS.seed))
    paper, paper_s = timed(paper_brute, x, t)
    mining, mining_s = timed(paraphrase_mining, x, t)
    planted = np.zeros(n, dtype=bool)
    planted[list(origin)] = True

    print(f"## Semantic dedup on {n} GSM8K questions ({planted.sum()} planted rewordings), threshold {t}\n")
    print(
        f"all-MiniLM-L6-v2 (packaged), {ARGS.threads} thread(s); model load {load_s:.1f} s; embedding "
        f"{embed_s:.1f} s wall, {timed_model.cpu:.1f} s CPU = {n / embed_s:.0f} docs/s; stage batches of {ARGS.batch}; "
        f"k-means k = {result.n_clusters}.\n"
    )
    dedup_only = stage_s - embed_s
    rows = [
        ("streaming stage (IndexFlatIP, greedy)", dedup_only, stage_rejected, "brute force greedy"),
        ("brute force greedy (numpy n x n)", greedy_s, greedy, "-"),
        ("offline SemDeDup (k-means, 2 probes)", kmeans_s, ~result.keep, "brute force paper rule"),
        ("offline SemDeDup (k-means, 1 probe = paper)", kmeans1_s, ~result1.keep, "brute force paper rule"),
        ("brute force paper rule (numpy n x n)", paper_s, paper, "-"),
        ("sentence-transformers paraphrase_mining", mining_s, mining, "-"),
    ]
    reference = {"brute force greedy": greedy, "brute force paper rule": paper}
    print("| method | docs/s incl. embedding | docs/s dedup only | dedup seconds | duplicates | planted found | agrees with |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, seconds, found, ref in rows:
        agree = "-" if ref == "-" else f"{ref}: {'yes' if np.array_equal(found, reference[ref]) else 'NO'}"
        print(
            f"| {name} | {n / (embed_s + seconds):.0f} | {n / seconds:.0f} | {seconds:.3f} | {int(found.sum())} "
            f"| {int((found & planted).sum())}/{int(planted.sum())} | {agree} |"
        )
    print(
        f"\nRatios (dedup only): stage / brute-force greedy time = {dedup_only / greedy_s:.2f}; "
        f"k-means SemDeDup / brute-force paper rule time = {kmeans_s / paper_s:.2f}; "
        f"paraphrase_mining / k-means SemDeDup time = {mining_s / kmeans_s:.2f}."
    )
    kept = len(stage.index)
    print(
        f"Stage index: {kept} kept documents, {stage.index.memory_bytes()} bytes of embeddings "
        f"= {stage.index.memory_bytes() / kept:.0f} bytes per kept document."
    )
    extra = int((stage_rejected & ~planted).sum())
    print(f"Duplicates beyond the planted ones found by the stage: {extra} (natural near-identical GSM8K questions).")


if __name__ == "__main__":
    sys.exit(main())
