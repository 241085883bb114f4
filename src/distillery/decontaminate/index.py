"""Indexes of benchmark text that find overlapping spans in candidate (training) text.

Two methods:

- :class:`NgramIndex`: word n-gram overlap, the method of the GPT-3 paper (Brown et al.,
  2020, appendix C: 13-grams) and of later decontamination analyses (8-grams in the
  Llama 2 report). Words and n-grams are those of :func:`distillery.text.words` and
  :func:`distillery.text.word_ngrams`. A benchmark text shorter than ``n`` words is
  indexed as one n-gram made of the whole text (so a short item still matches when a
  candidate contains it entirely); candidates are scanned at every such length too.
- :class:`SubstringIndex`: the GPT-4 technical report's check (OpenAI, 2023, appendix C):
  spaces and symbols are removed from both sides, three random 50-character substrings
  of each evaluation example (the whole example if shorter) are sampled, and a training
  text matches when it contains one of them. Here "removing spaces and symbols" keeps the
  word characters of :func:`distillery.text.words` (normalised letters, digits and ``_``).

Both hash every window of the candidate stream with numpy (:mod:`.hashing`), look the
hashes up in a sorted key array behind a bitmap filter, and confirm each hash hit by
comparing the real words or characters, so a hash collision never yields a hit.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from distillery.decontaminate.hashing import (
    P_CHAR,
    P_WORD,
    TokenBatch,
    prefix_sums,
    tokenize,
    windows_from_prefix,
)
from distillery.text import normalize, word_ngrams, word_spans, words


@dataclass(frozen=True)
class Hit:
    """One overlap between a candidate text and one benchmark item.

    Overlapping or adjacent matched windows of the same item are merged into one hit.

    Attributes:
        benchmark: benchmark name, e.g. ``"gsm8k_test"``.
        item_id: the benchmark item's id, e.g. ``"gsm8k-test-17"``.
        start, end: ``[start, end)`` character offsets of the matching span in the
            candidate (offsets of :func:`distillery.text.word_spans`: the original text
            unless NFKC normalisation changed its length, then the normalised text).
        text: the candidate's text over that span.
        ngram: the first matched key: the n-gram's words joined by spaces, or the
            matched 50-character substring.
        count: number of matched windows (n-grams or substrings) merged into this hit.
    """

    benchmark: str
    item_id: str
    start: int
    end: int
    text: str
    ngram: str
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the hit."""
        return asdict(self)


@dataclass
class Matches:
    """What an index found in one candidate text.

    Attributes:
        hits: merged hits, ordered by ``start``.
        matched: number of distinct windows of the candidate (position and length) found
            in the index; a window shared by several items counts once.
    """

    hits: list[Hit] = field(default_factory=list)
    matched: int = 0


class _Table:
    """Sorted 64-bit keys of one window length behind a bitmap prefilter."""

    def __init__(self, keys: np.ndarray, bits: int) -> None:
        self.keys = np.unique(keys)
        size = max(len(self.keys), 1)
        filter_bits = min(bits, max(10, min(27, math.ceil(math.log2(size)) + 5)))
        self.shift = np.uint64(bits - filter_bits)
        self.bitmap = np.zeros(1 << filter_bits, dtype=bool)
        self.bitmap[self.keys >> self.shift] = True

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Positions ``i`` with ``hashes[i]`` among the keys (``int64`` array)."""
        cand = np.flatnonzero(self.bitmap[hashes >> self.shift])
        if not cand.size:
            return cand
        values = hashes[cand]
        pos = np.searchsorted(self.keys, values)
        np.minimum(pos, len(self.keys) - 1, out=pos)
        return cand[self.keys[pos] == values]


class _WindowIndex:
    """Shared mechanism of :class:`NgramIndex` and :class:`SubstringIndex`.

    Subclasses say what a unit is (a word, a character), how benchmark texts become keys,
    and how a candidate's units map back to character offsets.
    """

    _p: ClassVar[int] = P_WORD
    _chars: ClassVar[bool] = False

    def __init__(self, *, hash_bits: int = 64, chunk_chars: int = 1 << 20) -> None:
        if not 1 <= hash_bits <= 64:
            raise ValueError(f"hash_bits must be in 1..64, got {hash_bits}")
        self.hash_bits = hash_bits
        self.label = "overlap"
        self.chunk_chars = chunk_chars
        self.stats: Counter = Counter()
        self._items: list[tuple[str, str]] = []
        self._pending: list[tuple[int, str]] = []
        self._keys: dict[int, list[np.ndarray]] = defaultdict(list)
        self._exact: dict[int, dict[Hashable, list[int]]] = defaultdict(dict)
        self._tables: dict[int, _Table] | None = None

    # -- building ------------------------------------------------------------------
    def add(self, benchmark: str, item_id: str, text: str) -> None:
        """Index one benchmark item's text. Items may repeat an id (several texts per item)."""
        self._items.append((benchmark, str(item_id)))
        self._pending.append((len(self._items) - 1, text))
        self._tables = None

    def add_items(self, benchmark: str, items: Iterable[tuple[str, str]]) -> int:
        """Index ``(item_id, text)`` pairs of ``benchmark``; returns how many were added."""
        count = 0
        for item_id, text in items:
            self.add(benchmark, item_id, text)
            count += 1
        return count

    @property
    def benchmarks(self) -> list[str]:
        """Names of the indexed benchmarks, sorted."""
        return sorted({b for b, _ in self._items})

    @property
    def lengths(self) -> list[int]:
        """Window lengths present in the index (``n`` and the lengths of short items)."""
        self.freeze()
        return sorted(self._exact)

    def __len__(self) -> int:
        """Number of distinct keys (n-grams or substrings) indexed."""
        self.freeze()
        return sum(len(d) for d in self._exact.values())

    def freeze(self) -> None:
        """Hash pending benchmark texts and build the lookup tables (done by :meth:`find`)."""
        if self._pending:
            pending, self._pending = self._pending, []
            for lo, hi in self._chunks([text for _, text in pending]):
                part = pending[lo:hi]
                self._index_batch([i for i, _ in part], [t for _, t in part])
        if self._tables is None:
            self._tables = {
                length: _Table(np.concatenate(keys), self.hash_bits) for length, keys in self._keys.items()
            }

    def _add_keys(self, length: int, hashes: np.ndarray, keys: Sequence[Hashable], item: int) -> None:
        self._keys[length].append(self._reduce(hashes))
        exact = self._exact[length]
        for key in keys:
            postings = exact.get(key)
            if postings is None:
                exact[key] = [item]
            elif postings[-1] != item:
                postings.append(item)

    def _reduce(self, hashes: np.ndarray) -> np.ndarray:
        if self.hash_bits == 64:
            return hashes
        return hashes >> np.uint64(64 - self.hash_bits)

    def _chunks(self, texts: Sequence[str]) -> Iterable[tuple[int, int]]:
        lo, size = 0, 0
        for i, text in enumerate(texts):
            size += len(text)
            if size >= self.chunk_chars:
                yield lo, i + 1
                lo, size = i + 1, 0
        if lo < len(texts):
            yield lo, len(texts)

    # -- querying ------------------------------------------------------------------
    def find(self, texts: Sequence[str]) -> list[Matches]:
        """Find benchmark overlaps in each of ``texts``.

        Args:
            texts: candidate texts (any number; processed in chunks of about
                ``chunk_chars`` characters per numpy call).

        Returns:
            One :class:`Matches` per text, in order.

        Raises:
            RuntimeError: the vectorised word splitter disagreed with
                :func:`distillery.text.words` (a bug, never a data problem).
        """
        self.freeze()
        texts = list(texts)
        results = [Matches() for _ in texts]
        assert self._tables is not None
        for lo, hi in self._chunks(texts):
            chunk = texts[lo:hi]
            values, offsets = self._stream(tokenize(chunk, chars=self._chars))
            prefix, inv = prefix_sums(values, self._p)
            found: dict[int, list[tuple[int, int]]] = defaultdict(list)
            for length, table in self._tables.items():
                pos = table.lookup(self._reduce(windows_from_prefix(prefix, inv, length)))
                if not pos.size:
                    continue
                text_idx = np.searchsorted(offsets, pos, side="right") - 1
                local = pos - offsets[text_idx]
                inside = local + length <= offsets[text_idx + 1] - offsets[text_idx]
                self.stats["hash_hits"] += int(inside.sum())
                for t, a in zip(text_idx[inside].tolist(), local[inside].tolist(), strict=True):
                    found[t].append((a, length))
            for t, windows in found.items():
                results[lo + t] = self._confirm(chunk[t], windows, int(offsets[t + 1] - offsets[t]))
        return results

    def _confirm(self, text: str, windows: list[tuple[int, int]], expected_units: int) -> Matches:
        seq, unit_start, unit_end, source = self._units(text)
        if len(seq) != expected_units:
            raise RuntimeError(
                f"vectorised splitter found {expected_units} units, distillery.text found {len(seq)}: {text[:80]!r}"
            )
        per_item: dict[int, list[tuple[int, int, Hashable]]] = defaultdict(list)
        matched = 0
        for a, length in windows:
            key = self._key(seq, a, a + length)
            postings = self._exact[length].get(key)
            if postings is None:
                self.stats["collisions"] += 1
                continue
            matched += 1
            for item in postings:
                per_item[item].append((a, a + length, key))
        self.stats["confirmed"] += matched
        hits = []
        for item, spans in per_item.items():
            spans.sort(key=lambda s: (s[0], s[1]))
            benchmark, item_id = self._items[item]
            a, b, first = spans[0]
            count = 1
            for s, e, key in spans[1:]:
                if s <= b:
                    b = max(b, e)
                    count += 1
                    continue
                hits.append(self._hit(benchmark, item_id, a, b, first, count, unit_start, unit_end, source))
                a, b, first, count = s, e, key, 1
            hits.append(self._hit(benchmark, item_id, a, b, first, count, unit_start, unit_end, source))
        hits.sort(key=lambda h: (h.start, h.benchmark, h.item_id))
        return Matches(hits, matched)

    def _hit(
        self,
        benchmark: str,
        item_id: str,
        a: int,
        b: int,
        key: Hashable,
        count: int,
        unit_start: Sequence[int],
        unit_end: Sequence[int],
        source: str,
    ) -> Hit:
        start, end = int(unit_start[a]), int(unit_end[b - 1])
        return Hit(benchmark, item_id, start, end, source[start:end], self._key_text(key), count)

    # -- what subclasses define ----------------------------------------------------
    def _index_batch(self, items: list[int], texts: list[str]) -> None:
        raise NotImplementedError

    def _stream(self, batch: TokenBatch) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _units(self, text: str) -> tuple[Sequence, Sequence[int], Sequence[int], str]:
        raise NotImplementedError

    def _key(self, seq: Sequence, a: int, b: int) -> Hashable:
        raise NotImplementedError

    def _key_text(self, key: Hashable) -> str:
        raise NotImplementedError


def _source(text: str) -> str:
    """The string that :func:`distillery.text.word_spans` offsets index."""
    norm = normalize(text)
    return text if len(norm) == len(text) else norm


class NgramIndex(_WindowIndex):
    """Word n-gram index of benchmark texts (GPT-3 paper, appendix C; default ``n = 13``).

    Args:
        n: n-gram length in words (13 by default; 8 is the other common choice).
        hash_bits: bits of hash kept per window (64; fewer only to test collision safety).
        chunk_chars: characters of candidate text per vectorised batch.

    Example::

        index = NgramIndex(13)
        index.add_items("gsm8k_test", load_benchmark("gsm8k_test"))
        matches = index.find(texts)          # one Matches per text
    """

    _p = P_WORD
    _chars = False

    def __init__(self, n: int = 13, *, hash_bits: int = 64, chunk_chars: int = 1 << 20) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        super().__init__(hash_bits=hash_bits, chunk_chars=chunk_chars)
        self.n = n
        self.label = f"{n}-gram overlap"

    def _index_batch(self, items: list[int], texts: list[str]) -> None:
        batch = tokenize(texts)
        prefix, inv = prefix_sums(batch.word_hash, P_WORD)
        by_length: dict[int, np.ndarray] = {}
        offsets = batch.word_offsets.tolist()
        for k, (item, text) in enumerate(zip(items, texts, strict=True)):
            ws = words(text)
            a, b = offsets[k], offsets[k + 1]
            if len(ws) != b - a:
                raise RuntimeError(
                    f"vectorised splitter disagrees with distillery.text.words on {text[:80]!r}"
                )
            if not ws:
                continue
            length = min(len(ws), self.n)
            if length not in by_length:
                by_length[length] = windows_from_prefix(prefix, inv, length)
            grams = list(word_ngrams(ws, length)) if len(ws) >= self.n else [tuple(ws)]
            self._add_keys(length, by_length[length][a : a + len(grams)], grams, item)

    def _stream(self, batch: TokenBatch) -> tuple[np.ndarray, np.ndarray]:
        return batch.word_hash, batch.word_offsets

    def _units(self, text: str) -> tuple[Sequence, Sequence[int], Sequence[int], str]:
        ws, spans = word_spans(text)
        return ws, [s for s, _ in spans], [e for _, e in spans], _source(text)

    def _key(self, seq: Sequence, a: int, b: int) -> Hashable:
        return tuple(seq[a:b])

    def _key_text(self, key: Hashable) -> str:
        return " ".join(key)  # type: ignore[arg-type]


class SubstringIndex(_WindowIndex):
    """Random-substring index of benchmark texts (GPT-4 Technical Report, OpenAI 2023, appendix C).

    Each benchmark text is reduced to its word characters (``"".join(words(text))``:
    spaces and symbols removed, NFKC lower-cased); ``samples`` substrings of ``length``
    characters are drawn at random (the whole reduced text when it is not longer than
    ``length``). A candidate matches when its reduced text contains one of them.

    Args:
        length: substring length in characters (50 in the report).
        samples: substrings drawn per benchmark text (3 in the report).
        seed: sampling seed; draws depend only on ``(seed, benchmark, item_id, text length)``,
            so they do not change with the order items are added in.
        hash_bits, chunk_chars: as for :class:`NgramIndex`.
    """

    _p = P_CHAR
    _chars = True

    def __init__(
        self,
        length: int = 50,
        samples: int = 3,
        seed: int = 0,
        *,
        hash_bits: int = 64,
        chunk_chars: int = 1 << 20,
    ) -> None:
        if length < 1 or samples < 1:
            raise ValueError(f"length and samples must be >= 1, got {length}, {samples}")
        super().__init__(hash_bits=hash_bits, chunk_chars=chunk_chars)
        self.length, self.samples, self.seed = length, samples, seed
        self.label = f"{length}-char substring match"

    def sample_starts(self, benchmark: str, item_id: str, size: int) -> list[int]:
        """Sorted start offsets of the substrings drawn from a reduced text of ``size`` characters."""
        if size <= self.length:
            return [0]
        rng = random.Random(f"{self.seed}\x00{benchmark}\x00{item_id}\x00{size}")
        choices = size - self.length + 1
        return sorted(rng.sample(range(choices), min(self.samples, choices)))

    def _index_batch(self, items: list[int], texts: list[str]) -> None:
        batch = tokenize(texts, chars=True)
        assert batch.char_value is not None and batch.char_offsets is not None
        prefix, inv = prefix_sums(batch.char_value, P_CHAR)
        by_length: dict[int, np.ndarray] = {}
        offsets = batch.char_offsets.tolist()
        for k, (item, text) in enumerate(zip(items, texts, strict=True)):
            compact = "".join(words(text))
            a = offsets[k]
            if len(compact) != offsets[k + 1] - a:
                raise RuntimeError(
                    f"vectorised splitter disagrees with distillery.text.words on {text[:80]!r}"
                )
            if not compact:
                continue
            benchmark, item_id = self._items[item]
            starts = self.sample_starts(benchmark, item_id, len(compact))
            length = min(len(compact), self.length)
            if length not in by_length:
                by_length[length] = windows_from_prefix(prefix, inv, length)
            keys = [compact[s : s + length] for s in starts]
            self._add_keys(length, by_length[length][a + np.asarray(starts)], keys, item)

    def _stream(self, batch: TokenBatch) -> tuple[np.ndarray, np.ndarray]:
        assert batch.char_value is not None and batch.char_offsets is not None
        return batch.char_value, batch.char_offsets

    def _units(self, text: str) -> tuple[Sequence, Sequence[int], Sequence[int], str]:
        ws, spans = word_spans(text)
        starts = [s + k for w, (s, _) in zip(ws, spans, strict=True) for k in range(len(w))]
        return "".join(ws), starts, [s + 1 for s in starts], _source(text)

    def _key(self, seq: Sequence, a: int, b: int) -> Hashable:
        return seq[a:b]

    def _key_text(self, key: Hashable) -> str:
        return str(key)


ContaminationIndex = NgramIndex | SubstringIndex
"""Either index type (both offer ``add``, ``add_items``, ``find``, ``label``, ``stats``)."""
