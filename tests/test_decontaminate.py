"""Decontamination: the n-gram and substring indexes, the benchmark registry and the stage."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillery.decontaminate import benchmarks as bm
from distillery.decontaminate.hashing import tokenize, window_hashes, word_bounds
from distillery.decontaminate.index import NgramIndex, SubstringIndex
from distillery.decontaminate.reference import SetNgramIndex
from distillery.decontaminate.stage import BenchmarkFile, DecontaminationConfig, DecontaminationStage
from distillery.errors import RecipeError
from distillery.pipeline.stage import BuildContext
from distillery.records import new_record, verdict_detail
from distillery.text import normalize, word_spans, words
from tests.helpers import SHARED

DATA = SHARED
SHIPPED = ("gsm8k_test", "math500", "humaneval")
Items = dict[str, list[tuple[str, str]]]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def seed_texts() -> list[str]:
    """The 175 Self-Instruct seed tasks (instruction, inputs and outputs): clean text."""
    rows = _jsonl(DATA / "self_instruct" / "seed_tasks.jsonl")
    return [
        r["instruction"] + "\n" + "\n".join(i["input"] + "\n" + i["output"] for i in r["instances"])
        for r in rows
    ]


@pytest.fixture(scope="module")
def gsm8k_train() -> list[str]:
    return [r["question"] + "\n" + r["answer"] for r in _jsonl(DATA / "gsm8k" / "train.jsonl")]


@pytest.fixture(scope="module")
def items() -> Items:
    return {name: bm.load_benchmark(name) for name in SHIPPED}


def _index(cls: type, items: Items, *args: Any, **kwargs: Any) -> Any:
    index = cls(*args, **kwargs)
    for name, pairs in items.items():
        index.add_items(name, pairs)
    return index


@pytest.fixture(scope="module")
def ngram13(items: Items) -> NgramIndex:
    return _index(NgramIndex, items, 13)


@pytest.fixture(scope="module")
def ngram8(items: Items) -> NgramIndex:
    return _index(NgramIndex, items, 8)


def _reference(items: Items, n: int) -> SetNgramIndex:
    ref = SetNgramIndex(n)
    for pairs in items.values():
        for _, text in pairs:
            ref.add(text)
    return ref


# -- the vectorised splitter is distillery.text.words ------------------------------------


def test_vectorised_words_equal_text_words() -> None:
    pool = list("abcXYZ019_ -.,;:'\"\n\t$\\{}()") + [
        "é", "e\u0301", "ﬁ", "Ａ", "５", "²", "İ", "Σ", "ς", "ß", "’", "—", "中", "文", "🙂",
        "\u0663", "\u00a0", "\u200b", "\ud800", "Ⅻ", "ǅ",
    ]  # fmt: skip
    rng = random.Random(0)
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 60))) for _ in range(400)]
    texts += ["ΟΔΟΣ ΟΔΟΣ", "Ǆemal ﬁnds ＡＢＣ １２３", "", "___", "a\nb"]
    text_starts, starts, ends = word_bounds(texts)
    joined = "\n".join(normalize(t) for t in texts)
    for t, text in enumerate(texts):
        lo, hi = text_starts[t], text_starts[t] + len(normalize(text))
        mine = [joined[s:e] for s, e in zip(starts, ends, strict=True) if lo <= s < hi]
        assert mine == words(text), text
    batch = tokenize(texts)
    assert np.diff(batch.word_offsets).tolist() == [len(words(t)) for t in texts]


def test_word_hash_is_position_independent() -> None:
    batch = tokenize(["alpha beta gamma", "x gamma y beta alpha"])
    h = batch.word_hash.tolist()
    assert h[2] == h[4] and h[1] == h[6] and h[0] == h[7] and len(set(h[:3])) == 3
    values = np.arange(1, 40, dtype=np.uint64)
    windows = window_hashes(values, 5, 0x9E3779B97F4A7C15)
    shifted = window_hashes(values[3:8], 5, 0x9E3779B97F4A7C15)
    assert windows[3] == shifted[0]


# -- planted passages are found with the right benchmark, id and span ---------------------


def _plant(clean: str, passage: str) -> tuple[str, int]:
    cut = clean.index(" ", len(clean) // 2)
    text = clean[:cut] + " Café — “" + passage + "” ends here. " + clean[cut:]
    return text, cut + len(" Café — “")


@pytest.mark.parametrize("n", [13, 8])
def test_planted_passages_found(
    n: int, items: Items, seed_texts: list[str], ngram13: NgramIndex, ngram8: NgramIndex
) -> None:
    index = ngram13 if n == 13 else ngram8
    gsm = dict(items["gsm8k_test"])
    math = dict(items["math500"])
    human = dict(items["humaneval"])
    planted = [
        ("gsm8k_test", "gsm8k-test-17", gsm["gsm8k-test-17"].split("\n")[0]),
        ("math500", "test/precalculus/807.json", math["test/precalculus/807.json"].split("\n")[0]),
        ("humaneval", "HumanEval/0", human["HumanEval/0"]),
    ]
    texts, where = [], []
    for k, (_, _, passage) in enumerate(planted):
        text, offset = _plant(seed_texts[k + 10], passage)
        texts.append(text)
        where.append(offset)
    found = index.find(texts)
    for (benchmark, item_id, passage), offset, text, matches in zip(
        planted, where, texts, found, strict=True
    ):
        mine = [h for h in matches.hits if (h.benchmark, h.item_id) == (benchmark, item_id)]
        assert len(mine) == 1, matches.hits
        hit = mine[0]
        _, spans = word_spans(passage)
        assert (hit.start, hit.end) == (offset + spans[0][0], offset + spans[-1][1])
        assert hit.text == text[hit.start : hit.end]
        assert hit.count == matches.matched == len(words(passage)) - n + 1
        # other hits are real overlaps between benchmark items (HumanEval/0 shares code
        # with HumanEval/20), all inside the planted passage
        assert all(hit.start <= h.start < h.end <= hit.end for h in matches.hits)
        assert hit.ngram == " ".join(words(passage)[:n])


def test_substring_method_finds_planted_items(items: Items, seed_texts: list[str]) -> None:
    index = _index(SubstringIndex, items, 50, 3, seed=7)
    gsm = dict(items["gsm8k_test"])
    passage = gsm["gsm8k-test-17"]
    text, offset = _plant(seed_texts[3], passage)
    (matches,) = index.find([text])
    assert matches.matched == 3  # all three sampled substrings of the item are inside
    assert {(h.benchmark, h.item_id) for h in matches.hits} == {("gsm8k_test", "gsm8k-test-17")}
    for hit in matches.hits:
        assert offset <= hit.start < hit.end <= offset + len(passage)
        assert "".join(words(hit.text)) == hit.ngram
        assert len(hit.ngram) == 50
    # deterministic in the seed, different across seeds
    again = _index(SubstringIndex, items, 50, 3, seed=7).find([text])[0]
    other = _index(SubstringIndex, items, 50, 3, seed=8).find([text])[0]
    assert [h.ngram for h in again.hits] == [h.ngram for h in matches.hits]
    assert [h.ngram for h in other.hits] != [h.ngram for h in matches.hits]
    # GPT-4 report: spaces and symbols are removed on both sides before matching
    squashed = "".join(f"{w}{'  ' if k % 2 else '-'}" for k, w in enumerate(words(passage)))
    assert index.find([squashed.upper()])[0].matched == 3


def test_short_items_are_one_whole_ngram() -> None:
    index = NgramIndex(13)
    index.add("tiny", "t-1", "What is 3 + 4?")  # 4 words < 13
    index.add(
        "tiny", "t-2", "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    )
    ref = SetNgramIndex(13)
    ref.add("What is 3 + 4?")
    ref.add("one two three four five six seven eight nine ten eleven twelve thirteen fourteen")
    texts = ["Quick: what is 3+4? Answer 7.", "what is 3", "is 3 + 4", "one two three four five six"]
    found = index.find(texts)
    assert [m.matched for m in found] == [ref.matched(t) for t in texts] == [1, 0, 0, 0]
    assert (found[0].hits[0].item_id, found[0].hits[0].text) == ("t-1", "what is 3+4")
    substrings = SubstringIndex(50)
    substrings.add("tiny", "t-1", "What is 3 + 4?")  # "whatis34" < 50 chars: used whole
    assert [m.matched for m in substrings.find(["so, what is 3 plus 4", "WHAT IS 3 4!"])] == [0, 1]


# -- clean text gives no hits -----------------------------------------------------------


def test_clean_text_has_no_hits(
    items: Items, seed_texts: list[str], gsm8k_train: list[str], ngram13: NgramIndex, ngram8: NgramIndex
) -> None:
    for index in (ngram13, ngram8):
        assert [m.matched for m in index.find(seed_texts)] == [0] * len(seed_texts)
    substrings = _index(SubstringIndex, items)
    assert sum(m.matched for m in substrings.find(seed_texts)) == 0
    # GSM8K train questions that the baseline says do not overlap: no hits either
    ref = _reference(items, 13)
    sample = random.Random(1).sample([t.split("\n")[0] for t in gsm8k_train], 1000)
    clean = [t for t in sample if ref.matched(t) == 0]
    assert len(clean) > 950
    assert sum(m.matched for m in ngram13.find(clean)) == 0


# -- agreement with the plain-Python baseline on a real corpus ------------------------------


def test_gsm8k_train_vs_test_agrees_with_baseline(
    items: Items, gsm8k_train: list[str], ngram8: NgramIndex
) -> None:
    test_only = {"gsm8k_test": items["gsm8k_test"]}
    index = _index(NgramIndex, test_only, 13)
    ref = _reference(test_only, 13)
    found = index.find(gsm8k_train)
    assert [m.matched for m in found] == [ref.matched(t) for t in gsm8k_train]
    hit_items = [i for i, m in enumerate(found) if m.matched]
    # GSM8K train items with a 13-gram in GSM8K test (near-duplicate questions)
    assert len(hit_items) == 7
    assert sum(m.matched for m in found) == 35
    assert all(h.benchmark == "gsm8k_test" for i in hit_items for h in found[i].hits)
    # 8-grams on a slice, all three benchmarks: many more (formula-like) hits, same agreement
    ref8 = _reference(items, 8)
    part = gsm8k_train[:1500]
    assert [m.matched for m in ngram8.find(part)] == [ref8.matched(t) for t in part]


# -- hash collisions never produce hits -----------------------------------------------------


def test_hash_collisions_are_confirmed_away(items: Items, gsm8k_train: list[str]) -> None:
    test_only = {"gsm8k_test": items["gsm8k_test"]}
    exact = _index(NgramIndex, test_only, 13)
    weak = _index(NgramIndex, test_only, 13, hash_bits=10)  # ~1 in 1024 windows collides
    texts = gsm8k_train[:700]
    strong_found, weak_found = exact.find(texts), weak.find(texts)
    assert weak.stats["collisions"] > 200
    assert exact.stats["collisions"] == 0
    assert [m.hits for m in weak_found] == [m.hits for m in strong_found]
    ref = _reference(test_only, 13)
    assert [m.matched for m in weak_found] == [ref.matched(t) for t in texts]
    sub_exact = _index(SubstringIndex, test_only)
    sub_weak = _index(SubstringIndex, test_only, hash_bits=6)
    assert [m.hits for m in sub_weak.find(texts)] == [m.hits for m in sub_exact.find(texts)]
    assert sub_weak.stats["collisions"] > 200


# -- the stage --------------------------------------------------------------------------------


def _record(prompt: str, response: str) -> dict:
    return new_record(id="r", prompt=[{"role": "user", "content": prompt}], response=response)


def test_stage_rejects_with_reason_and_detail(items: Items) -> None:
    stage = DecontaminationConfig().build(BuildContext())
    assert isinstance(stage, DecontaminationStage)
    assert (stage.kind, stage.name, stage.cost) == ("decontaminate", "decontaminate", 3)
    question = dict(items["gsm8k_test"])["gsm8k-test-17"].split("\n")[0]
    dirty = _record("Solve this.", "Sure. " + question + " The answer is 57500.")
    clean = _record("Add 2 and 3.", "2 + 3 = 5, so the answer is 5.")
    survivors = stage.apply([dirty, clean])
    assert survivors == [clean]
    assert dirty["reject_reason"] == "contaminated: 13-gram overlap with gsm8k_test/gsm8k-test-17"
    assert dirty["reject_stage"] == "decontaminate"
    detail = verdict_detail(dirty["verdicts"][-1])
    (hit,) = detail["hits"]
    checked = "Solve this.\n" + dirty["response"]
    assert hit["benchmark"] == "gsm8k_test" and hit["item_id"] == "gsm8k-test-17"
    assert checked[hit["span"][0] : hit["span"][1]] == hit["text"] == question.rstrip("?")
    assert detail["matched"] == len(words(question)) - 12
    assert verdict_detail(clean["verdicts"][-1]) == {"matched": 0}
    assert stage.stats.reasons["contaminated"] == 1
    # the built-in index is built once per process
    assert DecontaminationConfig().build(BuildContext()).index is stage.index
    # min_hits: a few shared n-grams are tolerated
    lenient = DecontaminationConfig(min_hits=1000).build(BuildContext())
    again = _record("Solve this.", question)
    assert lenient.apply([again]) == [again]
    assert verdict_detail(again["verdicts"][-1])["hits"][0]["item_id"] == "gsm8k-test-17"


def test_stage_substring_method_and_fields(items: Items) -> None:
    config = DecontaminationConfig(type="substring", benchmarks=["humaneval"], fields=["response"])
    stage = config.build(BuildContext())
    code = dict(items["humaneval"])["HumanEval/0"]
    in_prompt = _record(code, "I will not copy it.")
    in_response = _record("Write code.", "```python\n" + code + "```")
    assert stage.apply([in_prompt, in_response]) == [in_prompt]
    assert in_response["reject_reason"] == "contaminated: 50-char substring match with humaneval/HumanEval/0"
    with pytest.raises(ValueError, match="unknown text field"):
        DecontaminationConfig(fields=["answer"])


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".parquet"])
def test_recipe_named_file_benchmark(tmp_path: Path, suffix: str) -> None:
    rows = [
        {
            "qid": "q-1",
            "question": "How many legs do three spiders and two ants have in total, counting all?",
            "x": 1,
        },
        {
            "qid": "q-2",
            "question": "Name the capital city of the country whose flag shows a maple leaf.",
            "x": 2,
        },
    ]
    path = tmp_path / "evals" / f"my_eval{suffix}"
    path.parent.mkdir()
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    entry = {"path": f"evals/my_eval{suffix}", "text_fields": ["question"], "id_field": "qid", "name": "mine"}
    config = DecontaminationConfig.model_validate({"benchmarks": ["gsm8k_test", entry], "ngram": 8})
    assert isinstance(config.benchmarks[1], BenchmarkFile)
    stage = config.build(BuildContext(base_dir=tmp_path))
    record = _record("Quiz time", "name the capital city of the country whose flag shows a maple leaf")
    stage.apply([record])
    assert record["reject_reason"] == "contaminated: 8-gram overlap with mine/q-2"
    # default ids are <file stem>-<row>
    default = bm.read_benchmark_file(path, ["question"])
    assert [i for i, _ in default] == ["my_eval-0", "my_eval-1"]


def test_missing_or_bad_benchmarks_raise_recipe_error(tmp_path: Path) -> None:
    config = DecontaminationConfig(benchmarks=[BenchmarkFile(path="nope/eval.jsonl", text_fields=["q"])])
    with pytest.raises(RecipeError, match=str(tmp_path / "nope" / "eval.jsonl")):
        config.build(BuildContext(base_dir=tmp_path))
    with pytest.raises(RecipeError, match="unknown benchmark 'no_such_bench'"):
        DecontaminationConfig(benchmarks=["no_such_bench"]).build(BuildContext())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "fine"}\n{"other": 1}\n')
    with pytest.raises(RecipeError, match=r"bad.jsonl:2: benchmark row has no field 'q'"):
        bm.read_benchmark_file(bad, ["q"])
    csv = tmp_path / "eval.csv"
    csv.write_text("q\n")
    with pytest.raises(RecipeError, match="must be .jsonl"):
        bm.read_benchmark_file(csv, ["q"])


def test_registry(items: Items) -> None:
    assert set(SHIPPED) <= set(bm.registered_benchmarks())
    assert [len(items[n]) for n in SHIPPED] == [1319, 500, 164]
    assert items["gsm8k_test"][17][0] == "gsm8k-test-17"
    assert all("<<" not in text for _, text in items["gsm8k_test"])  # calculator annotations removed
    assert items["humaneval"][0][0] == "HumanEval/0"

    def loader() -> Iterator[tuple[str, str]]:
        yield "toy-0", "the quick brown fox jumps over the lazy dog near the river bank today"

    try:
        bm.register_benchmark("toy_test", loader)
        bm.register_benchmark("toy_test", loader)  # same loader again: fine
        with pytest.raises(ValueError, match="already registered"):
            bm.register_benchmark("toy_test", lambda: [])
        stage = DecontaminationConfig(benchmarks=["toy_test"], ngram=5).build(BuildContext())
        record = _record("", "A quick brown fox jumps over the lazy dog.")
        stage.apply([record])
        assert record["reject_reason"] == "contaminated: 5-gram overlap with toy_test/toy-0"
    finally:
        bm.unregister_benchmark("toy_test")
    assert "toy_test" not in bm.registered_benchmarks()
