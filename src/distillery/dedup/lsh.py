"""Locality-sensitive hashing of MinHash signatures by banding.

A signature of ``k`` values is cut into ``b`` bands of ``r`` rows (``b * r <= k``); two
documents are candidates when they agree on every row of at least one band. With Jaccard
similarity ``s`` this happens with probability ``P(s) = 1 - (1 - s**r)**b``, an S-curve
whose steepest point is near ``(1 / b) ** (1 / r)`` (Leskovec, Rajaraman & Ullman, *Mining
of Massive Datasets*, 3rd ed., section 3.4).

:func:`optimal_params` picks ``(b, r)`` for a threshold ``t`` by minimising the weighted
probability mass of false positives, ``int_0^t P(s) ds``, plus false negatives,
``int_t^1 (1 - P(s)) ds`` (the same criterion as datasketch's ``MinHashLSH``).

Each band of a signature is reduced to one 64-bit band key (:func:`band_keys`); the
:class:`BandTable` is an open-addressing hash multimap from band keys to the documents
inserted with them, kept in flat numpy arrays so that a batch of keys is inserted or
looked up with a few vectorised passes and no Python object per key.
"""

from __future__ import annotations

import functools

import numpy as np

from distillery.dedup.growable import Growable
from distillery.dedup.shingles import fmix64

_GRID = 1001  # integration points per interval
_VECTOR_MIN = 64  # probe sequences left when the table switches from numpy rounds to a loop


@functools.cache
def optimal_params(
    threshold: float, num_perm: int, false_positive_weight: float = 0.5, false_negative_weight: float = 0.5
) -> tuple[int, int]:
    """Bands and rows ``(b, r)`` minimising the weighted false positive + false negative mass.

    Minimises ``w_fp * int_0^t P(s) ds + w_fn * int_t^1 (1 - P(s)) ds`` over every ``b, r >= 1``
    with ``b * r <= num_perm``, ``P(s) = 1 - (1 - s**r)**b`` (integrals by the trapezoid
    rule on 1001 points). Ties go to the smaller ``b`` then ``r``.

    Args:
        threshold: Jaccard similarity ``t`` in ``(0, 1)`` that separates duplicates.
        num_perm: signature length ``k >= 1``.
        false_positive_weight, false_negative_weight: non-negative weights, not both 0.

    Raises:
        ValueError: ``threshold`` outside ``(0, 1)``, ``num_perm < 1`` or bad weights.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    if false_positive_weight < 0 or false_negative_weight < 0 or false_positive_weight + false_negative_weight == 0:
        raise ValueError("weights must be non-negative and not both zero")
    b, r = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]).T
    s_fp = np.linspace(0.0, threshold, _GRID)
    s_fn = np.linspace(threshold, 1.0, _GRID)

    def curve(s: np.ndarray) -> np.ndarray:  # (combinations, points)
        return 1.0 - (1.0 - s[None, :] ** r[:, None]) ** b[:, None]

    fp = np.trapezoid(curve(s_fp), s_fp, axis=1)
    fn = np.trapezoid(1.0 - curve(s_fn), s_fn, axis=1)
    cost = false_positive_weight * fp + false_negative_weight * fn
    best = int(np.argmin(cost))  # first minimum: combinations are listed by b, then r
    return int(b[best]), int(r[best])


def candidate_probability(similarity: float | np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``P(s) = 1 - (1 - s**rows)**bands``: chance that documents of Jaccard ``s`` share a band."""
    s = np.asarray(similarity, dtype=np.float64)
    return 1.0 - (1.0 - s**rows) ** bands


class BandHasher:
    """Reduces signature bands to 64-bit band keys.

    The key of band ``j`` is ``fmix64(sum_m sig[j*r + m] * C[j, m])`` (mod 2**64) with random
    odd ``C``; distinct bands use distinct constants, so keys of different bands never meet.

    Args:
        bands, rows: ``b`` and ``r``.
        seed: seed of ``C``.
    """

    def __init__(self, bands: int, rows: int, seed: int = 1) -> None:
        self.bands, self.rows = bands, rows
        rng = np.random.default_rng([seed, 6])
        self._c = rng.integers(0, 2**64, size=(bands, rows), dtype=np.uint64, endpoint=False) | np.uint64(1)

    def keys(self, signatures: np.ndarray) -> np.ndarray:
        """Band keys of ``signatures`` (``(D, k)``, ``k >= b * r``): ``uint64`` array ``(D, b)``."""
        d = len(signatures)
        used = signatures[:, : self.bands * self.rows].astype(np.uint64).reshape(d, self.bands, self.rows)
        used *= self._c
        return fmix64(used.sum(axis=2, dtype=np.uint64))


def pairs_within(keys: np.ndarray, max_fanout: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs ``(i, j)``, ``i < j``, among rows of ``keys`` that share a band key.

    Args:
        keys: ``uint64`` array ``(D, b)`` of band keys.
        max_fanout: in a bucket (documents sharing one band key, in row order), each member
            is paired with the ``max_fanout`` members before it and with the bucket's first
            member; buckets of at most ``max_fanout + 1`` members yield all their pairs.

    Returns:
        two ``int64`` arrays ``(P,)``, sorted by ``(i, j)``, without repeats.
    """
    d, b = keys.shape
    flat = keys.ravel()
    order = np.argsort(flat, kind="stable")  # stable: a bucket's members stay in row order
    sk = flat[order]
    doc = order // b
    left, right = [], []
    for gap in range(1, max_fanout + 1):
        same = sk[gap:] == sk[:-gap]
        if not same.any():
            break
        left.append(doc[:-gap][same])
        right.append(doc[gap:][same])
    else:
        new_bucket = np.ones(len(sk), dtype=bool)
        new_bucket[1:] = sk[1:] != sk[:-1]
        first = np.maximum.accumulate(np.where(new_bucket, np.arange(len(sk)), 0))
        far = np.arange(len(sk)) - first > max_fanout
        left.append(doc[first[far]])
        right.append(doc[far])
    if not left:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    i = np.concatenate(left)
    j = np.concatenate(right)
    keep = i != j
    code = np.unique(i[keep] * d + j[keep])
    return code // d, code % d


class BandTable:
    """A hash multimap from 64-bit band keys to entries, in flat numpy arrays.

    Entry ``e`` is the ``e``-th key inserted; a document inserting its ``b`` band keys in
    order owns entries ``doc * b .. doc * b + b - 1``, so ``entry // b`` is its number.
    Open addressing with linear probing over ``slots`` (a power of two, at most half full;
    a slot holds the newest entry of its key), and each entry links to the previous entry
    with the same key, so a key's entries form a chain, newest first.

    Memory: 12 bytes per entry (key ``uint64``, link ``int32``) plus 4 bytes per slot
    (2 to 4 slots per distinct key): at most 28 bytes per inserted key. At most
    ``2**31 - 1`` entries.
    """

    _MAX_LOAD = 0.5

    def __init__(self, capacity: int = 1 << 12) -> None:
        self._slots = np.full(1 << max(int(capacity - 1).bit_length(), 4), -1, dtype=np.int32)
        self._keys = Growable(np.uint64)
        self._next = Growable(np.int32)
        self._distinct = 0

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def nbytes(self) -> int:
        """Bytes allocated by the table's arrays."""
        return int(self._slots.nbytes) + self._keys.nbytes + self._next.nbytes

    def _probe(self, keys: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slot of each key (or the empty slot where its probe ends) and its head entry (-1: absent).

        Probing starts at ``pos`` (modified in place). Rounds are vectorised while many keys
        are still probing; the few long probe sequences left are finished one by one.
        """
        slots, entry_keys = self._slots, self._keys.array
        mask = len(slots) - 1
        head = np.full(len(keys), -1, dtype=np.int32)
        if not len(entry_keys):
            return pos, head
        todo = np.arange(len(keys))
        while len(todo) > _VECTOR_MIN:
            h = slots[pos[todo]]
            occupied = h >= 0
            hit = occupied & (entry_keys[np.maximum(h, 0)] == keys[todo])
            head[todo[hit]] = h[hit]
            todo = todo[occupied & ~hit]
            pos[todo] = (pos[todo] + 1) & mask
        for t in todo.tolist():
            p, k = int(pos[t]), keys[t]
            while True:
                h = int(slots[p])
                if h < 0:
                    break
                if entry_keys[h] == k:
                    head[t] = h
                    break
                p = (p + 1) & mask
            pos[t] = p
        return pos, head

    def _start(self, keys: np.ndarray) -> np.ndarray:
        return (keys & np.uint64(len(self._slots) - 1)).astype(np.int64)

    def _claim(self, keys: np.ndarray, pos: np.ndarray, heads: np.ndarray) -> None:
        """Put absent, distinct ``keys`` into empty slots (``pos`` from :meth:`_probe`), heads ``heads``.

        Keys aiming at the same empty slot all write it; the one whose write stays wins and
        the others probe on (heads are distinct, so the winner is recognised).
        """
        mask = len(self._slots) - 1
        while len(keys):
            self._slots[pos] = heads
            lose = self._slots[pos] != heads
            keys, heads = keys[lose], heads[lose]
            pos, _ = self._probe(keys, (pos[lose] + 1) & mask)

    def _reserve(self, distinct: int) -> None:
        size = len(self._slots)
        while distinct > self._MAX_LOAD * size:
            size *= 2
        if size == len(self._slots):
            return
        heads = self._slots[self._slots >= 0]
        self._slots = np.full(size, -1, dtype=np.int32)
        keys = self._keys.array[heads]
        self._claim(keys, self._start(keys), heads)

    def insert(self, keys: np.ndarray) -> None:
        """Append one entry per key of ``keys`` (``uint64`` ``(E,)``), in order.

        Raises:
            OverflowError: the table would exceed ``2**31 - 1`` entries.
        """
        base = len(self._keys)
        if base + len(keys) >= 2**31:
            raise OverflowError("BandTable holds at most 2**31 - 1 entries")
        if not len(keys):
            return
        # group the new entries by key, each group in insertion order
        order = np.argsort(keys, kind="stable")
        grouped = keys[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = grouped[1:] != grouped[:-1]
        last = np.ones(len(keys), dtype=bool)
        last[:-1] = first[1:]
        uniq = grouped[first]
        self._reserve(self._distinct + len(uniq))
        pos, old_head = self._probe(uniq, self._start(uniq))
        entries = (base + order).astype(np.int32)
        # each entry links to the previous one of its key; a key's first links to its old head
        link = np.empty(len(keys), dtype=np.int32)
        link[1:] = entries[:-1]
        link[first] = old_head
        nxt = np.empty(len(keys), dtype=np.int32)
        nxt[order] = link
        self._keys.extend(keys)
        self._next.extend(nxt)
        new_head = entries[last]
        present = old_head >= 0
        self._slots[pos[present]] = new_head[present]
        absent = ~present
        self._claim(uniq[absent], pos[absent], new_head[absent])
        self._distinct += int(absent.sum())

    def query(self, keys: np.ndarray, max_chain: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Entries stored under each of ``keys``.

        Args:
            keys: ``uint64`` array ``(Q,)``.
            max_chain: at most this many entries (the newest) per key.

        Returns:
            ``(query_index, entry)``: two ``int64`` arrays, one row per (key, entry) hit.
        """
        if not len(keys) or not len(self._keys):
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        _, head = self._probe(keys, self._start(keys))
        q = np.flatnonzero(head >= 0)
        e = head[q].astype(np.int64)
        qs, es = [q], [e]
        nxt = self._next.array
        for _ in range(max_chain - 1):
            e = nxt[e]
            alive = e >= 0
            if not alive.any():
                break
            q, e = q[alive], e[alive].astype(np.int64)
            qs.append(q)
            es.append(e)
        return np.concatenate(qs), np.concatenate(es)
