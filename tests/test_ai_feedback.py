"""AI-feedback preference pairs (RLAIF, Lee et al., 2023; UltraFeedback, Cui et al., 2023),
strategy ``ai_feedback``: rating parsing (well-formed, wrapped, malformed) and the three
binarization rules on constructed cases; the strategy end to end through the real pipeline
(HTTP clients, cache, budget metering, filters, dedup) with two teachers and a judge, each a
replay teacher — a real local HTTP server answering with hand-written outputs of capable
models: right and wrong GSM8K solutions, a refusal, an empty reply, a word-for-word duplicate,
and judge answers that are clean JSON, JSON in prose, prose without JSON, JSON missing an
aspect, a rating out of range — and that run's pairs as the DPO trainer reads them; a self-judged run with the margin rule; and the shipped
recipe once against a real `transformers serve` with the tiny GSM8K model (mechanics only:
its text is poor)."""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path

import pytest

from distillery.generate.ai_feedback import aspect_key, binarize, overall, parse_ratings
from distillery.recipe import Recipe
from tests.helpers import REPO, run_pipeline
from tests.replay_server import ReplayTeacher

RECIPE = REPO / "recipes" / "ai-feedback.yaml"
ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")
with gzip.open(REPO / "data" / "gsm8k" / "train.jsonl.gz", "rt") as fh:
    ROWS = [json.loads(next(fh)) for _ in range(5)]


def rating(h, o, i, t, why="Clear and correct.") -> str:
    """A judge's JSON answer with ratings for the four aspects."""
    return json.dumps({a: {"rating": v, "rationale": why} for a, v in zip(ASPECTS, (h, o, i, t), strict=True)})


# -- constructed cases --------------------------------------------------------------------------
def test_parse_ratings():
    good, why = parse_ratings(rating(5, 4, 4, 3), ASPECTS)
    assert why is None and good["honesty"] == {"rating": 4.0, "rationale": "Clear and correct."}
    assert overall(good) == 4.0
    wrapped = ('Here is my evaluation.\n```json\n{"ratings": {"Helpfulness": {"score": "4/5", "reason": "ok"}, '
               '"Honesty": 5, "Instruction Following": {"rating": 4}, "truthfulness": "5"}}\n```')
    value, why = parse_ratings(wrapped, ASPECTS)
    assert why is None and [value[a]["rating"] for a in ASPECTS] == [4.0, 5.0, 4.0, 5.0]
    assert value["helpfulness"]["rationale"] == "ok" and value["honesty"]["rationale"] == ""
    ten, why = parse_ratings(rating(9, 8, 10, 7), ASPECTS, scale=10)
    assert why is None and overall(ten) == 8.5
    bad = {
        "The reply is correct and clear; I would rate it highly.": "malformed_json: no JSON dict found",
        "": "empty_response:",
        json.dumps({"helpfulness": 4, "honesty": 4, "instruction_following": 4}): "missing_aspect: truthfulness",
        rating(7, 4, 4, 4): "rating_out_of_range: helpfulness=7 not in [1, 5]",
        rating(0, 4, 4, 4): "rating_out_of_range: helpfulness=0 not in [1, 5]",
        json.dumps({a: {"rating": True} for a in ASPECTS}): "wrong_type: a rating is a boolean (aspect helpfulness)",
        json.dumps({a: {"rationale": "fine"} for a in ASPECTS}): "missing_aspect: helpfulness has no rating",
        json.dumps({a: "excellent" for a in ASPECTS}): "no_score: no rating in [1, 5]",
    }
    for text, reason in bad.items():
        value, why = parse_ratings(text, ASPECTS)
        assert value is None and why.startswith(reason), (text, why)
    assert aspect_key(" Instruction-Following ") == "instruction_following"


def test_binarize_rules():
    scores = [4.25, 5.0, 2.0, 3.75]
    assert binarize(scores, "best_vs_worst") == ((1, 2), None)
    picks = {binarize(scores, "best_vs_random", rng=random.Random(s))[0] for s in range(60)}
    assert picks == {(1, 0), (1, 2), (1, 3)}  # the best over each lower one, at random
    assert binarize(scores, "best_vs_random", rng=random.Random(7)) == binarize(scores, "best_vs_random", rng=random.Random(7))
    assert {binarize(scores, "margin", 1.0, random.Random(s))[0] for s in range(60)} == {(1, 2), (1, 3)}
    assert binarize(scores, "margin", 3.0) == ((1, 2), None)
    assert binarize(scores, "margin", 3.5) == (None, "no_pair: no candidate scores 3.5 or more below the best (5; lowest 2)")
    for rule in ("best_vs_random", "best_vs_worst", "margin"):
        assert binarize([4.0, 4.0, 4.0], rule) == (None, "no_pair: all 3 rated candidates score 4")
        assert binarize([3.0], rule) == (None, "no_pair: 1 rated candidate(s), a pair needs 2")
        assert binarize([], rule)[0] is None
    # ties for best and worst are broken at random, never by position alone
    ties = {binarize([5.0, 1.0, 5.0, 1.0], "best_vs_worst", rng=random.Random(s))[0] for s in range(60)}
    assert ties == {(0, 1), (0, 3), (2, 1), (2, 3)}
    with pytest.raises(ValueError, match="unknown binarize rule"):
        binarize(scores, "best_vs_median")


# -- replay teachers, end to end ------------------------------------------------------------------
Q = [r["question"] for r in ROWS]
NAT_BEST = ("In May Natalia sold half of 48, which is 48 / 2 = 24 clips. Altogether she sold 48 + 24 = 72 clips in "
            "April and May.\n#### 72")
JULIE_BEST = ("Yesterday Julie read 12 pages and today twice as many, 12 x 2 = 24 pages, so 12 + 24 = 36 pages so far. "
              "That leaves 120 - 36 = 84 pages, and half of them is 84 / 2 = 42 pages.\n#### 42")
JAMES_BEST = ("Each letter is 3 pages and he writes to 2 friends, so 3 x 2 = 6 pages each time. He does this twice a "
              "week: 6 x 2 = 12 pages a week. A year has 52 weeks, so 12 x 52 = 624 pages.\n#### 624")
# question -> four candidates (seeds 0, 1 from teacher A; 2, 3 from teacher B), each with the judge's answer
CANDIDATES = {
    Q[0]: [(NAT_BEST, rating(5, 5, 5, 5)),
           ("She sold 48 clips in April and 24 in May, which makes 72 clips in total.\n#### 72", rating(4, 4, 5, 4)),
           ("Half of 48 is 24, so she sold 24 clips in May. The total is 48 + 24 = 62 clips.\n#### 62", rating(2, 3, 2, 1)),
           ("Great question! April: 48 clips. May: half as many, so 24 clips. Adding both months gives 72 clips.\n#### 72",
            rating(4, 4, 3, 4))],
    Q[1]: [("Weng earns 12 / 60 = $0.20 per minute, so for 50 minutes she earned 0.2 x 50 = $10.\n#### 10",
            "The reply is correct and clear; I would rate it highly on every aspect."),
           ("50 minutes is 5/6 of an hour, and 5/6 of $12 is $10.\n#### 10",
            json.dumps({"helpfulness": {"rating": 4, "rationale": "ok"}, "honesty": {"rating": 4, "rationale": "ok"},
                        "instruction_following": {"rating": 4, "rationale": "ok"}})),
           ("She earns $12 per hour. 50 minutes is less than an hour, so she earned $12 x 50 / 60 = $10.\n#### 10",
            rating(7, 4, 4, 4)),
           ("At $12 an hour she makes $0.20 a minute; 50 minutes pays 50 x 0.20 = $10.\n#### 10", rating(4, 4, 4, 4))],
    Q[2]: [("Betty has half of $100, which is $50. Her parents give $15 and her grandparents twice that, $30. She "
            "still needs 100 - 50 - 15 - 30 = $5.\n#### 5", rating(4, 4, 4, 4)),
           ("She has $50, gets $15 + $30 = $45 more, so she has $95 and needs $5.\n#### 5", rating(4, 4, 4, 4)),
           ("Money she has: 100 / 2 = 50. Gifts: 15 + 2 x 15 = 45. Missing: 100 - 95 = 5 dollars.\n#### 5",
            rating(4, 4, 4, 4)),
           ("Half the wallet is $50; parents $15; grandparents $30. Total $95, so $5 more is needed.\n#### 5",
            rating(4, 4, 4, 4))],
    Q[3]: [(JULIE_BEST,
            'Here is my evaluation:\n```json\n{"Helpfulness": {"rating": "5/5", "rationale": "Complete."}, '
            '"Honesty": {"rating": 5, "rationale": "Plain."}, "Instruction Following": {"rating": 5, "rationale": '
            '"Ends with the answer line."}, "Truthfulness": {"rating": 5, "rationale": "All steps right."}}\n```'),
           ("Julie read 12 + 24 = 36 pages, so 84 are left and she should read 42 pages tomorrow.\n#### 42",
            rating(3, 3, 3, 3)),
           ("", "unused"),
           (JULIE_BEST, "unused")],  # word for word the same as candidate 0
    Q[4]: [("I'm sorry, but I can't help with that.", rating(1, 2, 1, 1, "It declines a harmless question.")),
           ("He writes 3 x 2 = 6 pages a week, so in a year he writes 6 x 52 = 312 pages.\n#### 312", rating(2, 3, 2, 2)),
           (JAMES_BEST, rating(5, 5, 5, 5)),
           ("3 pages x 2 friends x 2 times = 12 pages weekly; 12 x 52 = 624 pages a year.\n#### 624", rating(4, 5, 4, 5))],
}
JUDGE: dict[str, str] = {}
for _cands in CANDIDATES.values():
    for _text, _judged in _cands:
        JUDGE.setdefault(_text, _judged)  # a duplicate candidate's judge answer is never asked for
_REPLY = re.compile(r"<reply>\n(.*?)\n</reply>", re.S)


def _writer(text: str, body: dict) -> str:
    for question, cands in CANDIDATES.items():
        if question in text:
            return cands[int(body["seed"]) % 4][0]
    return "I'm not sure."


def _judge(text: str, body: dict) -> str:
    m = _REPLY.search(text)
    return JUDGE.get(m.group(1), "no idea") if m else "no idea"


def _seeds(tmp_path: Path, rows) -> Path:
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_replay_two_teachers_and_a_judge(tmp_path: Path):
    """Five GSM8K questions, two candidates from each of two teachers, rated by a third model,
    best vs random. Three prompts make pairs (one chosen from the second teacher, one through
    JSON in prose with spaced keys); one loses three candidates to unparseable ratings (prose,
    a missing aspect, a rating of 7 of 5) and one has only equal scores: both rejected
    ``no_pair``. An empty reply and a duplicate are dropped before rating. The DPO trainer's
    reader takes the three pairs as they are."""
    servers = [ReplayTeacher([(r".", _writer)], model="replay-a"), ReplayTeacher([(r".", _writer)], model="replay-b"),
               ReplayTeacher([(r"<reply>", _judge)], model="replay-judge")]
    a, b, judge = servers
    out = tmp_path / "run"
    try:
        recipe = Recipe.from_yaml(RECIPE, {
            "teacher.base_url": a.base_url, "teacher.model": a.model, "teacher.concurrency": 4,
            "generation.samples_per_teacher": 2,
            "generation.teachers": [{"backend": "openai", "model": b.model, "base_url": b.base_url, "concurrency": 4}],
            "generation.judge": {"backend": "openai", "model": judge.model, "base_url": judge.base_url},
            "seeds.path": str(_seeds(tmp_path, ROWS)), "seeds.shuffle_seed": None,
            "output.dir": str(out), "report.embedding_model": None})
        report, accepted, rejected = run_pipeline(recipe, out)
        assert [len(s.requests(r"<reply>")) for s in servers] == [0, 0, 18]  # 20 candidates, 2 dropped unrated
        assert len(a.log) == len(b.log) == 10 and len(judge.log) == 18
        assert all(s.unmatched == [] for s in servers)
        body = judge.log[0][0]
        assert body["temperature"] == 0.0 and "response_format" not in body
        assert report["cache"]["backend_calls"] == 38
    finally:
        for s in servers:
            s.close()
    assert report["candidates"] == 5 and report["accepted"] == 3
    by_q = {r["seed"]["question"]: r for r in accepted + rejected}
    # Natalia: the best (5.0) over a random lower one, drawn as binarize draws it
    nat = by_q[Q[0]]
    scores = [5.0, 4.25, 2.0, 3.75]
    (best, low), _ = binarize(scores, "best_vs_random", rng=random.Random(f"0-{nat['seed_id']}"))
    assert nat["accepted"] and nat["response"] == NAT_BEST == CANDIDATES[Q[0]][best][0]
    assert nat["rejected"] == [{"role": "assistant", "content": CANDIDATES[Q[0]][low][0]}]
    assert nat["chosen_score"] == 5.0 and nat["rejected_score"] == scores[low] and nat["binarize"] == "best_vs_random"
    assert nat["chosen_teacher"] == "replay-a" and nat["rejected_teacher"] == ("replay-a" if low < 2 else "replay-b")
    assert [s["name"] for s in nat["steps"]] == [f"{kind}-{c}" for c in range(4) for kind in ("candidate", "rate")]
    ratings = json.loads(nat["ratings"])
    assert [(r["candidate"], r["teacher"], r["sample_index"], r["score"]) for r in ratings] == [
        (0, "replay-a", 0, 5.0), (1, "replay-a", 1, 4.25), (2, "replay-b", 2, 2.0), (3, "replay-b", 3, 3.75)]
    assert ratings[2]["ratings"]["truthfulness"] == {"rating": 1.0, "rationale": "Clear and correct."}
    assert nat["prompt"][-1] == {"role": "user", "content": Q[0]} and nat["prompt"][0]["role"] == "system"
    # Weng: three unparseable ratings -> one rated candidate -> no pair
    weng = by_q[Q[1]]
    assert weng["reject_reason"] == "no_pair: 1 rated candidate(s), a pair needs 2 (3 of 4 candidates dropped)"
    dropped = [r["dropped"] for r in json.loads(weng["ratings"])]
    assert dropped[0].startswith("unparseable_ratings: malformed_json:")
    assert dropped[1].startswith("unparseable_ratings: missing_aspect: truthfulness")
    assert dropped[2] == "unparseable_ratings: rating_out_of_range: helpfulness=7 not in [1, 5]" and dropped[3] is None
    assert weng["chosen"] is None and weng["chosen_score"] is None and weng["binarize"] == "best_vs_random"
    # Betty: every candidate scores 4
    assert by_q[Q[2]]["reject_reason"] == "no_pair: all 4 rated candidates score 4"
    # Julie: ratings in prose with spaced keys parse; the empty reply and the duplicate are dropped unrated
    julie = by_q[Q[3]]
    assert julie["accepted"] and julie["response"] == JULIE_BEST and julie["rejected_score"] == 3.0
    jr = json.loads(julie["ratings"])
    assert jr[2]["dropped"] == "empty_response: the candidate-2 step returned no text"
    assert jr[3]["dropped"] == "duplicate: the same text as candidate 0" and jr[3]["ratings"] is None
    assert [s["name"] for s in julie["steps"]] == ["candidate-0", "rate-0", "candidate-1", "rate-1", "candidate-2", "candidate-3"]
    # James: the refusal and the wrong total score low; the second teacher's solution is chosen
    james = by_q[Q[4]]
    assert james["response"] == JAMES_BEST and james["chosen_teacher"] == "replay-b" and james["rejected_score"] < 5.0
    for r in rejected:
        assert r["reject_stage"] == "generate" and r["reject_reason"].startswith("no_pair: ")
    assert {json.loads(r["strategy_params"])["judge"]["model"] for r in accepted} == {"replay-judge"}

    from distillery.train.data import load_run, require_pairs

    pairs, stats = require_pairs(load_run(out))
    assert stats.pairs == 3 and [p["chosen"][0]["content"] for p in pairs] == [NAT_BEST, JULIE_BEST, JAMES_BEST]
    assert pairs[0]["rejected"] == nat["rejected"] and pairs[0]["prompt"] == nat["prompt"]


def test_replay_self_judged_margin(tmp_path: Path):
    """One teacher judging its own three candidates, margin rule (1.5 points): Natalia's best
    (5) pairs with the only reply at least 1.5 below (3); Weng's scores (4, 3.5, 4) are too
    close. The dataset card warns that the teacher judged itself."""
    table = {Q[0]: [("In May she sold 48 / 2 = 24 clips, so 48 + 24 = 72 clips in all.\n#### 72", rating(5, 5, 5, 5)),
                    ("She sold 48 and then 24 clips: 72 clips in the two months.\n#### 72", rating(4, 4, 4, 4)),
                    ("April 48 clips, May 24 clips, so about 70 clips in total.\n#### 70", rating(3, 3, 3, 3))],
             Q[1]: [("$12 per hour is $0.20 per minute, and 50 minutes gives $10.\n#### 10", rating(4, 4, 4, 4)),
                    ("She earned 50 / 60 x 12 = 10 dollars for the 50 minutes.\n#### 10", rating(4, 3, 4, 3)),
                    ("Fifty minutes at twelve dollars an hour comes to ten dollars.\n#### 10", rating(4, 4, 4, 4))]}
    judged = {text: j for cands in table.values() for text, j in cands}

    def answer(text: str, body: dict) -> str:
        m = _REPLY.search(text)
        if m:
            return judged[m.group(1)]
        return next(c[int(body["seed"]) % 3][0] for q, c in table.items() if q in text)

    out = tmp_path / "run"
    with ReplayTeacher([(r".", answer)], model="replay-self") as teacher:
        recipe = Recipe.from_yaml(RECIPE, {
            "teacher.base_url": teacher.base_url, "teacher.model": teacher.model, "generation.samples_per_teacher": 3,
            "generation.binarize": "margin", "generation.margin": 1.5,
            "seeds.path": str(_seeds(tmp_path, ROWS[:2])), "seeds.shuffle_seed": None,
            "output.dir": str(out), "report.embedding_model": None})
        report, accepted, rejected = run_pipeline(recipe, out)
        assert len(teacher.requests(r"<reply>")) == 6 and len(teacher.log) == 12
        assert teacher.requests(r"<reply>")[0]["temperature"] == 0.0  # judge_temperature over the teacher's 0.8
    (nat,) = accepted
    (weng,) = rejected
    assert nat["response"] == table[Q[0]][0][0] and nat["rejected"][0]["content"] == table[Q[0]][2][0]
    assert (nat["chosen_score"], nat["rejected_score"], nat["binarize"]) == (5.0, 3.0, "margin")
    assert weng["reject_reason"] == "no_pair: no candidate scores 1.5 or more below the best (4; lowest 3.5)"
    assert report["accepted"] == 1 and "self-judging" in (out / "README.md").read_text()


def test_recipe_against_a_real_local_server(gsm8k_server, tmp_path: Path):
    """The shipped recipe against a real `transformers serve` (tiny GSM8K model, poor text: its
    ratings are no JSON, so candidates are dropped and prompts rejected ``no_pair``): every
    record has its provenance and a reason when rejected, and the counts add up."""
    out = tmp_path / "run"
    recipe = Recipe.from_yaml(RECIPE, {
        "teacher.base_url": gsm8k_server.base_url, "teacher.model": gsm8k_server.model, "seeds.limit": 2,
        "generation.samples_per_teacher": 2, "teacher.sampling.max_tokens": 48, "output.dir": str(out),
        "output.batch_size": 2, "report.embedding_model": None})
    report, accepted, rejected = run_pipeline(recipe, out)
    rows = accepted + rejected
    assert report["candidates"] == len(rows) == 2 and report["accepted"] == len(accepted)
    for r in rows:
        assert r["strategy"] == "ai_feedback" and r["teacher"] == gsm8k_server.model and r["binarize"] == "best_vs_random"
        ratings = json.loads(r["ratings"])
        assert len(ratings) == 2 and all((c["score"] is None) != (c["dropped"] is None) for c in ratings)
        assert r["steps"][0]["name"] == "candidate-0" and r["prompt"][-1]["content"] == r["seed"]["question"]
    for r in rejected:
        assert r["reject_stage"] and r["reject_reason"].split(":")[0] in {
            "no_pair", "too_short", "too_long", "repetitive", "exact_duplicate", "near_duplicate", "contaminated"}
    for r in accepted:
        assert r["chosen"][0]["content"] == r["response"] and r["chosen_score"] > r["rejected_score"]
