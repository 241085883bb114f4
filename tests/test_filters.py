from __future__ import annotations

from distillery.dedup.exact import ExactDedup, ExactDedupConfig
from distillery.filter.length import LengthConfig, LengthFilter, approx_tokens
from distillery.filter.repetition import RepetitionConfig, RepetitionFilter, repeated_ngram_ratio
from distillery.records import new_record
from distillery.verify.math_answer import MathAnswerConfig, MathAnswerVerifier


def rec(response: str, tokens_out: int | None = None, rid: str = "r", seed=None, question="q?"):
    return new_record(id=rid, response=response, tokens_out=tokens_out, seed=seed or {},
                      prompt=[{"role": "user", "content": question}])


def test_length_band_reasons():
    f = LengthFilter(LengthConfig(min_tokens=3, max_tokens=5, max_chars=30))
    records = [rec("a b c d", 4), rec("a", 1), rec("a b c d e f g", 7), rec("x" * 40, 4), rec("one two three four")]
    kept = f.apply(records)
    assert [r["id"] for r in kept] == ["r", "r"]
    assert records[1]["reject_reason"] == "too_short: 1 < 3 tokens"
    assert records[2]["reject_reason"] == "too_long: 7 > 5 tokens"
    assert records[3]["reject_reason"] == "too_long: 40 > 30 chars"
    assert records[4]["accepted"] and '"approx_tokens": 4' in records[4]["verdicts"][0]["detail"]
    assert f.stats.records_in == 5 and f.stats.records_out == 2 and f.stats.reasons == {"too_short": 1, "too_long": 2}


def test_approx_tokens():
    assert approx_tokens("Hello, world!") == 4


def test_repetition_filter():
    loop = "the cat sat on the mat " * 10
    assert repeated_ngram_ratio(loop, 3) > 0.8
    assert repeated_ngram_ratio("a b c d e f g h i j k l", 3) == 0.0
    f = RepetitionFilter(RepetitionConfig(n=3, max_ratio=0.3))
    bad, ok, short = rec(loop), rec(" ".join(f"w{i}" for i in range(40))), rec("the the the")
    f.apply([bad, ok, short])
    assert not bad["accepted"] and bad["reject_reason"].startswith("repetitive: ")
    assert ok["accepted"] and short["accepted"]


def test_math_answer_verdicts_keep_extracted_answers():
    v = MathAnswerVerifier(MathAnswerConfig(reference="answer"))
    right = rec("2 + 2 = 4\n#### 4", seed={"answer": "so #### 4"})
    wrong = rec("The answer is 5.", seed={"answer": "#### 4"})
    none = rec("I do not know", seed={"answer": "4"})
    v.apply([right, wrong, none])
    assert right["accepted"] and '"predicted": "4"' in right["verdicts"][0]["detail"]
    assert wrong["reject_reason"] == "wrong_answer: 5 != 4"
    assert none["reject_reason"].startswith("no_answer")


def test_exact_dedup_within_and_across_batches():
    d = ExactDedup(ExactDedupConfig(fields=["response"]))
    a, b, c = rec("Same  text", rid="a"), rec("same text", rid="b"), rec("other", rid="c")
    kept = d.apply([a, b, c])
    assert [r["id"] for r in kept] == ["a", "c"] and b["reject_reason"] == "exact_duplicate: same text as a"
    d.commit(kept)
    later = rec("SAME TEXT", rid="d")
    d.apply([later])
    assert later["reject_reason"] == "exact_duplicate: same text as a"
