"""Vectorised word n-gram shingling of a batch of texts into 64-bit shingle hashes.

The words are exactly those of :func:`distillery.text.words` (NFKC, lower case, maximal runs
of unicode word characters), but no Python object is built per word: a batch is joined
with spaces and encoded to UTF-8 once, and numpy finds the word runs with a 256-entry byte
table. ASCII texts are invariant under NFKC, so they are only lower-cased (on the joined
bytes); other texts go through :func:`distillery.text.normalize`, and their non-ASCII
characters that are not word characters become spaces (decided per distinct character by
the very regex ``words()`` uses), so every remaining byte >= 0x80 belongs to a word.

Hashing (all arithmetic modulo 2**64, constants drawn from ``seed``):

- a word of ``L <= 16`` bytes is read as two little-endian 64-bit blocks ``m_0, m_1``
  zero-padded (word bytes are never 0, so the padding is unambiguous) and hashed to
  ``fmix64(m_0 * K_0 + m_1 * K_1)``; ``fmix64`` is the MurmurHash3 finaliser, a bijection.
  Longer words fold in 16 more bytes per round. Distinct words collide with probability
  about 2**-64.
- a shingle (``n`` consecutive words ``w_0..w_{n-1}``) hashes to
  ``sum_k w_k * C_k + E_n`` with random odd ``C_k`` (a multilinear hash of the word
  hashes, position-dependent so word order matters).

A text of ``1 <= m < n`` words gets one shingle of all its ``m`` words (the fallback that
lets short texts still deduplicate); an empty text gets no shingle. Each text's shingles
are finally sorted and deduplicated into its shingle *set* (one sort of ``text << 48 |
hash >> 16`` keys per batch), keeping 48 bits of each hash. Throughput: about 5 us per
100-word text on one core.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distillery.text import _WORD, normalize

_U64 = np.uint64
_MAX_WORD_BLOCKS = 1 << 16  # a "word" longer than 1 MiB is hashed on its first 1 MiB
_TEXTS_PER_SORT = 1 << 16  # texts per (text, hash) sort: the text number takes 16 bits


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser applied element-wise, in place; returns ``x``.

    A bijection on 64-bit integers with full avalanche (Appleby, MurmurHash3, 2011).
    ``x`` must be a writable ``uint64`` array.
    """
    x ^= x >> _U64(33)
    x *= _U64(0xFF51AFD7ED558CCD)
    x ^= x >> _U64(33)
    x *= _U64(0xC4CEB9FE1A85EC53)
    x ^= x >> _U64(33)
    return x


def _odd_constants(seed: int, tag: int, size: int) -> np.ndarray:
    rng = np.random.default_rng([seed, tag])
    return rng.integers(0, 2**64, size=size, dtype=np.uint64, endpoint=False) | _U64(1)


@functools.cache
def _byte_is_word() -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    for b in range(128):
        table[b] = _WORD.fullmatch(chr(b)) is not None
    table[128:] = True  # bytes of non-ASCII word characters (non-word ones are blanked first)
    return table


@functools.cache
def _is_word_char(ch: str) -> bool:
    return _WORD.fullmatch(ch) is not None


_BYTE_MASKS = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [2**64 - 1], dtype=np.uint64)


_ASCII_LOWER = bytes.maketrans(bytes(range(65, 91)), bytes(range(97, 123)))
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _prepare_non_ascii(text: str) -> str:
    """``normalize(text)`` with every non-ASCII non-word character replaced by a space."""
    text = normalize(text)
    for ch in set(_NON_ASCII.findall(text)):
        if not _is_word_char(ch):
            text = text.replace(ch, " ")
    return text


@dataclass
class ShingleBatch:
    """The shingles of a batch of ``D`` texts.

    Attributes:
        hashes: ``uint64`` array ``(S,)``: shingle hashes, texts concatenated in order;
            each text's shingle *set*: sorted ascending, without repeats. The low 16 bits
            are zero (48-bit hashes; distinct shingles of one text collide with
            probability about ``S**2 / 2**49``).
        offsets: ``int64`` array ``(D + 1,)``: text ``d``'s shingles are
            ``hashes[offsets[d]:offsets[d + 1]]``.
        num_words: ``int64`` array ``(D,)``: words per text.
    """

    hashes: np.ndarray
    offsets: np.ndarray
    num_words: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def counts(self) -> np.ndarray:
        """Shingles per text, ``int64`` array ``(D,)``."""
        return np.diff(self.offsets)


class Shingler:
    """Turns texts into word n-gram shingle hashes (see the module docstring).

    Args:
        ngram: words per shingle ``n >= 1``.
        seed: seed of the hash constants; equal seeds give equal hashes on any machine.

    Raises:
        ValueError: ``ngram < 1``.
    """

    def __init__(self, ngram: int = 5, seed: int = 1) -> None:
        if ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {ngram}")
        self.ngram = ngram
        self.seed = seed
        self._word_k = _odd_constants(seed, 1, 2)  # blocks 0 and 1 of a word
        self._long_k = _odd_constants(seed, 2, 2)  # blocks of words longer than 16 bytes
        self._shingle_c = _odd_constants(seed, 3, ngram)
        self._shingle_e = _odd_constants(seed, 4, ngram + 1)  # E_m for m-word shingles

    # -- words ------------------------------------------------------------------------
    def word_hashes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Hash every word of ``texts``.

        Returns:
            ``(word_hash, word_counts)``: ``uint64`` array ``(W,)`` of word hashes, texts
            concatenated in order, and ``int64`` array ``(D,)`` of words per text. The words
            are those of :func:`distillery.text.words`.
        """
        buf, text_starts = self._encode(texts)
        starts, ends = self._word_bounds(buf)
        counts = np.diff(np.searchsorted(starts, text_starts)).astype(np.int64)
        return self._hash_words(buf, starts, ends), counts

    def words_of(self, texts: Sequence[str]) -> list[list[str]]:
        """The words the fast path finds in each text, decoded (for tests and debugging)."""
        buf, text_starts = self._encode(texts)
        starts, ends = self._word_bounds(buf)
        first = np.searchsorted(starts, text_starts)
        raw = buf.tobytes()
        return [
            [raw[s:e].decode("utf-8") for s, e in zip(starts[a:b], ends[a:b], strict=True)]
            for a, b in zip(first[:-1], first[1:], strict=True)
        ]

    @staticmethod
    def _encode(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """UTF-8 bytes of the normalised texts as ``" " + t_0 + " " + t_1 ... + " "`` plus
        16 NUL bytes of padding, and each text's start offset plus the end (``D + 1``)."""
        # NFKC leaves ASCII unchanged, so ASCII texts only need lower-casing, which is done
        # on the joined bytes (UTF-8 bytes of non-ASCII characters are all >= 0x80)
        encoded = [(t if t.isascii() else _prepare_non_ascii(t)).encode("utf-8") for t in texts]
        lengths = np.empty(len(texts) + 1, dtype=np.int64)
        lengths[0] = 0
        lengths[1:] = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        lengths[1:] += 1
        starts = np.cumsum(lengths)
        starts += 1
        # NUL is not a word character: the padding lets 8-byte reads run past the last word
        data = b" ".join([b"", *encoded, b"\0" * 16]).translate(_ASCII_LOWER)
        return np.frombuffer(data, dtype=np.uint8), starts

    @staticmethod
    def _word_bounds(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        is_word = np.take(_byte_is_word(), buf)
        edges = np.flatnonzero(is_word[1:] != is_word[:-1])
        edges += 1
        return edges[0::2], edges[1::2]

    def _hash_words(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        # an unaligned little-endian uint64 view starting at every byte
        blocks = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
        length = ends - starts
        k0, k1 = self._word_k
        # word bytes are never 0, so zero padding keeps (block 0, block 1) one-to-one
        h = blocks[starts]
        h &= np.take(_BYTE_MASKS, np.minimum(length, 8))
        h *= k0
        over8 = np.flatnonzero(length > 8)
        if len(over8):
            hi = blocks[starts[over8] + 8]
            hi &= np.take(_BYTE_MASKS, np.minimum(length[over8] - 8, 8))
            hi *= k1
            h[over8] += hi
            long_words = over8[length[over8] > 16]
            if len(long_words):
                h[long_words] = self._hash_long(blocks, starts[long_words], length[long_words], h[long_words])
        return fmix64(h)

    def _hash_long(
        self, blocks: np.ndarray, starts: np.ndarray, length: np.ndarray, h: np.ndarray
    ) -> np.ndarray:
        """Fold the bytes after the first 16 of long words into their hash, 16 bytes a round."""
        k0, k1 = self._long_k
        h = h.copy()
        for j in range(1, _MAX_WORD_BLOCKS):
            sel = np.flatnonzero(length > 16 * j)
            if not len(sel):
                break
            s, rest = starts[sel] + 16 * j, length[sel] - 16 * j
            a = blocks[s] & _BYTE_MASKS[np.minimum(rest, 8)]
            b = blocks[s + 8] & _BYTE_MASKS[np.clip(rest - 8, 0, 8)]
            h[sel] = fmix64(h[sel]) + a * k0 + b * k1
        return h

    # -- shingles ---------------------------------------------------------------------
    def shingles(self, texts: Sequence[str]) -> ShingleBatch:
        """Shingle hashes of every text of ``texts`` (see the module docstring).

        Returns:
            a :class:`ShingleBatch` with ``D = len(texts)``.
        """
        word_hash, counts = self.word_hashes(texts)
        return self.shingles_from_words(word_hash, counts)

    def shingles_from_words(self, word_hash: np.ndarray, counts: np.ndarray) -> ShingleBatch:
        """Shingles from word hashes ``(W,)`` and words per text ``(D,)`` (as :meth:`word_hashes`)."""
        n = self.ngram
        d = len(counts)
        total = len(word_hash)
        first = np.zeros(d + 1, dtype=np.int64)
        np.cumsum(counts, out=first[1:])
        regular = np.maximum(counts - n + 1, 0)
        if total >= n:
            m = total - n + 1
            h = word_hash[:m] * self._shingle_c[0]
            for k in range(1, n):
                h += word_hash[k : k + m] * self._shingle_c[k]
            h += self._shingle_e[n]
            doc_of_word = np.repeat(np.arange(d), counts)
            reg_hashes = h[doc_of_word[:m] == doc_of_word[n - 1 :]]
        else:
            reg_hashes = np.empty(0, dtype=np.uint64)
        short = np.flatnonzero((counts > 0) & (counts < n))
        if len(short):
            fallback = np.zeros(len(short), dtype=np.uint64)
            size = counts[short]
            for k in range(n - 1):
                sel = size > k
                fallback[sel] += word_hash[first[short[sel]] + k] * self._shingle_c[k]
            fallback += self._shingle_e[size]
            reg_offsets = np.zeros(d + 1, dtype=np.int64)
            np.cumsum(regular, out=reg_offsets[1:])
            hashes = np.insert(reg_hashes, reg_offsets[short], fallback)
        else:
            hashes = reg_hashes
        per_text = regular + ((counts > 0) & (counts < n))
        return _as_sets(hashes, per_text, counts)


def _as_sets(hashes: np.ndarray, per_text: np.ndarray, num_words: np.ndarray) -> ShingleBatch:
    """Sort each text's shingle hashes and drop repeats (one sort over ``(text, hash)`` keys;
    the text number takes the low 16 bits of the hash, which are zeroed)."""
    out_hashes, out_counts = [], []
    first = 0
    for lo in range(0, len(per_text), _TEXTS_PER_SORT):
        counts = per_text[lo : lo + _TEXTS_PER_SORT]
        size = int(counts.sum())
        key = np.repeat(np.arange(len(counts), dtype=np.uint64) << _U64(48), counts)
        key |= hashes[first : first + size] >> _U64(16)
        first += size
        key.sort()
        repeats = np.flatnonzero(key[1:] == key[:-1])
        if len(repeats):
            repeats += 1
            counts = counts - np.bincount((key[repeats] >> _U64(48)).astype(np.int64), minlength=len(counts))
            key = np.delete(key, repeats)
        key <<= _U64(16)
        out_counts.append(counts)
        out_hashes.append(key)
    offsets = np.zeros(len(per_text) + 1, dtype=np.int64)
    if out_counts:
        np.cumsum(np.concatenate(out_counts), out=offsets[1:])
    hashes = np.concatenate(out_hashes) if out_hashes else np.empty(0, dtype=np.uint64)
    return ShingleBatch(hashes, offsets, num_words)
