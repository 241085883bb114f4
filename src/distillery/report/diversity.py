"""Diversity of a set of texts (e.g. a run's accepted responses), for the report and the card.

Lexical metrics, over every text given:

- distinct-n (Li, Galley, Brockett, Gao & Dolan, "A Diversity-Promoting Objective Function
  for Neural Conversation Models", NAACL 2016): distinct word n-grams / total word n-grams
  over the corpus, words as :func:`distillery.text.words`. In ``[0, 1]``; higher = more varied.
  It falls as the corpus grows, so compare runs on samples of equal size.
- compression ratio: gzip-compressed size / raw size of the texts joined by newlines
  (UTF-8, level 9). Lower = more repetitive (repeated strings compress away). Shaib et al.,
  "Standardizing the Measurement of Text Diversity" (2024), score the inverse, raw /
  compressed, for which higher = more repetitive.

Embedding metrics, on a random sample of at most ``sample`` texts (unit sentence
embeddings, :mod:`distillery.dedup.embed`; skipped with a note when no model is given):

- mean pairwise cosine similarity over pairs ``i != j``; higher = more alike.
- Vendi score (Friedman & Dieng, "The Vendi Score: A Diversity Evaluation Metric for
  Machine Learning", TMLR 2023): ``exp(-sum_i l_i log l_i)`` over the eigenvalues ``l_i`` of
  ``K / n``, ``K`` the cosine-similarity kernel. The effective number of distinct items:
  1 for ``n`` identical items, ``n`` for ``n`` orthogonal ones.
- k-means clusters (faiss, spherical): number of clusters ``k``, share of the largest,
  sizes, a histogram of sizes, and the effective number of clusters ``exp(H)`` of the shares.

Cost: lexical metrics about 3 s per million words (1.4 s for the 7,473 GSM8K train
solutions). Embedding the sample dominates: with all-MiniLM-L6-v2 on CPU about 30 ms of one
core per GSM8K question and 70 ms per GSM8K solution (1,000 solutions: 75 s of CPU, 108 s
wall on a busy 2-core machine), so pass ``sample=200`` or so where seconds matter, or a
model on a GPU. The rest (eigenvalues of a ``min(n, d)``-square matrix, k-means) is well
under a second for ``n = 1000``.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from distillery.dedup.embed import EmbeddingModelError, embed, load_embedding_model, model_name
from distillery.text import word_ngrams, words


def distinct_n(tokenised: Sequence[Sequence[str]], n: int) -> float:
    """distinct-n of a corpus: distinct n-grams / total n-grams (Li et al., 2016).

    Args:
        tokenised: each text as its list of words.
        n: n-gram length ``>= 1``.

    Returns:
        a value in ``[0, 1]``; ``0.0`` when the corpus has no n-gram.
    """
    seen: set[tuple[str, ...]] = set()
    total = 0
    for tokens in tokenised:
        grams = list(word_ngrams(tokens, n))
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def compression_ratio(texts: Sequence[str]) -> float:
    """gzip-compressed size / raw size of ``"\\n".join(texts)`` in UTF-8 (level 9, no timestamp).

    Lower = more repetitive. ``0.0`` for an empty corpus. Small corpora (under ~1 KB) read
    high because of gzip's fixed ~20-byte header and trailer.
    """
    raw = "\n".join(texts).encode()
    if not raw:
        return 0.0
    return len(gzip.compress(raw, compresslevel=9, mtime=0)) / len(raw)


def vendi_score(kernel: np.ndarray) -> float:
    """Vendi score of a similarity kernel (Friedman & Dieng, 2023).

    ``VS = exp(-sum_i l_i log l_i)`` over the non-zero eigenvalues ``l_i`` of ``K / n``
    (``numpy.linalg.eigvalsh``; tiny negative round-off is dropped).

    Args:
        kernel: symmetric positive semi-definite ``(n, n)`` array with unit diagonal.

    Returns:
        a value in ``[1, n]``; ``0.0`` for ``n = 0``.
    """
    k = np.asarray(kernel, dtype=np.float64)
    n = len(k)
    if n == 0:
        return 0.0
    return _entropy_exp(np.linalg.eigvalsh(k / n))


def vendi_score_embeddings(x: np.ndarray) -> float:
    """Vendi score of the cosine kernel ``K = X X^T`` of unit rows ``x`` (``(n, d)``).

    ``K / n = X X^T / n`` has the same non-zero eigenvalues as ``X^T X / n`` (``d x d``), so
    this costs ``O(n d^2 + min(n, d)^3)`` instead of ``O(n^3)``.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 0:
        return 0.0
    gram = x @ x.T if n <= x.shape[1] else x.T @ x
    return _entropy_exp(np.linalg.eigvalsh(gram / n))


def _entropy_exp(eigenvalues: np.ndarray) -> float:
    lam = eigenvalues[eigenvalues > 1e-12]
    lam = lam / lam.sum()  # exactly 1 up to round-off when the diagonal is 1
    return float(np.exp(-np.sum(lam * np.log(lam))))


def mean_pairwise_cosine(x: np.ndarray) -> float:
    """Mean of ``x[i] @ x[j]`` over ordered pairs ``i != j`` of unit rows ``x`` (``(n, d)``).

    Uses ``sum_ij x_i . x_j = |sum_i x_i|^2``: ``O(n d)``. ``nan`` when ``n < 2``.
    """
    n = len(x)
    if n < 2:
        return float("nan")
    x = np.asarray(x, dtype=np.float64)
    total = float(np.sum(x.sum(axis=0) ** 2)) - float(np.sum(x * x))
    return total / (n * (n - 1))


def cluster_summary(x: np.ndarray, k: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Spherical k-means (faiss) of unit rows ``x`` and the sizes of its clusters.

    Args:
        x: ``(n, d)`` unit embeddings.
        k: clusters; default ``round(sqrt(n))`` capped at ``n // 39``
            (:func:`distillery.dedup.semantic.default_n_clusters`).
        seed: k-means seed.

    Returns:
        ``{"k", "largest_share", "effective_clusters", "sizes" (descending), "size_histogram"}``;
        the histogram counts clusters by size in power-of-two bins (``"1"``, ``"2-3"``, ``"4-7"``, ...).
    """
    from distillery.dedup.semantic import default_n_clusters, kmeans_labels

    n = len(x)
    k = default_n_clusters(n) if k is None else max(1, min(k, n))
    labels = kmeans_labels(np.ascontiguousarray(x, dtype=np.float32), k, seed)
    sizes = np.bincount(labels, minlength=k)
    sizes = np.sort(sizes[sizes > 0])[::-1]
    shares = sizes / max(n, 1)
    histogram: dict[str, int] = {}
    for size in sizes[::-1].tolist():
        lo = 1 << (int(size).bit_length() - 1)
        label = "1" if lo == 1 else f"{lo}-{2 * lo - 1}"
        histogram[label] = histogram.get(label, 0) + 1
    return {
        "k": int(k),
        "largest_share": round(float(shares[0]), 4) if n else 0.0,
        "effective_clusters": round(float(np.exp(-np.sum(shares * np.log(shares)))), 2) if n else 0.0,
        "sizes": sizes.tolist(),
        "size_histogram": histogram,
    }


def diversity_metrics(
    texts: list[str], *, sample: int = 1000, seed: int = 0, embed_model: Any = None
) -> dict[str, Any]:
    """Diversity of ``texts``: lexical metrics on all of them, embedding metrics on a sample.

    Args:
        texts: the corpus (e.g. accepted responses).
        sample: most texts embedded (drawn without replacement with ``seed``).
        seed: seed of the sample and of k-means.
        embed_model: ``None`` (skip embedding metrics), a loaded sentence-transformers model,
            a callable ``texts -> (n, d) array``, or a model name/path for
            :func:`~distillery.dedup.embed.load_embedding_model` (``"default"``: the packaged
            all-MiniLM-L6-v2).

    Returns:
        a JSON-ready dict: ``texts``, ``words``, ``distinct_1``, ``distinct_2``,
        ``compression_ratio``, ``embedding_model``, ``embedding_sample``,
        ``mean_pairwise_cosine``, ``vendi_score``, ``clusters`` (:func:`cluster_summary`),
        ``seconds`` and ``notes`` (why a metric is missing). Embedding keys are ``None`` when skipped.
    """
    start = time.perf_counter()
    tokenised = [words(t) for t in texts]
    out: dict[str, Any] = {
        "texts": len(texts),
        "words": sum(len(t) for t in tokenised),
        "distinct_1": round(distinct_n(tokenised, 1), 4),
        "distinct_2": round(distinct_n(tokenised, 2), 4),
        "compression_ratio": round(compression_ratio(texts), 4),
        "embedding_model": None,
        "embedding_sample": 0,
        "mean_pairwise_cosine": None,
        "vendi_score": None,
        "clusters": None,
        "notes": [],
    }
    if embed_model is None:
        out["notes"].append("embedding metrics skipped: no embedding model given")
    elif len(texts) < 2:
        out["notes"].append("embedding metrics skipped: fewer than 2 texts")
    else:
        try:
            model = load_embedding_model(embed_model) if isinstance(embed_model, str) else embed_model
        except EmbeddingModelError as exc:
            out["notes"].append(f"embedding metrics skipped: {exc}")
            model = None
        if model is not None:
            rng = np.random.default_rng(seed)
            rows = np.sort(rng.choice(len(texts), size=min(sample, len(texts)), replace=False))
            x = embed(model, [texts[i] for i in rows.tolist()])
            out["embedding_model"] = model_name(model)  # the model's own name, not "default"
            out["embedding_sample"] = len(rows)
            out["mean_pairwise_cosine"] = round(mean_pairwise_cosine(x), 4)
            out["vendi_score"] = round(vendi_score_embeddings(x), 2)
            out["clusters"] = cluster_summary(x, seed=seed)
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


def diversity_markdown(metrics: dict[str, Any]) -> str:
    """A ``## Diversity`` section of the dataset card from :func:`diversity_metrics`'s dict."""
    m = metrics
    lines = [
        "## Diversity",
        "",
        f"Over {m['texts']} texts ({m['words']} words).",
        "",
        "| metric | value | reading |",
        "|---|---:|---|",
        f"| distinct-1 | {m['distinct_1']:.4f} | distinct words / words (Li et al., 2016); higher = more varied |",
        f"| distinct-2 | {m['distinct_2']:.4f} | distinct word bigrams / bigrams |",
        f"| compression ratio | {m['compression_ratio']:.4f} | gzip size / raw size; lower = more repetitive |",
    ]
    if m.get("vendi_score") is not None:
        c = m["clusters"]
        n = m["embedding_sample"]
        lines += [
            f"| mean pairwise cosine | {m['mean_pairwise_cosine']:.4f} | embeddings of {n} sampled texts; higher = more alike |",
            f"| Vendi score | {m['vendi_score']:.2f} | effective number of distinct texts among {n} (Friedman & Dieng, 2023) |",
            f"| k-means clusters | {c['k']} | largest holds {c['largest_share']:.1%}; effective number {c['effective_clusters']} |",
        ]
    lines.append("")
    if m.get("embedding_model"):
        lines += [f"Embeddings: `{m['embedding_model']}`.", ""]
    lines += [f"Note: {note}." for note in m.get("notes", [])]
    if m.get("notes"):
        lines.append("")
    return "\n".join(lines)
