"""Self-Instruct's ROUGE-L novelty check: brute force (rouge-score over every pool item) vs
:class:`distillery.generate.novelty.NoveltyIndex`, on the same synthetic pools and queries.

    taskset -c 0 .venv/bin/python benchmarks/rouge_novelty.py --n 1000 5000 50000 --queries 20

(the script also pins itself to one core with ``os.sched_setaffinity``). The pool is made of
synthetic instructions drawn from a word-bigram model of the 175 Self-Instruct seed
instructions (lengths drawn from theirs), so token frequencies and overlaps look like a real
task pool's. Queries are half fresh synthetic instructions (mostly novel: the whole pool must
be ruled out) and half pool items with one or two words dropped, swapped or added (near
copies: ROUGE-L around and above 0.7).

Each query runs both ways, interleaved (brute, index, then index, brute for the next query),
so load on a shared machine hits both alike. Brute force is what the Self-Instruct code does:
``RougeScorer(["rougeL"]).score(pool_item, query)`` for every pool item (tokenising both
texts each time), in one process. A check is one query against the whole pool. Speed is
checks per second of CPU time (``time.process_time``); agreement counts queries where both
give the same verdict (>= threshold or not) and, for the similar ones, the same score.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import defaultdict
from importlib import resources

from rouge_score import rouge_scorer

from distillery.generate.novelty import NoveltyIndex


def seed_instructions() -> list[str]:
    path = resources.files("distillery.generate") / "data" / "self_instruct" / "seed_tasks.jsonl"
    return [json.loads(line)["instruction"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Bigrams:
    """A word-bigram model of ``texts`` (sentence start/end markers), for synthetic instructions."""

    def __init__(self, texts: list[str]) -> None:
        self.next: dict[str, list[str]] = defaultdict(list)
        self.lengths = []
        for t in texts:
            words = t.split()
            self.lengths.append(len(words))
            for a, b in zip(["<s>", *words], [*words, "</s>"], strict=True):
                self.next[a].append(b)

    def sample(self, rng: random.Random) -> str:
        target = rng.choice(self.lengths)
        out, word = [], "<s>"
        while len(out) < max(4, target):
            word = rng.choice(self.next[word])
            if word == "</s>":
                word = "<s>"
                continue
            out.append(word)
        return " ".join(out)


def perturb(text: str, rng: random.Random, vocab: list[str]) -> str:
    words = text.split()
    for _ in range(rng.randint(1, 2)):
        i = rng.randrange(len(words))
        op = rng.choice(("drop", "swap", "add"))
        if op == "drop" and len(words) > 2:
            del words[i]
        elif op == "swap":
            words[i] = rng.choice(vocab)
        else:
            words.insert(i, rng.choice(vocab))
    return " ".join(words)


def run(n: int, queries: int, threshold: float, seed: int) -> dict:
    rng = random.Random(seed)
    model = Bigrams(seed_instructions())
    vocab = [w for w in model.next if w != "<s>"]
    pool: list[str] = []
    seen: set[str] = set()
    while len(pool) < n:
        t = model.sample(rng)
        if t not in seen:
            seen.add(t)
            pool.append(t)
    qs = [model.sample(rng) if i % 2 == 0 else perturb(rng.choice(pool), rng, vocab) for i in range(queries)]

    started = time.process_time()
    index = NoveltyIndex(threshold)
    for t in pool:
        index.add(t)
    build_s = time.process_time() - started
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)

    def brute(q: str) -> float:
        return max(scorer.score(p, q)["rougeL"].fmeasure for p in pool)

    t_brute = t_index = 0.0
    agree = similar = scored = 0
    for i, q in enumerate(qs):
        order = ("brute", "index") if i % 2 == 0 else ("index", "brute")
        for which in order:
            c = time.process_time()
            if which == "brute":
                best = brute(q)
                t_brute += time.process_time() - c
            else:
                match = index.nearest(q)
                t_index += time.process_time() - c
        scored += match.scored
        hit = best >= threshold
        similar += hit
        agree += (hit == (match.score >= threshold)) and (not hit or match.score == best)
    return {"n": n, "queries": queries, "similar": similar, "agree": agree, "build_s": build_s,
            "brute_per_s": queries / t_brute, "index_per_s": queries / t_index, "ratio": t_brute / t_index,
            "scored_per_query": scored / queries}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 5000, 50000], help="pool sizes")
    ap.add_argument("--queries", type=int, default=20, help="queries per pool size (half novel, half near copies)")
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    print(f"{'pool':>7} {'queries':>7} {'similar':>7} {'agree':>5} {'build s':>8} {'brute checks/s':>15} "
          f"{'index checks/s':>15} {'speed-up':>9} {'scored/query':>13}")
    for n in args.n:
        r = run(n, args.queries, args.threshold, args.seed)
        print(f"{r['n']:>7} {r['queries']:>7} {r['similar']:>7} {r['agree']:>5} {r['build_s']:>8.2f} "
              f"{r['brute_per_s']:>15.2f} {r['index_per_s']:>15.1f} {r['ratio']:>8.0f}x {r['scored_per_query']:>13.1f}",
              flush=True)


if __name__ == "__main__":
    main()
