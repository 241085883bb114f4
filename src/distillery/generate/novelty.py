"""ROUGE-L novelty against a growing pool of instructions, fast enough for a pool of 50k.

Self-Instruct (Wang et al., 2022, "Self-Instruct: Aligning Language Models with
Self-Generated Instructions", section 2.3) keeps a new instruction only when its ROUGE-L with
every instruction already in the task pool is below 0.7. Scoring every pool item with the
``rouge-score`` scorer costs a full LCS table per pair: seconds per check at 50k items.
:class:`NoveltyIndex` gives the same verdicts while scoring only the few pool items that could
reach the threshold.

How it prunes (everything on the tokens of ``rouge_score``'s default tokenizer, so the scores
are the library's):

- ROUGE-L F1 of token sequences ``a``, ``b`` is ``2 * lcs / (|a| + |b|)`` and ``lcs`` is at most
  ``min(|a|, |b|)`` and at most the size of their multiset intersection.
- So a pool item can reach threshold ``t`` only if it shares at least ``m`` tokens (counted with
  multiplicity) with the query, where ``m`` is the least overlap any admissible length allows
  (``ceil(t/2 * |a| / (1 - t/2))``, about ``0.54 |a|`` at ``t = 0.7``).
- Prefix filter: an item that shares ``m`` of the query's ``|a|`` token occurrences shares at
  least one of any ``|a| - m + 1`` of them. The index keeps an inverted list from each token
  occurrence (``(token, k)``: "has the token at least ``k + 1`` times") to the pool items, and
  probes only the lists of the query's ``|a| - m + 1`` *rarest* occurrences — common words like
  "the" are never scanned.
- Each candidate's overlap is at most the probed occurrences it shares plus the ones not
  probed; candidates whose bound ``2 min(|a|, |b|, overlap) / (|a|+|b|)`` is below ``t`` are
  dropped (the length bound is part of it), and the rest scored exactly: a bit-parallel LCS (Hyyrö, 2004) with ``rouge_score``'s precision/recall/F
  arithmetic, so the value equals ``RougeScorer(["rougeL"]).score`` to the last bit.

Every step is a bound, never a guess: :meth:`NoveltyIndex.nearest` finds a pool item at
ROUGE-L >= ``threshold`` exactly when brute force does, and then reports its exact score.
``benchmarks/rouge_novelty.py`` measures both side by side.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_EPS = 1e-9  # slack on every bound: pruning is conservative against floating-point rounding


def tokenize(text: str) -> list[str]:
    """``text`` as ROUGE tokens: ``rouge_score``'s default tokenizer without stemming
    (lower-cased runs of ``[a-z0-9]``; other characters separate tokens)."""
    return _rouge()[0](text or "")


@functools.cache
def _rouge() -> tuple[Callable[[str], list[str]], Callable[[float, float], float]]:
    """rouge-score's tokenizer and F-measure, imported on first use (the import takes seconds:
    it loads nltk), so that importing a strategy module stays cheap."""
    from rouge_score import scoring, tokenizers

    return tokenizers.DefaultTokenizer(use_stemmer=False).tokenize, scoring.fmeasure


def lcs_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b`` (any hashable items).

    Bit-parallel (Hyyrö, 2004): one big-integer update per item of ``b``, O(|b|) word
    operations on |a|-bit integers instead of an |a| x |b| table.
    """
    return _lcs_with_masks(_masks(a), len(a), b)


def _masks(a: Sequence[Any]) -> dict[Any, int]:
    masks: dict[Any, int] = {}
    bit = 1
    for x in a:
        masks[x] = masks.get(x, 0) | bit
        bit <<= 1
    return masks


def _lcs_with_masks(masks: dict[Any, int], n: int, b: Sequence[Any]) -> int:
    if n == 0 or not b:
        return 0
    full = (1 << n) - 1
    v = full
    for y in b:
        m = masks.get(y)
        if m is None:
            continue
        u = v & m
        v = ((v + u) | (v - u)) & full
    return n - v.bit_count()


def f_measure(lcs: int, target_len: int, prediction_len: int) -> float:
    """ROUGE-L F1 from an LCS length, computed as ``rouge_score`` does (same operations, same
    rounding); 0.0 when either side has no tokens."""
    if not target_len or not prediction_len:
        return 0.0
    precision = lcs / prediction_len
    recall = lcs / target_len
    return _rouge()[1](precision, recall)


def rouge_l(target: str, prediction: str) -> float:
    """Pairwise ROUGE-L F1 of two texts on rouge-score's tokens (no stemming); equals
    ``RougeScorer(["rougeL"]).score(target, prediction)["rougeL"].fmeasure`` (0.0 when either
    has no token). Chan et al.'s strategies score generated questions with it."""
    a, b = tokenize(target), tokenize(prediction)
    return f_measure(lcs_length(a, b), len(a), len(b))


def min_overlap(n: int, threshold: float) -> int:
    """The fewest shared token occurrences with which a pool item of any length can reach
    ROUGE-L ``threshold`` against a query of ``n`` tokens (at least 1)."""
    c = (threshold - _EPS) / 2  # need lcs >= c * (n + m) for a pool item of m tokens, and lcs <= m
    m = 1
    while True:
        need = max(1, math.ceil(c * (n + m) - _EPS))
        if need <= min(n, m):
            return need
        m += 1


@dataclass
class Match:
    """The closest pool item :meth:`NoveltyIndex.nearest` found.

    Attributes:
        score: its ROUGE-L F1 with the query. Exact whenever it is >= the index's threshold;
            below it, the best among the items that could have reached the threshold (a lower
            bound of the true maximum, which is below the threshold as well); 0.0 if none.
        position: its position in the pool (``None`` when nothing was scored).
        key: the key it was added with. text: its text.
        candidates: pool items found by the prefix filter; scored: those scored exactly.
    """

    score: float = 0.0
    position: int | None = None
    key: Any = None
    text: str | None = None
    candidates: int = 0
    scored: int = 0


class NoveltyIndex:
    """A pool of texts with a fast "is anything in the pool at ROUGE-L >= threshold?" query.

    Args:
        threshold: ROUGE-L F1 at or above which two texts count as the same task, in (0, 1]
            (Self-Instruct: 0.7).

    Raises:
        ValueError: ``threshold`` is not in (0, 1].

    Memory: each pool item's token ids plus one inverted-list entry per token occurrence
    (about 15 per instruction).
    """

    def __init__(self, threshold: float = 0.7) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self._vocab: dict[str, int] = {}
        self._tokens: list[list[int]] = []
        self._texts: list[str] = []
        self._keys: list[Any] = []
        self._postings: dict[tuple[int, int], list[int]] = {}

    def __len__(self) -> int:
        return len(self._texts)

    def texts(self) -> list[str]:
        """The pool's texts, in the order added."""
        return list(self._texts)

    def _ids(self, text: str, grow: bool) -> list[int]:
        out = []
        for tok in tokenize(text):
            i = self._vocab.get(tok)
            if i is None:
                if not grow:
                    i = -1 - len(out)  # unseen in the pool: matches nothing, distinct from each other
                else:
                    i = self._vocab[tok] = len(self._vocab)
            out.append(i)
        return out

    def add(self, text: str, key: Any = None) -> int:
        """Add ``text`` (with an optional ``key`` returned by matches); return its position."""
        pos = len(self._texts)
        ids = self._ids(text, grow=True)
        self._tokens.append(ids)
        self._texts.append(text)
        self._keys.append(key)
        seen: dict[int, int] = {}
        for i in ids:
            k = seen.get(i, 0)
            seen[i] = k + 1
            self._postings.setdefault((i, k), []).append(pos)
        return pos

    def nearest(self, text: str) -> Match:
        """The pool item most similar to ``text`` among those that could reach the threshold
        (see :class:`Match` for what the score means below the threshold)."""
        q = self._ids(text, grow=False)
        n = len(q)
        if n == 0 or not self._texts:
            return Match()
        occurrences: list[tuple[int, int]] = []
        seen: dict[int, int] = {}
        for i in q:
            k = seen.get(i, 0)
            seen[i] = k + 1
            occurrences.append((i, k))
        occurrences.sort(key=lambda e: len(self._postings.get(e, ())))
        prefix = occurrences[: n - min_overlap(n, self.threshold) + 1]
        rest = n - len(prefix)  # occurrences not probed: each may or may not be shared
        shared: Counter[int] = Counter()
        for e in prefix:
            shared.update(self._postings.get(e, ()))
        masks = _masks(q)
        best = Match(candidates=len(shared))
        bound = self.threshold - _EPS
        tokens = self._tokens
        for pos, count in shared.items():
            toks = tokens[pos]
            m = len(toks)
            # lcs <= min(n, m) and lcs <= shared occurrences <= (shared among the probed) + rest
            if 2 * min(n, m, count + rest) / (n + m) < bound:
                continue
            best.scored += 1
            score = f_measure(_lcs_with_masks(masks, n, toks), m, n)
            if score > best.score or (score == best.score and best.position is not None and pos < best.position):
                best.score, best.position = score, pos  # ties: the earliest pool item
        if best.position is not None:
            best.key, best.text = self._keys[best.position], self._texts[best.position]
        return best

    def is_novel(self, text: str) -> bool:
        """Whether every pool item's ROUGE-L with ``text`` is below the threshold."""
        return self.nearest(text).score < self.threshold

    def brute_force(self, text: str) -> Match:
        """The exact most similar pool item, scoring every item (for tests and benchmarks)."""
        q = self._ids(text, grow=False)
        masks = _masks(q)
        best = Match(candidates=len(self._texts), scored=len(self._texts))
        for pos, toks in enumerate(self._tokens):
            score = f_measure(_lcs_with_masks(masks, len(q), toks), len(toks), len(q))
            if score > best.score:
                best.score, best.position = score, pos
        if best.position is not None:
            best.key, best.text = self._keys[best.position], self._texts[best.position]
        return best
