"""Shared text normalisation for every stage that compares texts.

Decontamination, deduplication and the built-in task generator must agree on what a
"word" is, otherwise a check made at generation time (train never overlaps test) would
not be the check the pipeline makes later. This module is that single definition.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence

_WORD = re.compile(r"\w+")


def normalize(text: str) -> str:
    """Lower-case and NFKC-normalise ``text`` (unicode case-folding, width forms unified).

    Returns a new string; whitespace and punctuation are kept.
    """
    return unicodedata.normalize("NFKC", text).lower()


def words(text: str) -> list[str]:
    """Split ``text`` into normalised words: maximal runs of unicode word characters.

    ``"The answer is 3.5!"`` -> ``["the", "answer", "is", "3", "5"]``. Punctuation and
    whitespace separate words and are dropped, which makes n-gram matching insensitive to
    formatting (the convention of the GPT-3 and Llama decontamination analyses).
    """
    return _WORD.findall(normalize(text))


def word_spans(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Words of ``text`` (as :func:`words`) with their ``(start, end)`` character offsets.

    Offsets index the original ``text`` when NFKC normalisation does not change its length
    (true for ASCII and most text); otherwise they index the normalised text.
    """
    norm = normalize(text)
    out_words: list[str] = []
    spans: list[tuple[int, int]] = []
    for m in _WORD.finditer(norm):
        out_words.append(m.group())
        spans.append(m.span())
    return out_words, spans


def word_ngrams(tokens: Sequence[str], n: int) -> Iterator[tuple[str, ...]]:
    """Yield the contiguous n-grams of ``tokens`` as tuples; none when ``len(tokens) < n``."""
    for i in range(len(tokens) - n + 1):
        yield tuple(tokens[i : i + n])
