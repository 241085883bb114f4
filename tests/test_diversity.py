"""Diversity metrics of the run report: distinct-n, compression ratio, Vendi score, clusters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distillery.dedup.embed import DEFAULT_MODEL, load_embedding_model
from distillery.report.diversity import (
    cluster_summary,
    compression_ratio,
    distinct_n,
    diversity_markdown,
    diversity_metrics,
    mean_pairwise_cosine,
    vendi_score,
    vendi_score_embeddings,
)
from distillery.text import words
from tests.helpers import SHARED

DATA = SHARED


@pytest.fixture(scope="module")
def questions() -> list[str]:
    with (DATA / "gsm8k" / "train.jsonl").open() as f:
        return [json.loads(line)["question"] for line in f]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_distinct_n_on_hand_computed_examples() -> None:
    corpus = [words(t) for t in ["The cat sat.", "the CAT ran!"]]  # the cat sat the cat ran
    assert distinct_n(corpus, 1) == pytest.approx(4 / 6)  # the, cat, sat, ran
    assert distinct_n(corpus, 2) == pytest.approx(3 / 4)  # (the cat) twice, (cat sat), (cat ran)
    assert distinct_n([words("a b a b a b")], 2) == pytest.approx(2 / 5)
    assert distinct_n([["one"]], 2) == 0.0  # no bigram at all
    assert distinct_n([], 1) == 0.0


def test_compression_ratio_orders_repetitive_below_varied(questions: list[str]) -> None:
    varied = questions[:200]
    repetitive = [questions[0]] * 200
    templated = [f"Tom has {i} apples and buys {i + 3} more. How many apples does he have?" for i in range(200)]
    r_varied, r_templated, r_repetitive = map(compression_ratio, (varied, templated, repetitive))
    assert r_repetitive < r_templated < r_varied < 1.0
    assert r_repetitive < 0.02  # one text repeated: gzip keeps one copy plus back-references
    assert compression_ratio(varied) == r_varied  # deterministic (no timestamp in the gzip header)
    assert compression_ratio([]) == 0.0


def test_vendi_score_of_hand_built_kernels() -> None:
    for n in (1, 5, 40):
        assert vendi_score(np.ones((n, n))) == pytest.approx(1.0)  # n identical items
        assert vendi_score(np.eye(n)) == pytest.approx(n)  # n orthogonal items
    two_groups = np.kron(np.eye(2), np.ones((3, 3)))  # two groups of 3 identical items
    assert vendi_score(two_groups) == pytest.approx(2.0)
    uneven = np.zeros((4, 4))
    uneven[:3, :3] = 1
    uneven[3, 3] = 1  # shares 3/4 and 1/4: exp(H) = exp(-(.75 ln .75 + .25 ln .25))
    assert vendi_score(uneven) == pytest.approx(np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))))
    assert vendi_score(np.zeros((0, 0))) == 0.0


def test_embedding_forms_equal_the_kernel_forms() -> None:
    rng = np.random.default_rng(0)
    for n, d in ((50, 8), (6, 32)):  # n > d uses the d x d Gram matrix, n < d the n x n kernel
        x = _unit_rows(rng.standard_normal((n, d)))
        k = x @ x.T
        assert vendi_score_embeddings(x) == pytest.approx(vendi_score(k), rel=1e-9)
        brute = (k.sum() - np.trace(k)) / (n * (n - 1))
        assert mean_pairwise_cosine(x) == pytest.approx(brute, abs=1e-12)
    assert np.isnan(mean_pairwise_cosine(np.ones((1, 3))))


def test_cluster_summary_finds_planted_groups() -> None:
    rng = np.random.default_rng(1)
    centres = np.eye(16)[:3]
    sizes = (60, 30, 10)
    x = _unit_rows(np.vstack([c + 0.05 * rng.standard_normal((s, 16)) for c, s in zip(centres, sizes, strict=True)]))
    summary = cluster_summary(x, k=3)
    assert summary["sizes"] == [60, 30, 10]
    assert summary["largest_share"] == 0.6
    assert summary["size_histogram"] == {"8-15": 1, "16-31": 1, "32-63": 1}
    shares = np.array(sizes) / 100
    assert summary["effective_clusters"] == pytest.approx(np.exp(-np.sum(shares * np.log(shares))), abs=0.01)
    assert cluster_summary(x)["k"] == 2  # default: round(sqrt(100)) capped at 100 // 39


def test_metrics_without_a_model_are_lexical_and_json_ready(questions: list[str]) -> None:
    m = diversity_metrics(questions[:300])
    assert m["texts"] == 300 and m["words"] == sum(len(words(q)) for q in questions[:300])
    assert 0 < m["distinct_1"] < m["distinct_2"] < 1
    assert m["vendi_score"] is None and m["clusters"] is None
    assert m["notes"] == ["embedding metrics skipped: no embedding model given"]
    assert json.loads(json.dumps(m)) == m
    card = diversity_markdown(m)
    assert "| distinct-2 |" in card and "Vendi" not in card and "Note: embedding metrics skipped" in card


def test_metrics_with_a_callable_embedder_sample_the_texts() -> None:
    def letters(texts: list[str]) -> np.ndarray:  # bag of letters: a cheap, real embedding
        return np.array([[t.count(c) + 0.01 for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts])

    texts = [f"{w} " * 3 for w in ("apple", "banana", "cherry", "kiwi")] * 50
    m = diversity_metrics(texts, sample=40, seed=3, embed_model=letters)
    assert m["embedding_sample"] == 40 and m["embedding_model"] == "letters"
    assert 1.0 < m["vendi_score"] <= 4.0 + 1e-6  # four distinct texts at most
    assert m["clusters"]["k"] == 1  # 40 // 39
    assert diversity_metrics(texts, sample=40, seed=3, embed_model=letters) | {"seconds": 0} == m | {"seconds": 0}


def test_real_metrics_on_gsm8k_questions(questions: list[str]) -> None:
    varied = questions[:400]
    narrow = [q for q in questions[:8] for _ in range(8)]  # 8 problems, 8 copies each
    m = diversity_metrics(varied, sample=64, embed_model=DEFAULT_MODEL)
    assert m["embedding_model"] == DEFAULT_MODEL and m["embedding_sample"] == 64
    assert 0.2 < m["mean_pairwise_cosine"] < 0.5  # same genre (word problems), different content
    assert 10 < m["vendi_score"] < 64  # measured 27.9 on the first 120 questions
    assert sum(m["clusters"]["sizes"]) == 64 and m["clusters"]["k"] == 1  # 64 // 39
    n = diversity_metrics(narrow, sample=64, embed_model=load_embedding_model())
    assert 1 < n["vendi_score"] <= 8.0 + 1e-3  # at most the 8 distinct problems
    assert n["mean_pairwise_cosine"] > m["mean_pairwise_cosine"]
    assert n["distinct_2"] < m["distinct_2"] and n["compression_ratio"] < m["compression_ratio"]
    card = diversity_markdown(m)
    assert f"| Vendi score | {m['vendi_score']:.2f} |" in card and DEFAULT_MODEL in card
