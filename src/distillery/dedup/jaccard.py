"""Exact Jaccard similarity of many pairs of shingle sets at once.

``J(A, B) = |A & B| / |A | B|`` over sets of shingle hashes, each document's stored sorted
and without repeats (:class:`~distillery.dedup.shingles.ShingleBatch`). For a list of
pairs, every element becomes one 64-bit key ``pair << 44 | fingerprint << 1 | side`` (the
fingerprint is the top 43 bits of the hash). Because every document is sorted, the keys of
all first members form one ascending run and those of all second members another, so one
linear merge (numpy's stable sort is timsort, which merges runs) puts each shared
fingerprint's two keys next to each other; ``|A & B|`` is the count of such neighbours per
pair. The result is exact unless two distinct shingles of one pair share a 43-bit
fingerprint (probability about ``|A | B|**2 / 2**44``: below ``1e-8`` for documents of a
few hundred words).

By convention two empty sets have ``J = 1`` (identical texts without words) and an empty
set against a non-empty one has ``J = 0``.
"""

from __future__ import annotations

import numpy as np

_PAIR_BITS = 20  # pairs per sort (2**20); larger inputs are processed in chunks
_U64 = np.uint64


def ragged_gather(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values[offsets[r]:offsets[r + 1]]`` for each ``r`` of ``rows``, concatenated.

    Every row must be non-empty.
    """
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    ends = np.cumsum(lengths)
    step = np.ones(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
    if len(rows):
        step[0] = starts[0]
        step[ends[:-1]] = starts[1:] - (starts[:-1] + lengths[:-1]) + 1
    return values[np.cumsum(step)]


def pair_jaccard(
    a_hashes: np.ndarray,
    a_offsets: np.ndarray,
    a_rows: np.ndarray,
    b_hashes: np.ndarray,
    b_offsets: np.ndarray,
    b_rows: np.ndarray,
) -> np.ndarray:
    """Jaccard similarity of the shingle sets of documents ``a_rows[p]`` and ``b_rows[p]``.

    Args:
        a_hashes, a_offsets: a ragged store (``uint64`` ``(S,)`` and ``int64`` ``(N + 1,)``);
            document ``d``'s shingles are ``a_hashes[a_offsets[d]:a_offsets[d + 1]]``,
            sorted ascending without repeats.
        a_rows: ``int`` array ``(P,)`` of documents of the first store.
        b_hashes, b_offsets, b_rows: the same for the second member of each pair (may be
            the same store).

    Returns:
        ``float64`` array ``(P,)``.
    """
    a_rows = np.asarray(a_rows, dtype=np.int64)
    b_rows = np.asarray(b_rows, dtype=np.int64)
    out = np.empty(len(a_rows), dtype=np.float64)
    chunk = 1 << _PAIR_BITS
    for lo in range(0, len(a_rows), chunk):
        sl = slice(lo, lo + chunk)
        out[sl] = _jaccard_chunk(a_hashes, a_offsets, a_rows[sl], b_hashes, b_offsets, b_rows[sl])
    return out


def _jaccard_chunk(a_hashes, a_offsets, a_rows, b_hashes, b_offsets, b_rows) -> np.ndarray:  # noqa: ANN001
    size_a = a_offsets[a_rows + 1] - a_offsets[a_rows]
    size_b = b_offsets[b_rows + 1] - b_offsets[b_rows]
    result = np.where((size_a == 0) & (size_b == 0), 1.0, 0.0)
    both = np.flatnonzero((size_a > 0) & (size_b > 0))
    if not len(both):
        return result
    shift = _U64(64 - _PAIR_BITS)
    prefix = np.arange(len(both), dtype=np.uint64) << shift
    ha = ragged_gather(a_hashes, a_offsets, a_rows[both])
    hb = ragged_gather(b_hashes, b_offsets, b_rows[both])
    keys = np.empty(len(ha) + len(hb), dtype=np.uint64)
    ka, kb = keys[: len(ha)], keys[len(ha) :]
    np.right_shift(ha, _U64(20), out=ka)
    ka &= ~_U64(1)
    ka |= np.repeat(prefix, size_a[both])
    np.right_shift(hb, _U64(20), out=kb)
    kb |= _U64(1)
    kb |= np.repeat(prefix, size_b[both])
    keys.sort(kind="stable")  # merges the two ascending runs
    shared = (keys[1:] ^ keys[:-1]) == _U64(1)  # same pair and fingerprint, sides 0 then 1
    inter = np.bincount((keys[:-1][shared] >> shift).astype(np.int64), minlength=len(both))
    result[both] = inter / (size_a[both] + size_b[both] - inter)
    return result
