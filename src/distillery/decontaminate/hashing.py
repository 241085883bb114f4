"""Vectorised word splitting and rolling window hashes (the fast path of the index).

Splitting and hashing millions of words one Python object at a time caps throughput near
10 MB/s, so the index never builds word objects for candidate text. A batch of texts is
normalised with :func:`distillery.text.normalize`, joined with ``"\\n"`` (never a word
character, so no word crosses two texts) and encoded to an array of code points. A
per-code-point table built with the regex that :func:`distillery.text.words` uses marks the
word characters, which gives the same words as ``words()`` without materialising them.

Hashes are polynomial hashes modulo 2**64 (Karp & Rabin, 1987), computed with numpy's
wrapping ``uint64`` arithmetic:

- a word character ``c`` gets a fixed random odd 64-bit value ``T[c]`` (tabulation;
  ``T[c] = 0`` marks the other characters);
- a word ``c_0..c_{k-1}`` hashes to ``sum_j T[c_j] * P_CHAR**j``;
- a window of ``L`` consecutive values ``v_i..v_{i+L-1}`` (word hashes for word n-grams,
  ``T[c]`` for character substrings) hashes to ``sum_j v_{i+j} * P**j``.

Every window hash of a stream comes from one prefix sum: with ``S_k = sum_{m<k} v_m P**m``,
``hash(i, L) = (S_{i+L} - S_i) * P**-i``, where ``P**-1`` exists because ``P`` is odd
(an odd number is a unit modulo 2**64). So the cost does not grow with ``L``.

Hashes are deterministic (a fixed seed, not Python's salted ``hash``) but may collide;
the index confirms every hash hit against the real words before reporting it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distillery.text import _WORD, normalize  # _WORD: the word regex itself, so both agree

P_CHAR = 0x9E3779B97F4A7C15  # odd multipliers (golden-ratio and murmur3 constants)
P_WORD = 0xC2B2AE3D27D4EB4F
_UNICODE_SIZE = 0x110000
_TABLE_SEED = 0x5EED_DEC0


@functools.cache
def word_char_table() -> np.ndarray:
    """Boolean array of shape ``(0x110000,)``: ``True`` where the code point is a word character.

    Built by running the word regex of :mod:`distillery.text` over every code point, so it
    cannot drift from :func:`distillery.text.words`.
    """
    every = "".join(map(chr, range(_UNICODE_SIZE)))
    table = np.zeros(_UNICODE_SIZE, dtype=bool)
    for m in _WORD.finditer(every):
        table[m.start() : m.end()] = True
    return table


@functools.cache
def char_values() -> np.ndarray:
    """``uint64`` array of shape ``(0x110000,)``: the random value ``T[c]`` of each code point.

    ``T[c]`` is odd (never 0) for a word character and 0 otherwise, so one gather gives both
    the values and the word mask (``T[codes] != 0``).
    """
    rng = np.random.default_rng(_TABLE_SEED)
    values = rng.integers(0, np.iinfo(np.uint64).max, size=_UNICODE_SIZE, dtype=np.uint64, endpoint=True)
    values |= np.uint64(1)
    values[~word_char_table()] = 0
    return values


_POWERS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def powers(p: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """``(P**k, P**-k)`` modulo 2**64 for ``k < m``, two ``uint64`` arrays of length ``m``.

    Cached per ``p`` and grown by doubling. Raises ``ValueError`` for an even ``p``.
    """
    if p % 2 == 0:
        raise ValueError("the multiplier must be odd to be invertible modulo 2**64")
    have = _POWERS.get(p)
    if have is None or len(have[0]) < m:
        size = max(m, 2 * len(have[0]) if have else 1024)
        fwd = np.empty(size, dtype=np.uint64)
        fwd[0] = 1
        np.cumprod(np.full(size - 1, p, dtype=np.uint64), out=fwd[1:])
        inv = np.empty(size, dtype=np.uint64)
        inv[0] = 1
        np.cumprod(np.full(size - 1, pow(p, -1, 1 << 64), dtype=np.uint64), out=inv[1:])
        have = _POWERS[p] = (fwd, inv)
    return have[0][:m], have[1][:m]


def prefix_sums(values: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Prefix sums ``S`` (length ``m + 1``, ``S_k = sum_{j<k} values[j] * p**j``) and ``p**-k`` (length ``m``).

    Shared by every window length over the same stream; see :func:`windows_from_prefix`.
    """
    m = len(values)
    fwd, inv = powers(p, m)
    prefix = np.empty(m + 1, dtype=np.uint64)
    prefix[0] = 0
    np.multiply(values, fwd, out=prefix[1:])
    np.cumsum(prefix[1:], out=prefix[1:])
    return prefix, inv


def windows_from_prefix(prefix: np.ndarray, inv: np.ndarray, length: int) -> np.ndarray:
    """Window hashes of length ``length`` from :func:`prefix_sums` (see :func:`window_hashes`)."""
    m = len(prefix) - 1
    if m < length:
        return np.empty(0, dtype=np.uint64)
    out = prefix[length:] - prefix[:-length]
    out *= inv[: m - length + 1]
    return out


def window_hashes(values: np.ndarray, length: int, p: int) -> np.ndarray:
    """Polynomial hashes of every window of ``length`` consecutive ``values``.

    Args:
        values: ``uint64`` array of shape ``(m,)``.
        length: window length ``L >= 1``.
        p: odd multiplier.

    Returns:
        ``uint64`` array of shape ``(max(0, m - L + 1),)``; entry ``i`` is
        ``sum_j values[i + j] * p**j mod 2**64``, independent of ``i``'s position.
    """
    return windows_from_prefix(*prefix_sums(values, p), length)


@dataclass
class TokenBatch:
    """The words of a batch of texts, as hashes.

    Attributes:
        word_hash: ``uint64`` array ``(W,)``, one hash per word, texts concatenated in order.
        word_offsets: ``int64`` array ``(T + 1,)``; text ``t``'s words are
            ``word_hash[word_offsets[t]:word_offsets[t + 1]]``.
        char_value: ``uint64`` array ``(C,)``: ``T[c]`` of every word character, texts
            concatenated (the text with spaces and symbols removed); ``None`` unless asked.
        char_offsets: ``int64`` array ``(T + 1,)`` into ``char_value``; ``None`` unless asked.
    """

    word_hash: np.ndarray
    word_offsets: np.ndarray
    char_value: np.ndarray | None = None
    char_offsets: np.ndarray | None = None


def _codes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Code points of the normalised texts joined by ``"\\n"`` and each text's start (``T + 1``)."""
    normed = [normalize(t) for t in texts]
    lengths = np.fromiter((len(t) + 1 for t in normed), dtype=np.int64, count=len(normed))
    starts = np.zeros(len(normed) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    joined = "\n".join(normed)
    if joined.isascii():
        return np.frombuffer(joined.encode("ascii"), dtype=np.uint8), starts
    return np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32), starts


def word_bounds(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Word boundaries of ``texts`` in their normalised, ``"\n"``-joined form.

    Returns:
        ``(text_starts, word_starts, word_ends)``: each text's start offset (``T + 1``)
        and the ``[start, end)`` offsets of every word, in order, in
        ``"\n".join(normalize(t) for t in texts)``.
    """
    _, text_starts, _, starts, ends = _bounds(texts)
    return text_starts, starts, ends


def _bounds(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(T[codes], text_starts, is_word, word_starts, word_ends)`` of the joined normalised texts."""
    codes, text_starts = _codes(texts)
    values = char_values()[codes]
    is_word = values != 0
    edges = np.flatnonzero(np.diff(is_word.view(np.int8), prepend=np.int8(0), append=np.int8(0)))
    # word runs alternate: a rising edge (start) then a falling edge (end)
    return values, text_starts, is_word, edges[0::2], edges[1::2]


def tokenize(texts: Sequence[str], *, chars: bool = False) -> TokenBatch:
    """Hash every word of ``texts`` (and, with ``chars``, every word character) in one pass.

    The words are exactly those of :func:`distillery.text.words` on each text; a word's hash
    depends on its characters only (not on where it occurs).
    """
    values, text_starts, is_word, starts, ends = _bounds(texts)
    word_offsets = np.searchsorted(starts, text_starts).astype(np.int64)
    if not chars:
        # hash over the full stream (non-word characters add 0): no compaction needed
        prefix, inv = prefix_sums(values, P_CHAR)
        word_hash = prefix[ends] - prefix[starts]
        word_hash *= inv[starts]
        return TokenBatch(word_hash, word_offsets)
    values = values[is_word]
    first = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=first[1:])
    prefix, inv = prefix_sums(values, P_CHAR)
    word_hash = prefix[first[1:]] - prefix[first[:-1]]
    word_hash *= inv[first[:-1]]
    return TokenBatch(word_hash, word_offsets, values, first[word_offsets])
