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
from dataclasses import dataclass

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
    if (
        false_positive_weight < 0
        or false_negative_weight < 0
        or false_positive_weight + false_negative_weight == 0
    ):
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

    Raises:
        ValueError: more than ``2**24`` rows.
    """
    d, b = keys.shape
    if d < 2:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    # sort (band key, document) pairs packed in one uint64: the document takes the low
    # bits of the key (a false bucket collision then has probability 2**-(64 - bits))
    bits = max(int(d - 1).bit_length(), 1)
    if bits > 24:
        raise ValueError(f"pairs_within handles at most 2**24 documents at once, got {d}")
    low = np.uint64((1 << bits) - 1)
    packed = keys & ~low
    packed |= np.arange(d, dtype=np.uint64)[:, None]
    packed = np.sort(packed.ravel())
    doc = (packed & low).astype(np.int64)
    bucket = packed >> np.uint64(bits)
    left, right = [], []
    for gap in range(1, max_fanout + 1):
        same = bucket[gap:] == bucket[:-gap]
        if not same.any():
            break
        left.append(doc[:-gap][same])
        right.append(doc[gap:][same])
    else:
        new_bucket = np.ones(len(bucket), dtype=bool)
        new_bucket[1:] = bucket[1:] != bucket[:-1]
        first = np.maximum.accumulate(np.where(new_bucket, np.arange(len(bucket)), 0))
        far = np.arange(len(bucket)) - first > max_fanout
        left.append(doc[first[far]])
        right.append(doc[far])
    if not left:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    i = np.concatenate(left)
    j = np.concatenate(right)
    keep = i != j  # a document meets itself only if two of its bands share a key
    code = np.unique(i[keep] * d + j[keep])
    return code // d, code % d


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stable grouping of ``keys``: ``(order, keys[order], first)`` with ``order`` sorting by
    key then position, and ``first`` marking each key's first row in that order.

    Sorts the keys with their position packed into the low bits (a plain sort is several
    times faster than a stable argsort); falls back to the argsort in the rare case where
    two distinct keys agree on all but those bits.
    """
    bits = max(int(len(keys) - 1).bit_length(), 1)
    low = np.uint64((1 << bits) - 1)
    packed = keys & ~low
    packed |= np.arange(len(keys), dtype=np.uint64)
    packed.sort()
    order = (packed & low).astype(np.int64)
    grouped = keys[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = grouped[1:] != grouped[:-1]
    if np.count_nonzero(first) != np.count_nonzero(np.diff(packed >> np.uint64(bits))) + 1:
        order = np.argsort(keys, kind="stable")
        grouped = keys[order]
        first[1:] = grouped[1:] != grouped[:-1]
    return order, grouped, first


class BandTable:
    """A hash multimap from 64-bit band keys to entries, in flat numpy arrays.

    Entry ``e`` is the ``e``-th key inserted; a document inserting its ``b`` band keys in
    order owns entries ``doc * b .. doc * b + b - 1``, so ``entry // b`` is its number.
    Open addressing with linear probing (Knuth TAOCP vol. 3, 6.4) over ``slots`` (a power of
    two, at most half full; a slot holds the newest entry of its key), and each entry links
    to the previous entry with the same key, so a key's entries form a chain, newest first.
    Growing rebuilds the slots in one vectorised pass (keys sorted by home slot land at
    ``i + cummax(home_i - i)``, which is where inserting them one by one would put them).

    Memory: 12 bytes per entry (key ``uint64``, link ``int32``) plus 4 bytes per slot
    (2 to 4 slots per distinct key): at most 28 bytes per inserted key. At most
    ``2**31 - 1`` entries.
    """

    _MAX_LOAD = 0.5  # linear probing: expected probes ~1.5 for a hit, ~2.5 for a miss

    def __init__(self, capacity: int = 1 << 12) -> None:
        self._slots = np.full(1 << max(int(capacity - 1).bit_length(), 4), -1, dtype=np.int32)
        self._keys = Growable(np.uint64)
        self._next = Growable(np.int32)
        self._distinct = 0
        self._version = 0  # changes whenever slots change, which invalidates a Lookup

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def nbytes(self) -> int:
        """Bytes allocated by the table's arrays."""
        return int(self._slots.nbytes) + self._keys.nbytes + self._next.nbytes

    def _probe(self, keys: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slot of each key (or the empty slot where its probe ends) and its head entry (-1: absent).

        Probing starts at ``pos`` (an ``int64`` array, overwritten with the result). Rounds
        are vectorised while many keys are still probing; the last few long probe sequences
        are finished one by one.
        """
        slots, entry_keys = self._slots, self._keys.array
        mask = len(slots) - 1
        head = np.full(len(keys), -1, dtype=np.int32)
        if not len(entry_keys):
            return pos, head
        idx, p, k = np.arange(len(keys)), pos.copy(), keys
        while len(idx) > _VECTOR_MIN:
            h = slots[p]
            occupied = h >= 0
            # h = -1 reads the last entry's key; harmless, since occupied is False there
            hit = occupied & (entry_keys[h] == k)
            head[idx[hit]] = h[hit]
            go_on = occupied ^ hit  # occupied by another key
            stop = ~go_on
            pos[idx[stop]] = p[stop]
            idx, k = idx[go_on], k[go_on]
            p = (p[go_on] + 1) & mask
        for t, start, key in zip(idx.tolist(), p.tolist(), k.tolist(), strict=True):
            q = start
            while True:
                h = int(slots[q])
                if h < 0:
                    break
                if int(entry_keys[h]) == key:
                    head[t] = h
                    break
                q = (q + 1) & mask
            pos[t] = q
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

    def reserve(self, new_keys: int) -> None:
        """Make room for ``new_keys`` more distinct keys now, so that inserting them does not
        resize the table (and does not invalidate a :class:`Lookup` taken in between)."""
        self._reserve(self._distinct + new_keys)

    def _reserve(self, distinct: int) -> None:
        size = len(self._slots)
        while distinct > self._MAX_LOAD * size:
            size *= 2
        if size == len(self._slots):
            return
        self._version += 1
        heads = self._slots[self._slots >= 0]
        self._slots = np.full(size, -1, dtype=np.int32)
        keys = self._keys.array[heads]
        # Linear probing into an empty table, all at once: with keys in order of home slot,
        # each lands at max(home, previous landing + 1), i.e. i + cummax(home_i - i).
        packed = (keys & np.uint64(size - 1)) << np.uint64(32)
        packed |= np.arange(len(keys), dtype=np.uint64)
        packed.sort()  # by home slot (a plain sort of packed keys beats an argsort)
        order = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
        home = (packed >> np.uint64(32)).astype(np.int64)
        steps = np.arange(len(home))
        land = np.maximum.accumulate(home - steps) + steps
        fits = land < size
        self._slots[land[fits]] = heads[order[fits]]
        spill = order[~fits]  # past the end: wrap around by ordinary probing
        if len(spill):
            pos, _ = self._probe(keys[spill], np.zeros(len(spill), dtype=np.int64))
            self._claim(keys[spill], pos, heads[spill])

    def insert(self, keys: np.ndarray, lookup: Lookup | None = None) -> None:
        """Append one entry per key of ``keys`` (``uint64`` ``(E,)``), in order.

        Args:
            keys: the keys.
            lookup: optionally, :meth:`lookup` of these very keys (row for row), taken since
                the table last changed; it saves probing the table again.

        Raises:
            OverflowError: the table would exceed ``2**31 - 1`` entries.
        """
        base = len(self._keys)
        if base + len(keys) >= 2**31:
            raise OverflowError("BandTable holds at most 2**31 - 1 entries")
        if not len(keys):
            return
        order, grouped, first = _group(keys)
        last = np.ones(len(keys), dtype=bool)
        last[:-1] = first[1:]
        uniq = grouped[first]
        self._reserve(self._distinct + len(uniq))
        if lookup is not None and lookup.version == self._version:
            pos, old_head = lookup.pos[order[first]], lookup.head[order[first]]
        else:
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
        self._version += 1

    def lookup(self, keys: np.ndarray) -> Lookup:
        """Probe the table for ``keys`` (``uint64`` ``(Q,)``); see :class:`Lookup`."""
        pos, head = self._probe(keys, self._start(keys))
        return Lookup(pos, head, self._version)

    def entries(self, lookup: Lookup, max_chain: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Entries stored under each looked-up key.

        Args:
            lookup: a :meth:`lookup` of ``Q`` keys.
            max_chain: at most this many entries (the newest) per key.

        Returns:
            ``(query_index, entry)``: two ``int64`` arrays, one row per (key, entry) hit.
        """
        q = np.flatnonzero(lookup.head >= 0)
        e = lookup.head[q].astype(np.int64)
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

    def query(self, keys: np.ndarray, max_chain: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`entries` of :meth:`lookup` of ``keys``."""
        return self.entries(self.lookup(keys), max_chain)


@dataclass
class Lookup:
    """Where keys are (or would go) in a :class:`BandTable`, valid until the table changes.

    Attributes:
        pos: ``int64`` ``(Q,)``: the key's slot, or the empty slot where it would go.
        head: ``int32`` ``(Q,)``: the newest entry with the key, -1 if absent.
        version: the table's version when probed.
    """

    pos: np.ndarray
    head: np.ndarray
    version: int
