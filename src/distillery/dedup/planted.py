"""Corpora with planted near duplicates, and exact ground truth for them.

Used to measure near-duplicate detectors (``tests/test_minhash.py``,
``benchmarks/minhash.py``): real texts are copied with word edits (substitutions, deletions,
insertions, swaps of neighbours) chosen to land the copy at a target Jaccard similarity to
its source, spread over a range around the threshold, plus formatting-only noise (case,
spacing) that leaves the words unchanged. The ground truth is not the target but the exact
Jaccard similarity of word n-gram shingle sets of every pair of the corpus, found with the
prefix-filtering similarity join (Chaudhuri, Ganti & Kaushik, ICDE 2006; Bayardo, Ma &
Srikant, "Scaling up all pairs similarity search", WWW 2007) and checked with Python sets,
so it is independent of the hashing code under test.

The package never reads data files: callers pass the source texts.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from distillery.text import normalize, word_spans, words


def shingle_set(text: str, ngram: int = 5) -> set[str]:
    """Reference shingle set of ``text``: its word ``ngram``-grams, words joined by a space.

    (Words never contain spaces, so the join is one-to-one; strings cache their hash, which
    makes the set operations of :func:`similar_pairs` several times faster than tuples.)
    A text of ``1 <= m < ngram`` words has the one shingle of all its words; an empty text
    has none (the convention of :mod:`distillery.dedup.shingles`).
    """
    w = words(text)
    if len(w) < ngram:
        return {" ".join(w)} if w else set()
    return {" ".join(w[i : i + ngram]) for i in range(len(w) - ngram + 1)}


def jaccard(a: set, b: set) -> float:
    """``|a & b| / |a | b|``; 1.0 for two empty sets."""
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def similar_pairs(sets: Sequence[set], threshold: float) -> dict[tuple[int, int], float]:
    """Every pair ``(i, j)``, ``i < j``, of ``sets`` with Jaccard similarity ``>= threshold``.

    Exact (prefix filtering only prunes pairs that cannot reach the threshold): with tokens
    in one global order (rarest first), two sets with ``J >= t`` share a token among the
    first ``|A| - ceil(t |A|) + 1`` of each. Cost grows with the number of pairs sharing a
    rare token, not with ``len(sets) ** 2``.

    Args:
        sets: shingle sets.
        threshold: ``t`` in ``(0, 1]``.

    Returns:
        ``{(i, j): J}``.
    """
    ids: dict = {}
    as_ids = [[ids.setdefault(tok, len(ids)) for tok in s] for s in sets]
    freq = Counter(t for s in as_ids for t in s)
    # global order: rarest first, ties by first appearance
    by_rank = sorted(range(len(ids)), key=lambda t: (freq[t], t))
    rank = [0] * len(ids)
    for r, t in enumerate(by_rank):
        rank[t] = r
    index: dict[int, list[int]] = defaultdict(list)
    out: dict[tuple[int, int], float] = {}
    empty: list[int] = []
    for j, s in enumerate(sets):
        if not s:
            out.update({(i, j): 1.0 for i in empty})
            empty.append(j)
            continue
        ordered = sorted(rank[t] for t in as_ids[j])
        prefix = ordered[: len(s) - math.ceil(threshold * len(s) - 1e-9) + 1]
        seen = set()
        for r in prefix:
            for i in index[r]:
                if i not in seen:
                    seen.add(i)
                    sim = jaccard(sets[i], s)
                    if sim >= threshold:
                        out[(i, j)] = sim
            index[r].append(j)
    return dict(sorted(out.items()))


@dataclass
class PlantedCorpus:
    """A corpus of source texts and edited copies.

    Attributes:
        texts: the corpus, shuffled.
        source: for each text, the position in ``texts`` of the text it was copied from
            (``None`` for an original).
        target: for each copy, the Jaccard similarity its edits aimed at (``None`` for an
            original); the achieved similarity is what :func:`similar_pairs` finds.
    """

    texts: list[str]
    source: list[int | None]
    target: list[float | None]


def _edit(text: str, target: float, ngram: int, vocab: list[str], rng: random.Random) -> str:
    """``text`` with about enough word edits to bring its shingle Jaccard to ``target``."""
    if len(normalize(text)) != len(text):
        text = normalize(text)  # spans index the normalised text then
    toks, spans = word_spans(text)
    n_shingles = max(len(toks) - ngram + 1, 1)
    # one isolated edit removes about ngram shingles and adds as many:
    # J = (N - n e) / (N + n e)  =>  e = N (1 - J) / (n (1 + J))
    edits = round(n_shingles * (1 - target) / (ngram * (1 + target)) + rng.uniform(-0.5, 0.5))
    edits = min(max(edits, 0), len(toks))
    pieces = list(text)  # edit by character spans, right to left so offsets stay valid
    chosen = set(rng.sample(range(len(toks)), edits))
    for k in sorted(chosen, reverse=True):
        s, e = spans[k]
        op = rng.random()
        if op < 0.5:  # substitute
            pieces[s:e] = list(rng.choice(vocab))
        elif op < 0.7:  # delete the word and the blank after it
            end = e + 1 if e < len(pieces) and pieces[e] == " " else e
            pieces[s:end] = []
        elif op < 0.9 or k + 1 >= len(toks) or k + 1 in chosen:  # insert a word after it
            pieces[e:e] = list(" " + rng.choice(vocab))
        else:  # swap with the next word
            s2, e2 = spans[k + 1]
            pieces[s:e2] = pieces[s2:e2] + pieces[e:s2] + pieces[s:e]
    out = "".join(pieces)
    # formatting noise that tokenisation removes: case of a word, doubled blank
    if rng.random() < 0.5:
        out = out.upper() if rng.random() < 0.1 else out.replace(" ", "  ", 1)
    return out


def plant_near_duplicates(
    base_texts: Sequence[str],
    n_docs: int,
    *,
    ngram: int = 5,
    duplicate_fraction: float = 0.5,
    similarity: tuple[float, float] = (0.5, 1.0),
    chain_probability: float = 0.2,
    seed: int = 0,
) -> PlantedCorpus:
    """Build a shuffled corpus of ``n_docs`` texts with planted near duplicates.

    Args:
        base_texts: distinct source texts (e.g. GSM8K question + answer).
        n_docs: corpus size.
        ngram: shingle size the edit counts are planned for.
        duplicate_fraction: share of copies in the corpus (raised when ``base_texts`` is
            too small to fill the rest with originals).
        similarity: range of target Jaccard similarities, drawn uniformly.
        chain_probability: chance that a copy is made from an earlier copy rather than an
            original (near-duplicate chains, which test transitivity).
        seed: random seed; equal arguments give the same corpus.

    Raises:
        ValueError: ``base_texts`` is empty or ``n_docs < 1``.
    """
    if not base_texts or n_docs < 1:
        raise ValueError("need at least one base text and n_docs >= 1")
    rng = random.Random(seed)
    n_copies = max(round(n_docs * duplicate_fraction), n_docs - len(base_texts))
    n_base = max(n_docs - n_copies, 1)
    n_copies = n_docs - n_base
    originals = rng.sample(list(base_texts), n_base)
    vocab = sorted({w for t in originals[:2000] for w in t.split() if w.isalpha()}) or ["word"]
    texts = list(originals)
    source: list[int | None] = [None] * n_base
    target: list[float | None] = [None] * n_base
    for _ in range(n_copies):
        src = rng.randrange(len(texts)) if rng.random() < chain_probability else rng.randrange(n_base)
        goal = rng.uniform(*similarity)
        texts.append(_edit(texts[src], goal, ngram, vocab, rng))
        source.append(src)
        target.append(goal)
    order = list(range(n_docs))
    rng.shuffle(order)
    where = {old: new for new, old in enumerate(order)}
    return PlantedCorpus(
        [texts[o] for o in order],
        [None if source[o] is None else where[source[o]] for o in order],
        [target[o] for o in order],
    )
