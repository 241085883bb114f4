"""MinHash-LSH near-duplicate detection (``dedup: minhash``): quality, semantics, the stage."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from pydantic import ValidationError

from distillery.dedup.jaccard import pair_jaccard
from distillery.dedup.lsh import BandTable, candidate_probability, optimal_params, pairs_within
from distillery.dedup.minhash import MinHashConfig, MinHashDedup
from distillery.dedup.neardup import NearDuplicateIndex
from distillery.dedup.planted import jaccard, plant_near_duplicates, shingle_set, similar_pairs
from distillery.dedup.shingles import ShingleBatch, Shingler
from distillery.dedup.signatures import MinHasher, estimate_jaccard
from distillery.dedup.unionfind import UnionFind
from distillery.pipeline.stage import BuildContext
from distillery.records import new_record, verdict_detail
from distillery.text import words
from tests.helpers import SHARED

DATA = SHARED

TRICKY = [
    "Héllo WÖRLD’s “quote” ÀB ½ ﬁne x² — ok",
    "",
    "a",
    "one two",
    "İstanbul ǅ ß STRASSE",
    "x" * 40 + " y " + "é" * 30,
    "日本語のテキスト。 中文，标点",
    "a_b c-d e.f 3.5% $12",
    "tab\tnew\nline\r\n  spaces",
]


@pytest.fixture(scope="module")
def gsm8k() -> list[str]:
    path = DATA / "gsm8k" / "train.jsonl"
    if not path.exists():
        pytest.skip(f"GSM8K not found at {path}")
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [r["question"] + "\n" + r["answer"] for r in rows]


@pytest.fixture(scope="module")
def planted(gsm8k: list[str]):
    corpus = plant_near_duplicates(gsm8k, 3000, seed=7)
    truth = similar_pairs([shingle_set(t) for t in corpus.texts], 0.8)
    return corpus, truth


# -- shingling -------------------------------------------------------------------------
def test_fast_tokeniser_finds_the_words_of_text_words(gsm8k: list[str]) -> None:
    texts = gsm8k[:1500] + TRICKY
    assert Shingler().words_of(texts) == [words(t) for t in texts]


def test_shingles_are_sets_of_word_ngrams() -> None:
    sh = Shingler(ngram=3)
    batch = sh.shingles(["a b c d a b c", "A, b; C!", "", "x y", "b c d"])
    counts = batch.counts().tolist()
    # "a b c d a b c" has 5 trigrams, 4 distinct; two words fall back to one shingle
    assert counts == [4, 1, 0, 1, 1]
    per_doc = [
        set(batch.hashes[a:b].tolist()) for a, b in zip(batch.offsets[:-1], batch.offsets[1:], strict=True)
    ]
    assert per_doc[1] <= per_doc[0]  # "a b c" after normalisation
    assert per_doc[4] <= per_doc[0]  # "b c d"
    assert not per_doc[3] & per_doc[0]
    for a, b in zip(batch.offsets[:-1], batch.offsets[1:], strict=True):
        assert (np.diff(batch.hashes[a:b].astype(np.float64)) > 0).all()  # sorted, no repeats


def test_hashes_do_not_depend_on_batching_and_follow_the_seed(gsm8k: list[str]) -> None:
    texts = gsm8k[:50] + TRICKY
    whole = Shingler(seed=3).shingles(texts)
    for i in (0, 7, len(texts) - 1):
        alone = Shingler(seed=3).shingles([texts[i]])
        assert alone.hashes.tolist() == whole.hashes[whole.offsets[i] : whole.offsets[i + 1]].tolist()
    other = Shingler(seed=4).shingles(texts[:1])
    assert other.hashes.tolist() != whole.hashes[: whole.offsets[1]].tolist()


# -- MinHash and exact Jaccard --------------------------------------------------------
def test_minhash_estimates_jaccard_without_bias() -> None:
    rng = np.random.default_rng(0)
    hasher = MinHasher(num_perm=128, seed=1)
    for target in (0.5, 0.8, 0.95):
        shared = round(2 * 100 * target / (1 + target))
        est, true = [], []
        for _ in range(300):
            universe = rng.integers(0, 2**64, size=200 - shared, dtype=np.uint64)
            a, b = np.sort(universe[:100]), np.sort(universe[100 - shared :])
            batch = ShingleBatch(np.concatenate([a, b]), np.array([0, 100, 200]), np.array([100, 100]))
            sig = hasher.signatures(batch)
            est.append(float(estimate_jaccard(sig[0], sig[1])))
            true.append(shared / (200 - shared))
        j = true[0]
        assert abs(np.mean(est) - j) < 0.01
        assert np.std(est) == pytest.approx(np.sqrt(j * (1 - j) / 128), rel=0.2)


def test_signatures_are_per_document_minima_across_chunks(gsm8k: list[str]) -> None:
    texts = gsm8k[:300] + ["", "short text"] + gsm8k[300:400]  # ~40k shingles: several chunks
    batch = Shingler().shingles(texts)
    hasher = MinHasher(num_perm=64, seed=9)
    sig = hasher.signatures(batch)
    fp = (batch.hashes >> np.uint64(32)).astype(np.uint32)
    for d in (0, 150, 299, 300, 301, len(texts) - 1):
        x = fp[batch.offsets[d] : batch.offsets[d + 1]]
        want = (hasher._a * x[None, :]).min(axis=1) if len(x) else np.full(64, 0xFFFFFFFF)
        assert sig[d].tolist() == want.tolist()


def test_pair_jaccard_is_exact(gsm8k: list[str]) -> None:
    texts = gsm8k[:40] + [gsm8k[0].replace("the", "a"), gsm8k[1][:200], "", "", "one two"] + TRICKY
    batch = Shingler().shingles(texts)
    rng = np.random.default_rng(1)
    i = rng.integers(0, len(texts), 400)
    j = rng.integers(0, len(texts), 400)
    got = pair_jaccard(batch.hashes, batch.offsets, i, batch.hashes, batch.offsets, j)
    sets = [shingle_set(t) for t in texts]
    want = [jaccard(sets[a], sets[b]) for a, b in zip(i.tolist(), j.tolist(), strict=True)]
    assert got.tolist() == pytest.approx(want, abs=1e-12)


# -- LSH --------------------------------------------------------------------------------
def test_band_optimisation_matches_the_s_curve_and_datasketch() -> None:
    from datasketch.lsh import _optimal_param

    for t, k in [(0.8, 128), (0.5, 64), (0.9, 256)]:
        assert optimal_params(t, k, 0.5, 0.5) == _optimal_param(t, k, 0.5, 0.5)
    b, r = optimal_params(0.8, 128, 0.1, 0.9)
    assert b * r <= 128
    assert (1 / b) ** (1 / r) == pytest.approx(0.8, abs=0.06)
    assert candidate_probability(0.8, b, r) > 0.85
    assert candidate_probability(0.9, b, r) > 0.99
    assert candidate_probability(0.4, b, r) < 0.01
    # weighting false negatives more moves the S-curve left
    b2, r2 = optimal_params(0.8, 128, 0.5, 0.5)
    assert candidate_probability(0.8, b2, r2) < candidate_probability(0.8, b, r)
    with pytest.raises(ValueError):
        optimal_params(1.0, 128)


def test_band_table_is_a_multimap() -> None:
    rng = np.random.default_rng(2)
    table = BandTable(capacity=16)  # forces several resizes
    reference: dict[int, list[int]] = {}
    pool = rng.integers(0, 2**64, size=3000, dtype=np.uint64)
    for _ in range(12):
        keys = pool[rng.integers(0, len(pool), 700)]  # repeats inside and across batches
        start = len(table)
        lookup = table.lookup(keys) if rng.random() < 0.5 else None
        table.insert(keys, lookup)
        for e, k in enumerate(keys.tolist()):
            reference.setdefault(k, []).append(start + e)
    queries = np.concatenate([pool[:500], rng.integers(0, 2**64, size=100, dtype=np.uint64)])
    q, e = table.query(queries, max_chain=10**6)
    got: dict[int, list[int]] = {}
    for qi, ei in zip(q.tolist(), e.tolist(), strict=True):
        got.setdefault(int(queries[qi]), []).append(ei)
    want = {int(k): reference[int(k)] for k in queries if int(k) in reference}
    assert {k: sorted(v) for k, v in got.items()} == want


def test_band_table_wraps_probes_around_the_end() -> None:
    rng = np.random.default_rng(5)
    # every key's home slot is the table's last one, for any size up to 2**12
    keys = (rng.integers(0, 2**40, size=300, dtype=np.uint64) << np.uint64(12)) | np.uint64(0xFFF)
    table = BandTable(capacity=16)
    for part in np.array_split(keys, 5):
        table.insert(part)
    q, e = table.query(keys)
    assert sorted(e.tolist()) == list(range(300)) and (q == e).all()


def test_pairs_within_finds_every_shared_bucket() -> None:
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 6, size=(60, 4)).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    keys += np.arange(4, dtype=np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)  # distinct per band
    i, j = pairs_within(keys, max_fanout=64)
    want = {(a, c) for a in range(60) for c in range(a + 1, 60) if (keys[a] == keys[c]).any()}
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == want


def test_union_find_names_clusters_by_first_member() -> None:
    uf = UnionFind(6)
    uf.union(4, 2)
    uf.union(5, 4)
    uf.union(3, 1)
    assert uf.labels().tolist() == [0, 1, 2, 1, 2, 2]


# -- quality and semantics on planted near duplicates ---------------------------------------
def test_precision_and_recall_on_planted_pairs(planted) -> None:
    corpus, truth = planted
    assert len(truth) > 500
    index = NearDuplicateIndex(threshold=0.8)
    clusters = index.cluster(corpus.texts)
    found = set(zip(clusters.left.tolist(), clusters.right.tolist(), strict=True))
    hit = len(found & set(truth))
    assert hit / len(found) >= 0.95
    assert hit / len(truth) >= 0.95
    # reported similarities are the exact ones
    for a, c, jac in list(
        zip(clusters.left.tolist(), clusters.right.tolist(), clusters.jaccard.tolist(), strict=True)
    )[:200]:
        if (a, c) in truth:
            assert jac == pytest.approx(truth[(a, c)], abs=1e-12)
    # clusters: labelled by their first member, which is kept
    assert (clusters.labels <= np.arange(len(corpus.texts))).all()
    assert clusters.keep.tolist() == (clusters.labels == np.arange(len(corpus.texts))).tolist()


def test_streaming_decisions_match_exact_truth(planted) -> None:
    corpus, truth = planted
    index = NearDuplicateIndex(threshold=0.8)
    matches = []
    for lo in range(0, len(corpus.texts), 250):
        matches += index.add(corpus.texts[lo : lo + 250], list(range(lo, lo + 250)))
    earlier: dict[int, list[int]] = {}
    for a, c in truth:
        earlier.setdefault(c, []).append(a)
    should: set[int] = set()
    for c in range(len(corpus.texts)):
        if any(a not in should for a in earlier.get(c, ())):
            should.add(c)
    flagged = {c for c, m in enumerate(matches) if m is not None}
    assert len(flagged & should) / len(flagged) >= 0.95
    assert len(flagged & should) / len(should) >= 0.95
    for c, m in enumerate(matches):
        if m is not None:
            assert m.duplicate_of < c and m.duplicate_of not in flagged  # matched a kept one
            assert m.jaccard >= 0.8 and abs(m.estimated - m.jaccard) < 0.25
    assert len(index) == len(corpus.texts) - len(flagged)


def test_streaming_in_any_batch_size_equals_one_shot(planted) -> None:
    texts = planted[0].texts[:1200]
    ids = [f"r{i}" for i in range(len(texts))]
    one_shot = NearDuplicateIndex().add(texts, ids)
    for size in (1, 7, 100, 333):
        index = NearDuplicateIndex()
        out = []
        for lo in range(0, len(texts), size):
            out += index.add(texts[lo : lo + size], ids[lo : lo + size])
        assert out == one_shot
    assert sum(m is not None for m in one_shot) > 50


def test_deterministic_and_keeps_the_first(planted) -> None:
    texts = planted[0].texts[:800]
    a = NearDuplicateIndex(seed=5).cluster(texts)
    b = NearDuplicateIndex(seed=5).cluster(list(texts))
    assert a.labels.tolist() == b.labels.tolist()
    assert a.left.tolist() == b.left.tolist() and a.jaccard.tolist() == b.jaccard.tolist()
    assert NearDuplicateIndex(seed=5).add(texts) == NearDuplicateIndex(seed=5).add(texts)


def test_intra_batch_duplicates_match_the_earlier_kept_one(gsm8k: list[str]) -> None:
    base = gsm8k[10]
    near = base.replace("\n", " ").upper()  # same words
    edited = base + " and one more clause at the end"
    other = gsm8k[11]
    index = NearDuplicateIndex()
    out = index.match([other, base, near, edited], ["o", "b", "n", "e"])
    assert out[0] is None and out[1] is None
    assert out[2].duplicate_of == "b" and out[2].jaccard == 1.0
    assert out[3].duplicate_of == "b" and 0.8 <= out[3].jaccard < 1.0
    assert len(index) == 0  # match never inserts


def test_short_and_empty_texts_still_deduplicate() -> None:
    index = NearDuplicateIndex()
    out = index.add(["What is 2+2?", "what is 2 + 2", "What is 3+3?", "", "  ...  ", "ok"], list("abcdef"))
    assert out[0] is None and out[1].duplicate_of == "a" and out[1].jaccard == 1.0
    assert out[2] is None
    assert out[3] is None and out[4].duplicate_of == "d"  # no words at all: identical texts
    assert out[5] is None


def test_parameter_checks() -> None:
    with pytest.raises(ValueError):
        NearDuplicateIndex(threshold=1.0)
    with pytest.raises(ValueError):
        NearDuplicateIndex(num_perm=16, bands=5, rows=4)
    with pytest.raises(ValueError):
        NearDuplicateIndex().match(["a", "b"], ["only one id"])


def test_memory_per_document_is_reported(gsm8k: list[str]) -> None:
    index = NearDuplicateIndex()
    index.add(gsm8k[:2000])
    per_doc = index.memory_bytes() / len(index)
    assert 600 < per_doc < 4000
    lean = NearDuplicateIndex(verify_jaccard=False)
    lean.add(gsm8k[:2000])
    assert lean.memory_bytes() < index.memory_bytes() / 2


# -- the stage ----------------------------------------------------------------------------
def _records(texts: list[str], prefix: str) -> list[dict]:
    return [
        new_record(id=f"{prefix}{i}", prompt=[{"role": "user", "content": "Solve."}], response=t)
        for i, t in enumerate(texts)
    ]


def test_stage_rejects_near_duplicates_with_reason_and_detail(gsm8k: list[str]) -> None:
    config = MinHashConfig.model_validate({"type": "minhash", "threshold": 0.8})
    stage = config.build(BuildContext())
    assert isinstance(stage, MinHashDedup) and stage.kind == "dedup" and stage.stateful
    base, other = gsm8k[20], gsm8k[21]
    records = _records([base, other, base.replace(".", " ."), base + " Extra words here."], "x")
    survivors = stage.apply(records)
    assert [r["id"] for r in survivors] == ["x0", "x1"]
    rejected = records[2]
    assert rejected["reject_reason"].startswith("near_duplicate: jaccard 1.00 >= 0.8 with x0")
    detail = verdict_detail(rejected["verdicts"][-1])
    assert detail["duplicate_of"] == "x0" and detail["jaccard"] == 1.0 and 0.8 < detail["estimated"] <= 1.0
    assert records[3]["reject_reason"].split(" with ")[1] == "x0"
    assert stage.stats.reasons["near_duplicate"] == 2
    assert len(stage.index) == 0  # check_batch does not insert
    stage.commit(survivors)
    assert stage.index.ids == ["x0", "x1"]
    later = _records([base.upper(), gsm8k[22]], "y")
    assert [r["id"] for r in stage.apply(later)] == ["y1"]
    assert "with x0" in later[0]["reject_reason"]


def test_stage_state_rebuilds_from_commits(gsm8k: list[str]) -> None:
    config = MinHashConfig(fields=["response"])
    first = config.build(BuildContext())
    batch = _records(gsm8k[30:60] + [gsm8k[30] + " again"], "a")
    accepted = first.apply(batch)
    first.commit(accepted)
    resumed = config.build(BuildContext())
    resumed.commit(_records([r["response"] for r in accepted], "a"))  # fresh dicts, same ids
    probe = gsm8k[40:45] + [gsm8k[70]]
    out_first = first.apply(_records(probe, "p"))
    out_resumed = resumed.apply(_records(probe, "p"))
    assert [r["id"] for r in out_first] == [r["id"] for r in out_resumed] == ["p5"]


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        MinHashConfig.model_validate({"type": "minhash", "treshold": 0.8})
    with pytest.raises(ValidationError):
        MinHashConfig(threshold=1.5)


def test_planted_corpus_spreads_similarities(gsm8k: list[str]) -> None:
    corpus = plant_near_duplicates(gsm8k, 1000, seed=1)
    again = plant_near_duplicates(gsm8k, 1000, seed=1)
    assert corpus.texts == again.texts
    copies = [i for i, s in enumerate(corpus.source) if s is not None]
    assert len(copies) == 500
    sims = [
        jaccard(shingle_set(corpus.texts[i]), shingle_set(corpus.texts[corpus.source[i]])) for i in copies
    ]
    assert min(sims) < 0.65 and max(sims) == 1.0
    assert 0.3 < np.mean(np.array(sims) >= 0.8) < 0.7
    rnd = random.Random(0)
    sets = [shingle_set(corpus.texts[rnd.randrange(1000)]) for _ in range(60)]
    brute = {
        (a, c): jaccard(sets[a], sets[c])
        for a in range(60)
        for c in range(a + 1, 60)
        if jaccard(sets[a], sets[c]) >= 0.5
    }
    assert similar_pairs(sets, 0.5) == brute


def test_best_kept_match_wins_whatever_the_batching() -> None:
    w = [f"w{k}" for k in range(100)]
    a = " ".join(w)
    c = " ".join(w[:90] + [f"z{k}" for k in range(10)])
    b = " ".join(w[:50] + ["extra"] + w[50:90] + [f"z{k}" for k in range(10)])
    sa, sb, sc = shingle_set(a), shingle_set(b), shingle_set(c)
    assert jaccard(sa, sb) < 0.8 <= jaccard(sa, sc) < jaccard(sb, sc)
    one_shot = NearDuplicateIndex().add([a, b, c], ["a", "b", "c"])
    index = NearDuplicateIndex()
    streamed = index.add([a], ["a"]) + index.add([b, c], ["b", "c"])
    assert one_shot == streamed
    assert one_shot[1] is None and one_shot[2].duplicate_of == "b"
    assert one_shot[2].jaccard == pytest.approx(jaccard(sb, sc))


def test_empty_batches() -> None:
    index = NearDuplicateIndex()
    assert index.add([]) == [] and index.match([]) == [] and len(index) == 0
    clusters = index.cluster([])
    assert len(clusters.labels) == 0 and len(clusters.left) == 0
    index.add(["some text here"])
    assert index.match([]) == []
