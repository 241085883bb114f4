"""Exact Jaccard similarity of many pairs of shingle sets at once.

``J(A, B) = |A & B| / |A | B|`` over the *sets* of shingle hashes (repeats inside a document
count once). For a list of pairs, every element is tagged with its pair number and side
into one 64-bit sort key ``pair << 44 | fingerprint << 1 | side`` (the fingerprint is the
top 43 bits of the shingle hash), the keys are sorted once, and runs give ``|A|``, ``|B|``
and ``|A & B|`` per pair. The result is exact unless two distinct shingles of one pair
share a 43-bit fingerprint (probability about ``|A | B|**2 / 2**44``, below ``1e-8`` for
documents of a few hundred words).

By convention two empty sets have ``J = 1`` (identical texts without words) and an empty
set against a non-empty one has ``J = 0``.
"""

from __future__ import annotations

import numpy as np

_PAIR_BITS = 20  # pairs per sort (2**20); larger inputs are processed in chunks
_U64 = np.uint64


def ragged_gather(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values[offsets[r]:offsets[r + 1]]`` for each ``r`` of ``rows``, concatenated.

    Returns:
        ``(gathered, owner)``: the values, and for each the position in ``rows`` of its row.
        Every row must be non-empty.
    """
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    ends = np.cumsum(lengths)
    step = np.ones(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
    if len(rows):
        step[0] = starts[0]
        step[ends[:-1]] = starts[1:] - (starts[:-1] + lengths[:-1]) + 1
    index = np.cumsum(step)
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    return values[index], owner


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
            document ``d``'s shingles are ``a_hashes[a_offsets[d]:a_offsets[d + 1]]``.
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
    p = len(a_rows)
    size_a = a_offsets[a_rows + 1] - a_offsets[a_rows]
    size_b = b_offsets[b_rows + 1] - b_offsets[b_rows]
    result = np.where((size_a == 0) & (size_b == 0), 1.0, 0.0)
    both = np.flatnonzero((size_a > 0) & (size_b > 0))
    if not len(both):
        return result
    ha, oa = ragged_gather(a_hashes, a_offsets, a_rows[both])
    hb, ob = ragged_gather(b_hashes, b_offsets, b_rows[both])
    shift = _U64(64 - _PAIR_BITS)
    keys = np.concatenate(
        [
            (oa.astype(np.uint64) << shift) | ((ha >> _U64(21)) << _U64(1)),
            (ob.astype(np.uint64) << shift) | ((hb >> _U64(21)) << _U64(1)) | _U64(1),
        ]
    )
    keys.sort()
    distinct = np.ones(len(keys), dtype=bool)
    distinct[1:] = keys[1:] != keys[:-1]
    keys = keys[distinct]
    owner = (keys >> shift).astype(np.int64)
    side = (keys & _U64(1)).astype(bool)
    n = len(both)
    count_a = np.bincount(owner[~side], minlength=n)
    count_b = np.bincount(owner[side], minlength=n)
    shared = (keys[1:] ^ keys[:-1]) == _U64(1)  # same pair and fingerprint, sides 0 then 1
    inter = np.bincount(owner[:-1][shared], minlength=n)
    result[both] = inter / (count_a + count_b - inter)
    return result
