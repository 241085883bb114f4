"""GSM8K corpus with planted near duplicates, and its exact ground truth.

    python benchmarks/corpus.py --n 20000 --threshold 0.8

prints the corpus's make-up (how many copies, how the achieved similarities spread, how
many ground-truth pairs). The generator itself lives in :mod:`distillery.dedup.planted`;
this module only loads GSM8K (question + answer per text, train then test split) from
``/work/shared/data/gsm8k`` or ``$DISTILLERY_DATA/gsm8k``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distillery.dedup.planted import PlantedCorpus, plant_near_duplicates, shingle_set, similar_pairs

DATA = Path(os.environ.get("DISTILLERY_DATA", "/work/shared/data"))


def gsm8k_texts(splits: tuple[str, ...] = ("train", "test")) -> list[str]:
    """GSM8K texts, ``question + "\\n" + answer``, of ``splits`` in order (8792 for both).

    Raises:
        FileNotFoundError: the data is not there.
    """
    texts = []
    for split in splits:
        with open(DATA / "gsm8k" / f"{split}.jsonl", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                texts.append(row["question"] + "\n" + row["answer"])
    return texts


@dataclass
class Benchmark:
    """A planted corpus with its ground truth.

    Attributes:
        corpus: the texts and how they were made.
        truth: every pair ``(i, j)``, ``i < j``, with exact shingle Jaccard ``>= threshold``.
        threshold, ngram: what the truth was computed for.
        seconds: time to build the truth (not part of any measured method).
    """

    corpus: PlantedCorpus
    truth: dict[tuple[int, int], float]
    threshold: float
    ngram: int
    seconds: float


def build(n: int, threshold: float = 0.8, ngram: int = 5, seed: int = 0) -> Benchmark:
    """Plant near duplicates into ``n`` GSM8K-based texts and find the exact truth."""
    start = time.perf_counter()
    corpus = plant_near_duplicates(gsm8k_texts(), n, ngram=ngram, seed=seed)
    truth = similar_pairs([shingle_set(t, ngram) for t in corpus.texts], threshold)
    return Benchmark(corpus, truth, threshold, ngram, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--ngram", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bench = build(args.n, args.threshold, args.ngram, args.seed)
    corpus = bench.corpus
    copies = [i for i, s in enumerate(corpus.source) if s is not None]
    sets = {
        i: shingle_set(corpus.texts[i], args.ngram) for i in set(copies) | {corpus.source[i] for i in copies}
    }
    achieved = np.array(
        [len(sets[i] & sets[corpus.source[i]]) / len(sets[i] | sets[corpus.source[i]]) for i in copies]
    )
    n_words = np.array([len(sets[i]) + args.ngram - 1 for i in sets])
    print(f"{len(corpus.texts)} texts, {len(copies)} edited copies, ~{n_words.mean():.0f} words per text")
    edges = [0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    hist, _ = np.histogram(achieved, bins=edges)  # the last bin includes 1.0
    bins = [
        f"[{a:.1f},{b:.1f}{']' if b == 1.0 else ')'}: {h}"
        for a, b, h in zip(edges, edges[1:], hist, strict=False)
    ]
    print("copy-to-source Jaccard:", ", ".join(bins))
    print(
        f"{len(bench.truth)} ground-truth pairs with J >= {args.threshold} ({bench.seconds:.1f} s to build)"
    )


if __name__ == "__main__":
    main()
