"""Near-duplicate detection with MinHash-LSH and an exact Jaccard check (the engine of
``dedup: minhash``, :mod:`distillery.dedup.minhash`).

Pipeline of one batch of texts (all vectorised with numpy, one core):

1. shingling: word ``n``-grams over :func:`distillery.text.words` hashed to 64 bits
   (:mod:`distillery.dedup.shingles`); texts of fewer than ``n`` words get one shingle of
   all their words, so short texts still deduplicate;
2. MinHash signatures of ``num_perm`` values (:mod:`distillery.dedup.signatures`);
3. LSH banding into ``b`` bands of ``r`` rows chosen from the threshold
   (:func:`distillery.dedup.lsh.optimal_params`); candidates are documents that share a band
   with an indexed document or with an earlier document of the same batch;
4. each candidate pair is confirmed by its exact Jaccard similarity of shingle sets
   (``verify_jaccard``, default) or by the MinHash estimate.

Defaults and why:

- ``ngram = 5`` words, the default of datatrove's MinHash deduplication (used for FineWeb).
  On GSM8K no two distinct train problems reach ``J >= 0.5`` for any ``n`` in 2..7
  (measured), so ``n`` mostly sets how much editing a near duplicate may carry: one
  isolated word edit changes about ``n`` of ``N`` shingles, so at ``t = 0.8`` a text of
  ``N ~ 100`` shingles tolerates about ``N / (9 n)`` edits: 2 at ``n = 5`` (3.6 at 3, 1.5 at 7).
- LSH weights ``false_positive_weight = 0.1``, ``false_negative_weight = 0.9``: with the
  exact check a false positive only costs one verification, while a false negative is a
  missed duplicate; at threshold 0.8 and 128 permutations this gives 14 bands of 9 rows
  (S-curve midpoint ``(1/14)**(1/9) = 0.75``; a pair at exactly 0.8 is a candidate with
  probability 0.87, at 0.9 with 0.998; datatrove's 14 x 8 makes the same trade). Equal
  weights (datasketch's default) give 9 x 13, which misses ~17% of pairs spread uniformly
  over 0.8..1.0 (``benchmarks/minhash.py``: recall 0.81 against 0.98).

Memory per indexed document (``k = num_perm``, ``b`` bands, ``S`` distinct shingles, about
the word count): LSH table ``12 b`` bytes of entries plus 4-byte slots, 2 to 4 per distinct
band key (:class:`~distillery.dedup.lsh.BandTable`, at most ``28 b``); ``2 k`` bytes of
16-bit signature; ``8 S + 8`` bytes of shingle set when ``verify_jaccard``; one reference to
its id. For GSM8K-sized texts (~105 words, ``k = 128``, ``b = 14``) that is about
0.3 + 0.26 + 0.8 = 1.4 KB (measured 1,414 bytes allocated per kept document over 15k
documents; about 0.6 KB without the exact check). :meth:`NearDuplicateIndex.memory_bytes`
reports the allocated total.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distillery.dedup.growable import Growable
from distillery.dedup.jaccard import pair_jaccard, ragged_gather
from distillery.dedup.lsh import BandHasher, BandTable, Lookup, optimal_params, pairs_within
from distillery.dedup.shingles import ShingleBatch, Shingler
from distillery.dedup.signatures import MinHasher, estimate_jaccard
from distillery.dedup.unionfind import UnionFind

_SKETCH_CHUNK = 1024  # texts shingled at a time (keeps the byte buffers in cache)


@dataclass
class Sketch:
    """What the index computes from a batch of ``D`` texts before any lookup.

    Attributes:
        shingles: the shingle hashes per text.
        signatures: ``uint32`` array ``(D, num_perm)`` of MinHash values.
        keys: ``uint64`` array ``(D, bands)`` of LSH band keys.
    """

    shingles: ShingleBatch
    signatures: np.ndarray
    keys: np.ndarray

    def __len__(self) -> int:
        return len(self.signatures)

    def take(self, rows: np.ndarray | Sequence[int]) -> Sketch:
        """The sketch of the texts ``rows`` (in that order)."""
        rows = np.asarray(rows, dtype=np.int64)
        sb = self.shingles
        counts = sb.offsets[rows + 1] - sb.offsets[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        nonempty = rows[counts > 0]
        hashes = ragged_gather(sb.hashes, sb.offsets, nonempty) if len(nonempty) else sb.hashes[:0].copy()
        return Sketch(
            ShingleBatch(hashes, offsets, sb.num_words[rows]), self.signatures[rows], self.keys[rows]
        )


def _concat(sketches: list[Sketch]) -> Sketch:
    if len(sketches) == 1:
        return sketches[0]
    offsets = [np.zeros(1, dtype=np.int64)]
    total = 0
    for s in sketches:
        offsets.append(s.shingles.offsets[1:] + total)
        total += int(s.shingles.offsets[-1])
    return Sketch(
        ShingleBatch(
            np.concatenate([s.shingles.hashes for s in sketches]),
            np.concatenate(offsets),
            np.concatenate([s.shingles.num_words for s in sketches]),
        ),
        np.concatenate([s.signatures for s in sketches]),
        np.concatenate([s.keys for s in sketches]),
    )


@dataclass(frozen=True)
class Match:
    """A document found to be a near duplicate of an earlier one.

    Attributes:
        duplicate_of: id of the earlier (kept) document.
        jaccard: exact Jaccard similarity of the two shingle sets, or ``None`` when the
            index does not verify.
        estimated: MinHash estimate of the same similarity.
    """

    duplicate_of: Any
    jaccard: float | None
    estimated: float


@dataclass
class Clusters:
    """Near-duplicate clusters of a collection (:meth:`NearDuplicateIndex.cluster`).

    Attributes:
        labels: ``int64`` array ``(D,)``: each document's cluster, named by its first
            member (smallest position).
        keep: ``bool`` array ``(D,)``: the first member of each cluster.
        left, right: ``int64`` arrays ``(P,)``: the confirmed duplicate pairs, ``left < right``.
        jaccard: ``float64`` ``(P,)`` exact similarity of each pair (NaN when not verified).
        estimated: ``float64`` ``(P,)`` MinHash estimate of each pair.
    """

    labels: np.ndarray
    keep: np.ndarray
    left: np.ndarray
    right: np.ndarray
    jaccard: np.ndarray
    estimated: np.ndarray


class NearDuplicateIndex:
    """A streaming MinHash-LSH index of kept documents (see the module docstring).

    Args:
        threshold: Jaccard similarity at or above which two texts are near duplicates, in (0, 1).
        num_perm: MinHash signature length.
        ngram: words per shingle.
        seed: seed of every hash function; equal seeds give equal results on any machine.
        verify_jaccard: confirm candidates by exact Jaccard (else by the MinHash estimate).
        false_positive_weight, false_negative_weight: weights of :func:`optimal_params`.
        bands, rows: override the optimised ``(b, r)`` (both or neither).
        max_fanout: bucket fan-out bound inside a batch (:func:`~distillery.dedup.lsh.pairs_within`)
            and chain bound per band key in the index.

    Raises:
        ValueError: a parameter out of range, or ``bands * rows > num_perm``.

    Results are deterministic: the same texts in the same order give the same matches,
    whatever the batch sizes (up to the fan-out bounds, which only bind in buckets of more
    than ``max_fanout`` near-identical documents).
    """

    def __init__(
        self,
        threshold: float = 0.8,
        num_perm: int = 128,
        ngram: int = 5,
        seed: int = 1,
        verify_jaccard: bool = True,
        false_positive_weight: float = 0.1,
        false_negative_weight: float = 0.9,
        bands: int | None = None,
        rows: int | None = None,
        max_fanout: int = 32,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if (bands is None) != (rows is None):
            raise ValueError("give both bands and rows, or neither")
        if bands is None or rows is None:
            bands, rows = optimal_params(threshold, num_perm, false_positive_weight, false_negative_weight)
        elif bands < 1 or rows < 1 or bands * rows > num_perm:
            raise ValueError(f"need 1 <= bands * rows <= num_perm, got {bands} x {rows} with {num_perm}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.bands, self.rows = bands, rows
        self.verify_jaccard = verify_jaccard
        self.max_fanout = max_fanout
        self._shingler = Shingler(ngram, seed)
        self._minhasher = MinHasher(num_perm, seed)
        self._band_hasher = BandHasher(bands, rows, seed)
        self._table = BandTable()
        self._sigs = Growable(np.uint16, (num_perm,))
        self._hashes = Growable(np.uint64)
        self._offsets = Growable(np.int64)
        self._offsets.extend(np.zeros(1, dtype=np.int64))
        self._ids: list[Any] = []
        self._seen = 0  # documents passed to add() or insert(), for default ids

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[Any]:
        """Ids of the indexed documents, in insertion order (do not modify)."""
        return self._ids

    def memory_bytes(self) -> int:
        """Bytes allocated by the index's arrays plus 8 per id reference (ids themselves excluded)."""
        return (
            self._table.nbytes
            + self._sigs.nbytes
            + self._hashes.nbytes
            + self._offsets.nbytes
            + 8 * len(self._ids)
        )

    # -- sketches ---------------------------------------------------------------------
    def sketch(self, texts: Sequence[str]) -> Sketch:
        """Shingles, signatures and band keys of ``texts`` (no lookup, no state change)."""
        parts = []
        for lo in range(0, max(len(texts), 1), _SKETCH_CHUNK):
            sb = self._shingler.shingles(texts[lo : lo + _SKETCH_CHUNK])
            sigs = self._minhasher.signatures(sb)
            parts.append(Sketch(sb, sigs, self._band_hasher.keys(sigs)))
        return _concat(parts)

    def _as_sketch(self, batch: Sequence[str] | Sketch) -> Sketch:
        return batch if isinstance(batch, Sketch) else self.sketch(batch)

    # -- pair scoring -----------------------------------------------------------------
    def _score_within(self, sk: Sketch, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(exact or NaN, estimate) for pairs of rows of one sketch."""
        sig16 = sk.signatures.astype(np.uint16)
        est = estimate_jaccard(sig16[i], sig16[j], bits16=True)
        if not self.verify_jaccard:
            return np.full(len(i), np.nan), est
        sb = sk.shingles
        return pair_jaccard(sb.hashes, sb.offsets, i, sb.hashes, sb.offsets, j), est

    def _score_against_index(self, sk: Sketch, q: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(exact or NaN, estimate) for pairs (batch row ``q``, indexed document ``d``)."""
        est = estimate_jaccard(sk.signatures[q].astype(np.uint16), self._sigs.array[d], bits16=True)
        if not self.verify_jaccard:
            return np.full(len(q), np.nan), est
        sb = sk.shingles
        return pair_jaccard(sb.hashes, sb.offsets, q, self._hashes.array, self._offsets.array, d), est

    def _passes(self, exact: np.ndarray, est: np.ndarray) -> np.ndarray:
        return (exact if self.verify_jaccard else est) >= self.threshold

    # -- streaming API ----------------------------------------------------------------
    def match(self, batch: Sequence[str] | Sketch, ids: Sequence[Any] | None = None) -> list[Match | None]:
        """Find each document's near duplicate among indexed documents and earlier kept
        documents of the same batch, without changing the index.

        A document of the batch counts as kept (and can be matched by later ones) when it
        matches nothing itself. The match reported is the most similar kept document (exact
        Jaccard, or the estimate without verification); ties go to the earliest in input
        order, so the result does not depend on how a stream is cut into batches.

        Args:
            batch: texts, or their :meth:`sketch`.
            ids: ids of the batch's documents (for matches inside the batch); default: their
                input positions (documents passed to :meth:`add` or :meth:`insert` before them,
                plus their row).

        Returns:
            one entry per document: a :class:`Match`, or ``None`` for a document to keep.
        """
        sk = self._as_sketch(batch)
        ids = list(range(self._seen, self._seen + len(sk))) if ids is None else list(ids)
        if len(ids) != len(sk):
            raise ValueError(f"{len(ids)} ids for {len(sk)} documents")
        return self._match(sk, ids, self._table.lookup(sk.keys.ravel()))

    def _match(self, sk: Sketch, ids: list[Any], lookup: Lookup) -> list[Match | None]:
        d, n, b = len(sk), len(self), self.bands
        dup = np.full(d, -1, dtype=np.int64)  # matched document: index number, or n + batch row
        score = np.zeros(d)
        exact_of = np.full(d, np.nan)
        est_of = np.zeros(d)

        q, entry = self._table.entries(lookup, self.max_fanout)
        if len(q):
            code = np.unique((q // b) * n + entry // b)
            q, other = code // n, code % n
            exact, est = self._score_against_index(sk, q, other)
            ok = self._passes(exact, est)
            q, other, exact, est = q[ok], other[ok], exact[ok], est[ok]
            s = exact if self.verify_jaccard else est
            order = np.lexsort((other, -s, q))  # per document: best score, then earliest
            first = np.ones(len(order), dtype=bool)
            first[1:] = q[order][1:] != q[order][:-1]
            best = order[first]
            dup[q[best]] = other[best]
            score[q[best]], exact_of[q[best]], est_of[q[best]] = s[best], exact[best], est[best]

        i, j = pairs_within(sk.keys, self.max_fanout)
        if len(i):
            exact, est = self._score_within(sk, i, j)
            ok = self._passes(exact, est)
            i, j, exact, est = i[ok], j[ok], exact[ok], est[ok]
            s = exact if self.verify_jaccard else est
            order = np.lexsort((i, -s, j))  # by later document, best score, earliest partner
            decided = -1
            for a, c, ex, es, sc in zip(
                i[order].tolist(),
                j[order].tolist(),
                exact[order].tolist(),
                est[order].tolist(),
                s[order].tolist(),
                strict=True,
            ):
                # the first kept partner is c's best in the batch (a < c, so a is settled);
                # it wins over c's best indexed match only with a higher score
                if c == decided or dup[a] >= 0:
                    continue
                decided = c
                if dup[c] < 0 or sc > score[c]:
                    dup[c] = n + a
                    score[c], exact_of[c], est_of[c] = sc, ex, es

        out: list[Match | None] = [None] * d
        for row in np.flatnonzero(dup >= 0).tolist():
            m = int(dup[row])
            other_id = self._ids[m] if m < n else ids[m - n]
            ex = float(exact_of[row])
            out[row] = Match(other_id, None if np.isnan(ex) else ex, float(est_of[row]))
        return out

    def insert(self, batch: Sequence[str] | Sketch, ids: Sequence[Any] | None = None) -> None:
        """Index every document of ``batch`` (whether or not it duplicates one already there).

        Args:
            batch: texts, or their :meth:`sketch`.
            ids: their ids; default: their input positions (see :meth:`match`).
        """
        sk = self._as_sketch(batch)
        ids = list(range(self._seen, self._seen + len(sk))) if ids is None else list(ids)
        self._insert(sk, ids, None)

    def _insert(self, sk: Sketch, ids: list[Any], lookup: Lookup | None) -> None:
        if len(ids) != len(sk):
            raise ValueError(f"{len(ids)} ids for {len(sk)} documents")
        self._table.insert(sk.keys.ravel(), lookup)
        self._sigs.extend(sk.signatures.astype(np.uint16))
        if self.verify_jaccard:
            self._hashes.extend(sk.shingles.hashes)
            self._offsets.extend(sk.shingles.offsets[1:] + self._offsets.array[-1])
        self._ids.extend(ids)
        self._seen += len(ids)

    def add(self, batch: Sequence[str] | Sketch, ids: Sequence[Any] | None = None) -> list[Match | None]:
        """:meth:`match` the batch, then :meth:`insert` the documents that matched nothing.

        The streaming deduplication step: feeding a collection in batches of any size gives
        the same result as one batch.
        """
        sk = self._as_sketch(batch)
        ids = list(range(self._seen, self._seen + len(sk))) if ids is None else list(ids)
        if len(ids) != len(sk):
            raise ValueError(f"{len(ids)} ids for {len(sk)} documents")
        b = self.bands
        self._table.reserve(len(sk) * b)  # so that the lookup stays valid for the insert
        lookup = self._table.lookup(sk.keys.ravel())
        matches = self._match(sk, ids, lookup)
        keep = np.array([r for r, m in enumerate(matches) if m is None], dtype=np.int64)
        if len(keep) == len(sk):
            self._insert(sk, ids, lookup)
        elif len(keep):
            rows = (keep[:, None] * b + np.arange(b)).ravel()
            kept = Lookup(lookup.pos[rows], lookup.head[rows], lookup.version)
            self._insert(sk.take(keep), [ids[r] for r in keep.tolist()], kept)
        self._seen += len(sk) - len(keep)
        return matches

    # -- one-shot clustering ----------------------------------------------------------
    def cluster(self, batch: Sequence[str] | Sketch) -> Clusters:
        """Near-duplicate clusters of a whole collection (does not touch the index).

        Every candidate pair inside the collection is scored; confirmed pairs are merged by
        union-find, so clusters are transitive, and each is named by its first document.
        """
        sk = self._as_sketch(batch)
        d = len(sk)
        i, j = pairs_within(sk.keys, self.max_fanout)
        exact, est = self._score_within(sk, i, j)
        ok = self._passes(exact, est)
        i, j, exact, est = i[ok], j[ok], exact[ok], est[ok]
        uf = UnionFind(d)
        for a, c in zip(i.tolist(), j.tolist(), strict=True):
            uf.union(a, c)
        labels = uf.labels()
        return Clusters(labels, labels == np.arange(d), i, j, exact, est)
