"""MinHash signatures of shingle sets, computed for a whole batch at once with numpy.

MinHash (Broder, "On the resemblance and containment of documents", 1997): for ``k``
random hash functions ``h_i``, the signature of a set ``A`` is ``(min_{x in A} h_i(x))_i``
and ``P[sig_i(A) = sig_i(B)] = J(A, B)`` (Jaccard similarity), so the fraction of equal
entries estimates ``J`` with standard deviation ``sqrt(J (1 - J) / k)``.

Hash family: ``h_i(x) = a_i * x mod 2**32`` with random odd ``a_i`` (multiplicative
hashing, Knuth TAOCP vol. 3 section 6.4; Dietzfelbinger et al., J. Algorithms 1997), applied
to the 32-bit fingerprint ``x`` (top 32 bits) of each 64-bit shingle hash. Each ``h_i`` is a
bijection of the 32-bit words and the fingerprints are already pseudo-random (see
:mod:`distillery.dedup.shingles`), so every ``sig_i`` is the minimum of independent uniform
values and ``P[sig_i(A) = sig_i(B)] = J``; the approximation is only in the independence
across ``i``, which simulation confirms (the estimator's mean and spread match ``J`` and
``sqrt(J (1 - J) / k)``; see ``tests/test_minhash.py``). An additive ``b_i`` would cost a
pass and change nothing that matters here: differences ``h_i(x) - h_i(y)`` are the same.
It runs on 32-bit SIMD lanes: an outer product ``(k, S)`` per chunk of about 8k shingles,
then ``np.minimum.reduceat`` over each document's segment (~4 us per 100-shingle document
at ``k = 128`` on one core).

Stored signatures may keep only their low 16 bits (b-bit minwise hashing, Li & Koenig,
"b-Bit Minwise Hashing", WWW 2010): two unequal values agree on 16 bits with probability
``2**-16``, which :func:`estimate_jaccard` corrects for.
"""

from __future__ import annotations

import numpy as np

from distillery.dedup.shingles import ShingleBatch

EMPTY = np.uint32(0xFFFFFFFF)  # every entry of the signature of an empty set
# shingles per outer product ((k, 8192) uint32 = 4 MiB at k = 128); numpy's uint32 multiply
# measured 4x slower per element on chunks of <= 2048 columns than on >= 3000
_CHUNK_SHINGLES = 8192
_B16 = 2.0**-16


class MinHasher:
    """Computes ``k = num_perm`` MinHash values per document.

    Args:
        num_perm: signature length ``k >= 1``.
        seed: seed of the multipliers ``a_i``; equal seeds give equal signatures on any machine.

    Raises:
        ValueError: ``num_perm < 1``.
    """

    def __init__(self, num_perm: int = 128, seed: int = 1) -> None:
        if num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {num_perm}")
        self.num_perm = num_perm
        rng = np.random.default_rng([seed, 5])
        self._a = rng.integers(0, 2**32, size=(num_perm, 1), dtype=np.uint32) | np.uint32(1)
        self._buffer: np.ndarray | None = None

    def _work(self, width: int) -> np.ndarray:
        """A ``(k, width)`` scratch buffer, kept between calls: a fresh 4 MiB buffer per
        small batch would cost more in page faults than the hashing itself."""
        if self._buffer is None or self._buffer.shape[1] < width:
            self._buffer = np.empty((self.num_perm, max(width, _CHUNK_SHINGLES)), dtype=np.uint32)
        return self._buffer[:, :width]

    def signatures(self, batch: ShingleBatch) -> np.ndarray:
        """MinHash signatures of every document of ``batch``.

        Returns:
            ``uint32`` array ``(D, num_perm)``; a document without shingles gets
            :data:`EMPTY` everywhere.
        """
        offsets = batch.offsets
        d = len(offsets) - 1
        out = np.full((d, self.num_perm), EMPTY, dtype=np.uint32)
        nonempty = np.flatnonzero(offsets[1:] > offsets[:-1])
        if not len(nonempty):
            return out
        fp = (batch.hashes >> np.uint64(32)).astype(np.uint32)
        starts = offsets[nonempty]
        ends = offsets[nonempty + 1]
        total = int(ends[-1] - starts[0])
        width = max(-(-total // -(-total // _CHUNK_SHINGLES)), int((ends - starts).max()))  # equal chunks
        work = self._work(width)
        i = 0
        while i < len(nonempty):
            # documents [i, j) whose shingles fit in one chunk (at least one document)
            j = int(np.searchsorted(ends, starts[i] + work.shape[1], side="right"))
            j = max(j, i + 1)
            lo, hi = int(starts[i]), int(ends[j - 1])
            h = work[:, : hi - lo]
            np.multiply(self._a, fp[lo:hi], out=h)
            out[nonempty[i:j]] = np.minimum.reduceat(h, starts[i:j] - lo, axis=1).T
            i = j
        return out


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray, bits16: bool = False) -> np.ndarray:
    """Estimated Jaccard similarity of signature rows ``sig_a[i]`` and ``sig_b[i]``.

    Args:
        sig_a, sig_b: arrays ``(P, k)`` (or ``(k,)``) of MinHash values.
        bits16: the values are 16-bit truncations; applies the b-bit correction
            ``(E - 2**-16) / (1 - 2**-16)`` (Li & Koenig, 2010).

    Returns:
        ``float64`` array ``(P,)`` (or a scalar array) in ``[0, 1]``.
    """
    equal = np.count_nonzero(sig_a == sig_b, axis=-1) / sig_a.shape[-1]
    if bits16:
        equal = np.clip((equal - _B16) / (1.0 - _B16), 0.0, 1.0)
    return equal
