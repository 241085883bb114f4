"""The plain-Python baseline: a set of word-tuple n-grams (the reference the fast index must agree with).

Same definitions as :class:`distillery.decontaminate.index.NgramIndex` (words and n-grams
of :mod:`distillery.text`; a benchmark text shorter than ``n`` words is one whole-text
n-gram), without hashing or numpy. Used by the tests and by ``benchmarks/decontaminate.py``.
"""

from __future__ import annotations

from distillery.text import word_ngrams, words


class SetNgramIndex:
    """A Python ``set`` of benchmark word n-grams; candidates' n-gram tuples are looked up one by one.

    Args:
        n: n-gram length in words.
    """

    def __init__(self, n: int = 13) -> None:
        self.n = n
        self.grams: set[tuple[str, ...]] = set()
        self.lengths: set[int] = set()

    def add(self, text: str) -> None:
        """Index the n-grams of one benchmark text (the whole text if shorter than ``n`` words)."""
        ws = words(text)
        if len(ws) >= self.n:
            self.grams.update(word_ngrams(ws, self.n))
            self.lengths.add(self.n)
        elif ws:
            self.grams.add(tuple(ws))
            self.lengths.add(len(ws))

    def matched(self, text: str) -> int:
        """Number of windows (position, length) of ``text`` whose word tuple is indexed."""
        ws = words(text)
        grams = self.grams
        return sum(1 for length in self.lengths for g in word_ngrams(ws, length) if g in grams)
