"""``dedup: semantic``: reject records whose meaning duplicates an earlier kept record.

SemDeDup (Abbas, Tirumala, Simig, Ganguli & Morcos, "SemDeDup: Data-efficient learning at
web-scale through semantic deduplication", 2023): texts are embedded with a sentence
encoder (:mod:`distillery.dedup.embed`, default all-MiniLM-L6-v2), and two texts are
semantic duplicates when the cosine similarity of their embeddings is at least
``threshold`` (the paper's ``1 - eps``; it uses ``> 1 - eps``, a difference of measure zero).

Two forms:

- the streaming stage :class:`SemanticDedup`: each record is compared with every record
  kept so far (an exact inner-product index, faiss ``IndexFlatIP``, over unit embeddings)
  and with the earlier kept records of its own batch; the first record of a duplicate
  group is kept (greedy, in input order), like ``dedup: exact`` and ``dedup: minhash``.
- the offline :func:`semdedup` over a whole collection, the paper's algorithm: spherical
  k-means (faiss) into ``k`` clusters, then within each cluster, members ordered by a
  keep rule, member ``j`` is removed when its similarity to some member before it reaches
  the threshold. Cost ``O(n k d)`` per k-means iteration plus ``O(sum_c m_c**2 d)`` within
  clusters, instead of ``O(n**2 d)``. The paper misses pairs split across clusters
  (duplicates lie within ``acos(threshold)`` of each other, 18 degrees at 0.95, so only
  near boundaries); searching each document's 2 nearest clusters (``probes = 2``) recovers them.

Both agree on collections whose duplicate groups are cliques (every member similar to
every other, e.g. paraphrases of one text); on chains (``a ~ b ~ c``, ``a !~ c``) the stage
keeps ``a`` and ``c`` while the paper's rule removes ``b`` and ``c``.

Memory of the stage: ``4 d`` bytes per kept record (1,536 bytes at ``d = 384``) plus one
reference to its id; the index is searched exhaustively (``O(N d)`` per query; a batch of
1,000 records against 10k kept ones takes about 0.13 s of one core, embedding aside). Working memory per batch is
bounded by the embedding batch and ``1024 x B`` similarities for a batch of ``B`` records.

Determinism: the same records in the same batches give the same decisions. Embeddings
depend at the ``1e-6`` level on which texts share a forward pass (padding), so a similarity
within that distance of the threshold may decide differently after a resume re-embeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import faiss
import numpy as np
from pydantic import Field

from distillery.dedup.embed import DEFAULT_MODEL, EmbeddingModelError, embed, load_embedding_model
from distillery.errors import RecipeError
from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import BuildContext, Check, Stage
from distillery.records import record_text
from distillery.registry import register

_BLOCK = 1024  # rows of a similarity block (a block holds _BLOCK x columns float32 values)


@register("dedup")
class SemanticDedupConfig(StageConfig):
    """Recipe entry of semantic deduplication (SemDeDup, Abbas et al., 2023).

    Attributes:
        model: sentence-transformers model: a folder, or a Hub name (needs network unless
            cached); the default resolves to the packaged all-MiniLM-L6-v2
            (:func:`distillery.dedup.embed.default_embedding_model_path`).
        threshold: cosine similarity at or above which a record duplicates an earlier kept one
            (SemDeDup's ``1 - eps``).
        fields: the record text embedded (see :func:`distillery.records.record_text`).
        batch_size: texts per embedding forward pass.
        device: torch device of the model (``"cpu"``, ``"cuda"``).
    """

    type: Literal["semantic"] = "semantic"
    model: str = DEFAULT_MODEL
    threshold: float = Field(0.95, gt=0.0, le=1.0)
    fields: list[str] = ["prompt", "response"]
    batch_size: int = Field(64, ge=1)
    device: str = "cpu"

    @property
    def inputs(self) -> tuple[str, ...]:
        """The text fields it reads."""
        return tuple(self.fields)

    def build(self, ctx: BuildContext) -> SemanticDedup:
        try:
            model = load_embedding_model(self.model, self.device, ctx.base_dir)
        except EmbeddingModelError as exc:
            raise RecipeError(f"dedup {self.name or 'semantic'}: model: {exc}") from exc
        return SemanticDedup(self, model)


class SemanticIndex:
    """Unit embeddings of kept documents, searched exactly by inner product (= cosine).

    Args:
        dim: embedding dimension ``d``.
        threshold: cosine similarity at or above which two documents are duplicates.
    """

    def __init__(self, dim: int, threshold: float) -> None:
        self.dim, self.threshold = dim, threshold
        self._index = faiss.IndexFlatIP(dim)
        self._ids: list[Any] = []

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[Any]:
        """Ids of the indexed documents, in insertion order."""
        return self._ids

    def memory_bytes(self) -> int:
        """Bytes of stored embeddings: ``4 * dim`` per document (ids not counted)."""
        return 4 * self.dim * len(self._ids)

    def match(self, x: np.ndarray, ids: Sequence[Any]) -> list[tuple[Any, float] | None]:
        """Each document's most similar earlier kept document, if at or above the threshold.

        Compares document ``j`` of the batch with every indexed document and with the
        documents ``i < j`` of the batch that match nothing themselves (greedy keep-first);
        the index is not changed. Ties go to the indexed document, then to the earliest.

        Args:
            x: ``float32`` array ``(B, dim)`` of unit embeddings.
            ids: the ``B`` documents' ids.

        Returns:
            per document ``None`` (kept) or ``(id of the duplicate's original, cosine)``.
        """
        b, n, t = len(x), len(self._ids), self.threshold
        dup = np.full(b, -1, dtype=np.int64)  # an index row, or n + batch row
        score = np.full(b, -np.inf, dtype=np.float32)
        if n and b:
            sims, rows = self._index.search(x, 1)
            hit = sims[:, 0] >= t
            dup[hit], score[hit] = rows[hit, 0], sims[hit, 0]
        later, earlier, s = _pairs_above(x, t)
        if len(later):
            kept = dup < 0  # final for every row without an in-batch candidate
            order = np.lexsort((earlier, -s, later))  # by later row, best score, earliest partner
            later, earlier, s = later[order], earlier[order], s[order]
            starts = np.flatnonzero(np.r_[True, later[1:] != later[:-1]])
            for lo, hi in zip(starts.tolist(), [*starts[1:].tolist(), len(later)], strict=True):
                j = int(later[lo])
                for k in range(lo, hi):  # partners are earlier rows, already settled
                    i = int(earlier[k])
                    if kept[i]:
                        if float(s[k]) > score[j]:
                            dup[j], score[j] = n + i, s[k]
                        break
                kept[j] = dup[j] < 0
        out: list[tuple[Any, float] | None] = [None] * b
        for row in np.flatnonzero(dup >= 0).tolist():
            m = int(dup[row])
            out[row] = (self._ids[m] if m < n else ids[m - n], float(score[row]))
        return out

    def insert(self, x: np.ndarray, ids: Sequence[Any]) -> None:
        """Index unit embeddings ``x`` (``(B, dim)``) with their ``ids``."""
        if len(x) != len(ids):
            raise ValueError(f"{len(ids)} ids for {len(x)} embeddings")
        if len(x):
            self._index.add(np.ascontiguousarray(x, dtype=np.float32))
            self._ids.extend(ids)


def _pairs_above(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(j, i, cos)`` with ``i < j`` and ``x[j] @ x[i] >= threshold``, by row blocks."""
    js, is_, ss = [], [], []
    for lo in range(0, len(x), _BLOCK):
        hi = min(lo + _BLOCK, len(x))
        sim = x[lo:hi] @ x[:hi].T
        sim[np.arange(lo, hi)[:, None] <= np.arange(hi)[None, :]] = -np.inf  # keep i < j
        j, i = np.nonzero(sim >= threshold)
        js.append(j + lo)
        is_.append(i)
        ss.append(sim[j, i])
    if not js:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.float32)
    return np.concatenate(js), np.concatenate(is_), np.concatenate(ss)


class SemanticDedup(Stage):
    """Rejects records whose embedding has cosine ``>= threshold`` with an earlier kept record.

    ``check_batch`` embeds the batch and searches the index of committed records and the
    earlier passing records of the batch, without changing the index; ``commit`` indexes
    the records finally accepted (reusing the batch's embeddings when it can).

    Args:
        config: the recipe entry.
        model: a loaded sentence-transformers model (see :func:`~distillery.dedup.embed.embed`).
    """

    kind = "dedup"
    cost = 50.0
    stateful = True

    def __init__(self, config: SemanticDedupConfig, model: Any) -> None:
        super().__init__(config.stage_name)
        self.config = config
        self.model = model
        self.index: SemanticIndex | None = None
        self._last: tuple[dict[Any, int], list[str], np.ndarray] | None = None

    def _embed(self, texts: list[str]) -> np.ndarray:
        x = embed(self.model, texts, self.config.batch_size)
        if self.index is None:
            self.index = SemanticIndex(x.shape[1], self.config.threshold)
        return x

    def check_batch(self, records: list[dict[str, Any]]) -> list[Check]:
        texts = [record_text(r, self.config.fields) for r in records]
        ids = [r["id"] for r in records]
        x = self._embed(texts)
        assert self.index is not None
        self._last = ({rid: row for row, rid in enumerate(ids)}, texts, x)
        t = self.config.threshold
        checks = []
        for m in self.index.match(x, ids):
            if m is None:
                checks.append(Check(True))
            else:
                other, cos = m
                reason = f"semantic_duplicate: cosine {cos:.2f} >= {t} with {other}"
                checks.append(Check(False, reason, {"duplicate_of": other, "cosine": round(cos, 4)}))
        return checks

    def commit(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        texts = [record_text(r, self.config.fields) for r in records]
        ids = [r["id"] for r in records]
        x = None
        if self._last is not None:
            where, last_texts, last_x = self._last
            rows = [where.get(rid) for rid in ids]
            if all(r is not None and last_texts[r] == text for r, text in zip(rows, texts, strict=True)):
                x = last_x[np.asarray(rows, dtype=np.int64)]
        if x is None:
            x = self._embed(texts)
        assert self.index is not None
        self.index.insert(x, ids)
        self._last = None


# -- offline SemDeDup over a whole collection ------------------------------------------------


@dataclass
class SemDeDupResult:
    """Outcome of :func:`semdedup` on ``n`` documents.

    Attributes:
        keep: ``bool`` array ``(n,)``: documents kept.
        duplicate_of: ``int64`` array ``(n,)``: for a removed document, the input position of
            its most similar document ranked before it (it may itself be removed, as in the
            paper); ``-1`` for kept ones.
        cosine: ``float32`` array ``(n,)``: highest cosine similarity to a document ranked
            before it in the clusters searched (``nan`` when there is none).
        labels: ``int64`` array ``(n,)``: k-means cluster (nearest centroid) of each document.
        n_clusters: ``k``.
    """

    keep: np.ndarray
    duplicate_of: np.ndarray
    cosine: np.ndarray
    labels: np.ndarray
    n_clusters: int

    @property
    def duplicates(self) -> int:
        """Number of documents removed."""
        return int((~self.keep).sum())


def default_n_clusters(n: int) -> int:
    """``k`` for ``n`` documents: ``round(sqrt(n))``, at most ``n // 39`` (faiss's minimum of 39
    training points per centroid), at least 1; clusters then hold about ``sqrt(n)`` documents."""
    return max(1, min(round(math.sqrt(n)), n // 39))


def kmeans_assign(x: np.ndarray, k: int, probes: int = 1, seed: int = 0, niter: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (faiss) of unit rows ``x`` (``(n, d)`` float32): each row's nearest centroids.

    Centroids are re-normalised every iteration, so assignment is by cosine similarity
    (the paper clusters with cosine distance). faiss trains on at most ``256 k`` rows,
    sampled with ``seed``.

    Returns:
        ``labels``, ``int64`` array ``(n, probes)`` of centroid numbers, nearest first, and
        ``cosine``, ``float32`` array ``(n, probes)`` of the similarities to them. With
        ``k <= 1`` every row is in cluster 0 (and ``probes`` is 1).
    """
    n = len(x)
    if k <= 1 or n <= 1:
        centroid = x.sum(axis=0)
        centroid = centroid / max(float(np.linalg.norm(centroid)), 1e-12)
        return np.zeros((n, 1), dtype=np.int64), (x @ centroid)[:, None].astype(np.float32)
    k = min(k, n)
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False, min_points_per_centroid=1)
    km.train(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(km.centroids)
    cosine, labels = index.search(x, min(probes, k))
    return labels.astype(np.int64), cosine


def kmeans_labels(x: np.ndarray, k: int, seed: int = 0, niter: int = 20) -> np.ndarray:
    """The nearest spherical k-means centroid of each unit row of ``x``: ``int64`` array ``(n,)``
    (see :func:`kmeans_assign`)."""
    return kmeans_assign(x, k, 1, seed, niter)[0][:, 0]


def semdedup(
    embeddings: np.ndarray,
    *,
    threshold: float = 0.95,
    n_clusters: int | None = None,
    keep: Literal["first", "hard", "easy"] = "first",
    probes: int = 2,
    seed: int = 0,
    niter: int = 20,
) -> SemDeDupResult:
    """SemDeDup (Abbas et al., 2023, Algorithm 1) on unit embeddings of a whole collection.

    1. spherical k-means into ``k`` clusters (:func:`kmeans_assign`); each document belongs
       to its nearest centroid's cluster;
    2. documents are ranked by ``keep``: ``"first"`` input order (the streaming stage's
       choice), ``"hard"`` farthest from their centroid first (the paper's default:
       prototypical examples are removed), ``"easy"`` closest first;
    3. document ``j`` is removed when ``cos(i, j) >= threshold`` for a document ``i`` ranked
       before it, searched among the clusters of ``j``'s ``probes`` nearest centroids.

    ``probes = 1`` is the paper's algorithm exactly (pairs only within a cluster). A pair of
    duplicates split by a cluster boundary lies near it, so the second nearest centroid of
    one is almost always the other's (the multi-probe search of IVF indexes, Jegou, Douze &
    Schmid, TPAMI 2011); ``probes = 2`` (default) recovered every pair on 5k GSM8K questions
    where ``probes = 1`` missed some (``benchmarks/semantic_dedup.py``). Within a cluster,
    the order is the paper's for every ``keep``.

    Similarities are computed in blocks of 1,024 rows: memory stays within ``1024 x m``
    floats for a cluster of ``m`` members; work is about ``probes * sum_c m_c**2 * d``.

    Args:
        embeddings: ``(n, d)`` array of unit rows (as :func:`~distillery.dedup.embed.embed` returns).
        threshold: cosine similarity of duplicates (``1 - eps``).
        n_clusters: ``k``; default :func:`default_n_clusters`. ``1`` compares all pairs.
        keep: which member of a duplicate group survives (see above).
        probes: clusters searched per document (``>= 1``).
        seed, niter: k-means seed and iterations.

    Raises:
        ValueError: ``embeddings`` is not 2-D, ``keep`` is unknown or ``probes < 1``.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got shape {x.shape}")
    if keep not in ("first", "hard", "easy"):
        raise ValueError(f"keep must be first, hard or easy, got {keep!r}")
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    n = len(x)
    k = default_n_clusters(n) if n_clusters is None else max(1, min(n_clusters, max(n, 1)))
    assigned, to_centroid = kmeans_assign(x, k, probes, seed, niter)
    labels = assigned[:, 0]
    if keep == "first":
        order = np.arange(n)
    else:  # hard: least similar to its centroid first; ties by input position
        order = np.lexsort((np.arange(n), to_centroid[:, 0] if keep == "hard" else -to_centroid[:, 0]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    best = np.full(n, -np.inf, dtype=np.float32)
    partner = np.full(n, -1, dtype=np.int64)
    members = np.argsort(labels * n + rank, kind="stable")  # by cluster, then rank
    bounds = np.searchsorted(labels[members], np.arange(k + 1))
    probe_rows = np.argsort(assigned.ravel(), kind="stable")  # (document, probe) cells by cluster
    probe_bounds = np.searchsorted(assigned.ravel()[probe_rows], np.arange(k + 1))
    for c in range(k):
        base = members[bounds[c] : bounds[c + 1]]
        queries = probe_rows[probe_bounds[c] : probe_bounds[c + 1]] // assigned.shape[1]
        if len(base) and len(queries):
            _max_earlier(x, rank, queries, base, best, partner)
    removed = best >= threshold
    cosine = np.where(np.isfinite(best), best, np.nan).astype(np.float32)
    duplicate_of = np.where(removed, partner, -1)
    return SemDeDupResult(~removed, duplicate_of, cosine, labels, k)


def _max_earlier(
    x: np.ndarray, rank: np.ndarray, queries: np.ndarray, base: np.ndarray, best: np.ndarray, partner: np.ndarray
) -> None:
    """For each ``j`` of ``queries``: raise ``best[j]`` to ``max cos(i, j)`` over ``i`` of ``base``
    ranked before ``j`` (``partner[j] = i``; ties keep the earlier found, then the lower rank)."""
    base_rank = rank[base]
    xb = x[base]
    for lo in range(0, len(queries), _BLOCK):
        q = queries[lo : lo + _BLOCK]
        sim = x[q] @ xb.T
        sim[base_rank[None, :] >= rank[q][:, None]] = -np.inf
        arg = np.argmax(sim, axis=1)
        top = sim[np.arange(len(q)), arg]
        better = top > best[q]
        best[q[better]] = top[better]
        partner[q[better]] = base[arg[better]]


def semdedup_texts(
    texts: Sequence[str],
    model: Any = None,
    *,
    threshold: float = 0.95,
    batch_size: int = 64,
    device: str = "cpu",
    **kwargs: Any,
) -> SemDeDupResult:
    """:func:`semdedup` of ``texts``, embedded with ``model`` in batches of ``batch_size``.

    Args:
        texts: the collection.
        model: a loaded model, or a name/path for :func:`~distillery.dedup.embed.load_embedding_model`
            (``None``: the packaged all-MiniLM-L6-v2).
        threshold, kwargs: passed to :func:`semdedup`.

    Raises:
        EmbeddingModelError: the model cannot be loaded.
    """
    if model is None or isinstance(model, str):
        model = load_embedding_model(model, device)
    return semdedup(embed(model, texts, batch_size), threshold=threshold, **kwargs)
