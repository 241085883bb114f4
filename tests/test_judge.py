"""The LLM judge: verdict parsing and order-swap combination as pure functions; the stage
end to end against real HTTP servers: a deliberately position-biased judge (always prefers
the first answer: a fault a real model cannot be made to show on demand), an honest scripted
judge, and a real `transformers serve` of the tests' tiny model."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from pathlib import Path

import pytest

from distillery.pipeline.stage import BuildContext
from distillery.records import new_record
from distillery.verify.judge import JudgeConfig, JudgeStage
from distillery.verify.judge_parse import (
    combine_verdicts,
    outcome_for,
    pairwise_summary,
    parse_score,
    parse_verdict,
    win_rate,
)
from tests.fault_server import FaultServer

QUESTION = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"
RIGHT = "In May she sold 48/2 = 24 clips.\nAltogether 48 + 24 = 72 clips.\n#### 72"
RIGHT2 = "She sold 24 clips in May, so 48 + 24 = 72 in all.\n#### 72"
WRONG = "She sold 48 + 48 = 96 clips.\n#### 96"


# -- pure functions ------------------------------------------------------------------------
def test_all_nine_order_swapped_combinations():
    # (verdict with the candidate shown first, verdict with the candidate shown second) -> outcome, consistent
    expected = {
        ("A", "A"): ("tie", False),  # picks the first position both times: position bias, cancelled
        ("A", "B"): ("win", True),  # the candidate wins in both orders
        ("A", "tie"): ("tie", False),
        ("B", "A"): ("loss", True),  # the other answer wins in both orders
        ("B", "B"): ("tie", False),  # picks the second position both times
        ("B", "tie"): ("tie", False),
        ("tie", "A"): ("tie", False),
        ("tie", "B"): ("tie", False),
        ("tie", "tie"): ("tie", True),
    }
    for first, second in itertools.product(("A", "B", "tie"), repeat=2):
        assert combine_verdicts(first, second) == expected[(first, second)], (first, second)
    assert outcome_for("A", "A") == "win" and outcome_for("A", "B") == "loss" and outcome_for("tie", "B") == "tie"
    with pytest.raises(ValueError):
        combine_verdicts("A", "C")


def test_score_parsing():
    assert parse_score("Good answer.\nScore: [[8]]") == (8.0, "brackets")
    assert parse_score("Rating: [[7/10]]")[0] == 7.0
    assert parse_score("The score is 6 because ...") == (6.0, "labelled")
    assert parse_score("I'd give it a score of **9**.")[0] == 9.0
    assert parse_score("Overall 4 out of 10.") == (4.0, "fraction")
    assert parse_score("Step 1/10 done. Score: 5")[0] == 5.0  # labelled beats fraction
    assert parse_score(" 7 ") == (7.0, "bare")
    assert parse_score("Score: [[3]] ... revised Score: [[5]]")[0] == 5.0  # the last one counts
    assert parse_score("Score: 42") == (None, "score 42 outside [1, 10]")
    assert parse_score("") == (None, "empty reply")
    score, why = parse_score("48/2 = 24 clips #### 72")
    assert score is None and why.startswith('no score in "48/2 = 24')


def test_verdict_parsing_and_win_rate():
    assert parse_verdict("A is clearer. [[A]]") == "A"
    assert parse_verdict("[[B]]") == "B" and parse_verdict("[[C]]") == "tie" and parse_verdict("[[tie]]") == "tie"
    assert parse_verdict("Verdict: Response B") == "B"
    assert parse_verdict("Final verdict: [[A]] ... no, [[B]]") == "B"
    assert parse_verdict("B") == "B" and parse_verdict("tie.") == "tie"
    assert parse_verdict("Both are bad") is None and parse_verdict(None) is None and parse_verdict("A or B?") is None
    assert win_rate(["win", "tie", "loss", "loss"]) == 0.375
    with pytest.raises(ValueError):
        win_rate([])


def test_pairwise_summary_measures_position_and_length_bias():
    biased = [
        {"verdict_candidate_first": "A", "verdict_candidate_second": "A", "outcome": "tie", "consistent": False,
         "len_candidate": 10, "len_other": 20},
    ] * 3
    fair = [
        {"verdict_candidate_first": "A", "verdict_candidate_second": "B", "outcome": "win", "consistent": True,
         "len_candidate": 50, "len_other": 20},
        {"verdict_candidate_first": "B", "verdict_candidate_second": "A", "outcome": "loss", "consistent": True,
         "len_candidate": 50, "len_other": 20},
        {"verdict_candidate_first": None, "verdict_candidate_second": "A"},
    ]
    assert pairwise_summary(biased) == {
        "comparisons": 3, "consistency_rate": 0.0, "first_position_rate": 1.0, "decisive": 0, "longer_wins_rate": None,
    }
    assert pairwise_summary(fair) == {
        "comparisons": 2, "consistency_rate": 1.0, "first_position_rate": 0.5, "decisive": 2, "longer_wins_rate": 0.5,
    }


# -- scripted judges behind a real HTTP server --------------------------------------------------
def answers_in(body: dict) -> tuple[str, str]:
    """(Response A, Response B) of a request built from the default pairwise template."""
    text = body["messages"][-1]["content"]
    a = text.split("[Response A]\n", 1)[1].split("\n\n[Response B]\n", 1)[0]
    b = text.split("[Response B]\n", 1)[1].split("\n\nFirst explain", 1)[0]
    return a, b


class Judges:
    """Scripts for FaultServer: what a judge answers, and every request body it saw."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0

    def _seen(self, body: dict) -> None:
        with self.lock:
            self.bodies.append(body)

    def first_position(self, n: int, body: dict):
        self._seen(body)
        return ("ok", "Response A is better in every respect.\n[[A]]")

    def honest(self, n: int, body: dict):
        """Prefers the answer ending in #### 72 (the right one); unreadable for 'PLEASE CONFUSE'."""
        self._seen(body)
        a, b = answers_in(body)
        if "PLEASE CONFUSE" in a + b:
            return ("ok", "Both have merits, hard to say.")
        if "PLEASE FAIL" in a + b:
            return ("status", 400)
        good_a, good_b = a.endswith("#### 72"), b.endswith("#### 72")
        return ("ok", "[[C]]" if good_a == good_b else ("[[A]]" if good_a else "[[B]]"))

    def grader(self, n: int, body: dict):
        self._seen(body)
        text = body["messages"][-1]["content"]
        if "#### 72" in text:
            return ("ok", "Correct and clear.\nScore: [[9]]")
        if "#### 96" in text:
            return ("ok", "Wrong result.\nScore: [[2]]")
        if "MUMBLE" in text:
            return ("ok", "It is a response.")
        return ("status", 400)

    def slow(self, n: int, body: dict):
        self._seen(body)
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        time.sleep(0.3)
        with self.lock:
            self.in_flight -= 1
        return ("ok", "Score: 8")


def judge_config(server: FaultServer, **kw) -> JudgeConfig:
    model = {"backend": "openai", "model": server.model, "base_url": server.base_url, "max_retries": 0,
             "concurrency": kw.pop("concurrency", 8)}
    return JudgeConfig(model=model, **kw)


def rec(rid: str, response: str, seed_id: str = "s1", **seed) -> dict:
    return new_record(id=rid, seed_id=seed_id, response=response, seed={"answer": RIGHT, **seed},
                      prompt=[{"role": "user", "content": QUESTION}])


def detail(record: dict) -> dict:
    return json.loads(record["verdicts"][-1]["detail"])


def test_position_biased_judge_is_cancelled_to_ties(tmp_path: Path):
    judges = Judges()
    server = FaultServer(judges.first_position)
    try:
        config = judge_config(server, mode="pairwise", reference="answer")
        stage = config.build(BuildContext(run_dir=tmp_path))
        assert isinstance(stage, JudgeStage) and stage.scope == "record" and stage.cost == 1000
        records = [rec("good", RIGHT2), rec("bad", WRONG), rec("long", WRONG + "\n" + "Let me explain again. " * 20)]
        kept = stage.apply(records)
        # every pair combined to a tie: the bias is cancelled, nothing wins or loses on position
        for r in records:
            (c,) = detail(r)["comparisons"]
            assert (c["verdict_candidate_first"], c["verdict_candidate_second"]) == ("A", "A")
            assert c["outcome"] == "tie" and c["consistent"] is False
            assert c["len_candidate"] == len(r["response"]) and c["len_other"] == len(RIGHT)
            assert detail(r)["win_rate"] == 0.5
        assert len(kept) == 3  # a tie reaches min_win_rate 0.5
        # both orders were requested: each candidate was shown once as A and once as B
        shown = [answers_in(b) for b in judges.bodies]
        assert len(shown) == 6
        for r in records:
            assert (r["response"], RIGHT) in shown and (RIGHT, r["response"]) in shown
        assert stage.summary()["pairwise"] == {
            "comparisons": 3, "consistency_rate": 0.0, "first_position_rate": 1.0, "decisive": 0, "longer_wins_rate": None,
        }
        assert stage.summary()["calls"] == 6
        # demanding more than a tie rejects everything, with the counts in the reason
        strict = judge_config(server, mode="pairwise", reference="answer", min_win_rate=0.75).build(BuildContext())
        again = [rec("good", RIGHT2)]
        strict.apply(again)
        assert again[0]["reject_reason"] == "lost_pairwise: win rate 0.50 < 0.75 (0 win, 1 tie, 0 loss vs the reference)"
        stage.close()
        strict.close()
    finally:
        server.close()


def test_consistent_judgements_win_and_lose_and_unreadable_is_rejected(tmp_path: Path):
    judges = Judges()
    server = FaultServer(judges.honest)
    try:
        stage = judge_config(server, mode="pairwise", reference="answer").build(BuildContext(run_dir=tmp_path))
        good, bad, confusing, no_ref = rec("g", RIGHT2), rec("b", WRONG), rec("c", "PLEASE CONFUSE"), rec("n", RIGHT)
        no_ref["seed"] = {}
        failing = rec("f", "PLEASE FAIL")
        stage.apply([good, bad, confusing, no_ref, failing])
        assert failing["reject_reason"].startswith("judge_error: http_400: ")
        assert good["accepted"] and detail(good)["comparisons"][0]["outcome"] == "tie"  # same as the reference
        assert bad["reject_reason"] == "lost_pairwise: win rate 0.00 < 0.5 (0 win, 0 tie, 1 loss vs the reference)"
        c = detail(bad)["comparisons"][0]
        assert (c["verdict_candidate_first"], c["verdict_candidate_second"], c["consistent"]) == ("B", "A", True)
        assert confusing["reject_reason"].startswith('judge_unparseable: no verdict (candidate first) in "Both have merits')
        assert no_ref["reject_reason"] == "bad_reference: seed field 'answer' is missing or empty"
        assert stage.stats.reasons == {"lost_pairwise": 1, "judge_unparseable": 1, "bad_reference": 1, "judge_error": 1}
        served = server.requests
        stage.close()
        # a second stage on the same run directory answers from the judge cache: no request
        again = judge_config(server, mode="pairwise", reference="answer").build(BuildContext(run_dir=tmp_path))
        repeat = [rec("g", RIGHT2), rec("b", WRONG)]
        again.apply(repeat)
        assert server.requests == served and again.summary()["cache_hits"] == 4
        assert (tmp_path / "judge-cache").is_dir()
        assert not repeat[1]["accepted"] and repeat[1]["reject_reason"].startswith("lost_pairwise")
        again.close()
    finally:
        server.close()


def test_pairwise_among_the_candidates_of_a_prompt():
    judges = Judges()
    server = FaultServer(judges.honest)
    try:
        stage = judge_config(server, mode="pairwise").build(BuildContext())
        assert stage.scope == "prompt"
        group = [rec("s1#0", RIGHT), rec("s1#1", WRONG), rec("s1#2", WRONG + " ")]
        alone = rec("s2#0", WRONG, seed_id="s2")
        kept = asyncio.run(stage.apply_async(group + [alone]))
        assert server.requests == 6  # 3 pairs x 2 orders; the lone candidate costs nothing
        d0 = detail(group[0])
        assert [c["outcome"] for c in d0["comparisons"]] == ["win", "win"] and d0["win_rate"] == 1.0
        assert {c["other"] for c in d0["comparisons"]} == {"s1#1", "s1#2"}
        assert group[1]["reject_reason"] == "lost_pairwise: win rate 0.25 < 0.5 (0 win, 1 tie, 1 loss vs 2 other candidate(s))"
        assert alone["accepted"] and detail(alone)["comparisons"] == [] and "note" in detail(alone)
        assert [r["id"] for r in kept] == ["s1#0", "s2#0"]
        assert stage.summary()["pairwise"]["consistency_rate"] == 1.0
        stage.close()
    finally:
        server.close()


def test_rubric_scores_threshold_unparseable_and_errors():
    judges = Judges()
    server = FaultServer(judges.grader)
    try:
        stage = judge_config(server, threshold=7).build(BuildContext())
        good, bad, mumble, broken = rec("g", RIGHT), rec("b", WRONG), rec("m", "MUMBLE"), rec("x", "trigger a 400")
        kept = stage.apply([good, bad, mumble, broken])
        assert [r["id"] for r in kept] == ["g"] and detail(good)["score"] == 9.0 and detail(good)["form"] == "brackets"
        assert bad["reject_reason"] == "low_score: 2 < 7"
        assert mumble["reject_reason"] == 'judge_unparseable: no score in "It is a response."'
        assert detail(mumble)["reply"] == "It is a response."
        assert broken["reject_reason"].startswith("judge_error: http_400: ")
        assert stage.stats.reasons == {"low_score": 1, "judge_unparseable": 1, "judge_error": 1}
        # the default rubric was sent, with the prompt and response filled in, greedy decoding
        body = judges.bodies[0]
        assert body["temperature"] == 0.0 and body["messages"][0]["role"] == "system"
        assert QUESTION in body["messages"][-1]["content"] and "Score: [[n]]" in body["messages"][-1]["content"]
        stage.close()
    finally:
        server.close()


def test_custom_template_with_seed_fields_and_concurrency():
    judges = Judges()
    server = FaultServer(judges.slow)
    try:
        config = judge_config(server, template="Topic {{ topic }}. Q: {{ prompt }} A: {{ response }}", system="",
                              concurrency=8)
        stage = config.build(BuildContext())
        assert stage.config.inputs == ("prompt", "seed.topic")
        records = [rec(f"r{i}", f"answer {i}", topic="clips") for i in range(8)]
        start = time.perf_counter()
        kept = stage.apply(records)
        elapsed = time.perf_counter() - start
        assert len(kept) == 8 and judges.max_in_flight > 1 and elapsed < 8 * 0.3
        assert judges.bodies[0]["messages"] == [
            {"role": "user", "content": judges.bodies[0]["messages"][0]["content"]}
        ]  # system: "" sends no system message
        assert judges.bodies[0]["messages"][0]["content"].startswith("Topic clips. Q: Natalia")
        stage.close()
    finally:
        server.close()


def test_config_validation():
    with pytest.raises(ValueError, match=r"model\.bogus"):
        JudgeConfig(model={"model": "m", "bogus": 1})
    with pytest.raises(ValueError, match="reference is a pairwise option"):
        JudgeConfig(model={"model": "m"}, reference="answer")
    config = JudgeConfig(model={"model": "m", "sampling": {"temperature": 0.3}})
    assert config.model.sampling.temperature == 0.3
    assert JudgeConfig(model={"model": "m"}).model.sampling.temperature == 0.0
    dumped = JudgeConfig(model={"model": "m"}).model_dump(mode="json")
    assert dumped["model"]["model"] == "m" and JudgeConfig.model_validate(dumped).model.model == "m"


# -- a real model server -----------------------------------------------------------------------
def test_judge_through_a_real_transformers_serve(gsm8k_server, tmp_path: Path):
    """The tiny model's replies are meaningless as judgements: assert the mechanics."""
    model = {"backend": "openai", "model": gsm8k_server.model, "base_url": gsm8k_server.base_url,
             "concurrency": 4, "sampling": {"temperature": 0.0, "max_tokens": 12}}
    pairwise = JudgeConfig(mode="pairwise", reference="answer", model=model).build(BuildContext(run_dir=tmp_path))
    records = [rec("g", RIGHT), rec("b", WRONG), rec("c", "Natalia sold 72 clips.")]
    before = gsm8k_server.completions_served()
    pairwise.apply(records)
    # both orders for each of 3 candidates; the right answer against the reference (the same text) is one
    # request whichever goes first (the judge sends each distinct request once)
    assert gsm8k_server.completions_served() - before == 5
    unreadable = 0
    for r in records:
        (c,) = detail(r)["comparisons"]
        assert len(c["replies"]) == 2 and c["len_candidate"] == len(r["response"]) and c["len_other"] == len(RIGHT)
        if "unparseable" in c:
            unreadable += 1
            assert not r["accepted"] and r["reject_reason"].startswith("judge_unparseable: no verdict")
        else:
            assert c["outcome"] in ("win", "tie", "loss") and isinstance(c["consistent"], bool)
    assert unreadable >= 1  # a GSM8K model does not write [[A]]
    pairwise.close()
    rubric = JudgeConfig(model=model).build(BuildContext(run_dir=tmp_path))
    graded = [rec("g", RIGHT)]
    rubric.apply(graded)
    d = detail(graded[0])
    assert d["reply"] is not None
    assert graded[0]["accepted"] or graded[0]["reject_reason"].split(":")[0] in ("judge_unparseable", "low_score")
    rubric.close()
