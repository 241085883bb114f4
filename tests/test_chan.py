"""The three strategies of Chan et al. (2024) — answer augmentation, question rephrase, new
question — and `favoured_strategy`: the checks of generated questions on constructed cases;
each strategy end to end through the real pipeline (HTTP client, cache, verifiers, filters,
dedup) on real GSM8K train questions against a replay teacher (a real local HTTP server that
answers with hand-written outputs of a capable model: correct and wrong solutions, a refusal,
a near copy, a lost number, an empty answer, chatty wrapping); and each shipped recipe once
against a real `transformers serve` with the tiny GSM8K model (mechanics only: its text is
poor)."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distillery.errors import InputError
from distillery.generate.chan import (
    ANSWER_AUGMENTATION_BELOW,
    NEW_QUESTION_FROM,
    clean_question,
    favoured_strategy,
    numbers,
    question_problem,
)
from distillery.generate.novelty import rouge_l
from distillery.pipeline.plan import Plan
from distillery.pipeline.runner import Pipeline
from distillery.recipe import Recipe
from distillery.registry import names
from tests.helpers import REPO
from tests.replay_server import ReplayTeacher

RECIPES = {name: REPO / "recipes" / f"chan-{name.replace('_', '-')}.yaml"
           for name in ("answer_augmentation", "question_rephrase", "new_question")}
with gzip.open(REPO / "data" / "gsm8k" / "train.jsonl.gz", "rt") as fh:
    NATALIA, WENG, BETTY = (json.loads(next(fh)) for _ in range(3))
N, W, B = NATALIA["question"], WENG["question"], BETTY["question"]


# -- constructed cases --------------------------------------------------------------------------
def test_favoured_strategy_by_budget_ratio():
    assert favoured_strategy(1)[0] == "answer_augmentation"
    assert favoured_strategy(ANSWER_AUGMENTATION_BELOW - 0.01)[0] == "answer_augmentation"
    assert favoured_strategy(ANSWER_AUGMENTATION_BELOW)[0] == "question_rephrase"
    assert favoured_strategy(NEW_QUESTION_FROM - 0.01)[0] == "question_rephrase"
    assert favoured_strategy(NEW_QUESTION_FROM)[0] == "new_question"
    assert favoured_strategy(500.0)[0] == "new_question"
    assert favoured_strategy(100, weak_augmenter=True)[0] == "question_rephrase"
    assert favoured_strategy(2, weak_augmenter=True)[0] == "answer_augmentation"
    name, why = favoured_strategy(50)
    assert "50" in why and "Chan et al., 2024" in why
    assert {favoured_strategy(x)[0] for x in (1, 15, 50)} <= set(names("strategy"))  # registered names
    for bad in (0, -1, math.nan, math.inf, "10"):
        with pytest.raises(ValueError):
            favoured_strategy(bad)


def test_rouge_l_and_numbers():
    assert rouge_l("a b c d", "a b c d") == 1.0 and rouge_l("a b", "c d") == 0.0 and rouge_l("", "a") == 0.0
    assert rouge_l("a b c d", "a b x d") == pytest.approx(0.75)
    assert rouge_l("The cat, sat!", "the CAT sat") == 1.0  # punctuation and case ignored
    assert numbers("It costs $1,000.50 for 3 items, 2.0 each") == {"1000.5", "3", "2"}
    assert numbers("forty-eight friends and a dozen eggs, one day") == {"48", "12", "1"}
    assert numbers("forty-eight friends", spelled=False) == set()


def test_clean_question():
    assert clean_question("Sure! Here is a new problem:\n\nTom has 3 cats.") == "Tom has 3 cats."
    assert clean_question("**Problem:** Tom has 3 cats.") == "Tom has 3 cats."
    assert clean_question('Rewritten question: "Tom has 3 cats."') == "Tom has 3 cats."
    assert clean_question("Problem:") == ""
    assert clean_question("Tom has 3 cats. Here is why: it rains.") == "Tom has 3 cats. Here is why: it rains."


def test_question_checks():
    good = ("In April, Natalia sold hair clips to 48 friends. In May she managed half as many sales. "
            "Over the two months, how many clips did she sell in total?")
    reason, sim = question_problem(N, good, "rephrase")
    assert reason is None and 0 < sim < 0.8
    copy = N.replace("and then she", "and she then")
    reason, sim = question_problem(N, copy, "rephrase")
    assert reason.startswith("not_rephrased: ROUGE-L 0.9") and sim > 0.9
    assert question_problem(N, copy, "new")[0].startswith("not_new:")
    spelled = "In April Natalia sold clips to forty-eight friends; in May, half that many. How many clips in all?"
    assert question_problem(N, spelled, "rephrase")[0] is None
    lost = "Betty wants a new wallet. Her parents and grandparents help. How much more does she need?"
    assert question_problem(B, lost, "rephrase")[0] == "changed_numbers: the rephrase lost 15, 100 of the original"
    assert question_problem(B, lost, "rephrase", keep_numbers=False)[0] is None
    assert question_problem(N, "", "new")[0].startswith("empty_question:")
    assert question_problem(N, "I'm sorry, but I can't write a new problem.", "new")[0].startswith("refusal:")
    assert question_problem(N, "How many?", "new")[0] == "too_short: the question has 2 word(s) < 3"


# -- replay teacher, end to end -------------------------------------------------------------------
def _seeds(tmp_path: Path) -> Path:
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (NATALIA, WENG, BETTY)))
    return path


def _overrides(server, out: Path, seeds: Path | None, **extra) -> dict:
    o = {"teacher.base_url": server.base_url, "teacher.model": server.model, "teacher.concurrency": 4,
         "output.dir": str(out), "report.embedding_model": None, "seeds.shuffle_seed": None}
    if seeds is not None:
        o["seeds.path"] = str(seeds)
    o.update(extra)
    return o


def _run(recipe: Path, server, out: Path, seeds: Path | None, **extra) -> tuple[dict, dict[str, dict]]:
    report = Pipeline(Recipe.from_yaml(recipe, _overrides(server, out, seeds, **extra)), progress=False).run()
    rows = pq.read_table(out / "accepted.parquet").to_pylist() + pq.read_table(out / "rejected.parquet").to_pylist()
    return report, {r["id"]: r for r in rows}


@pytest.mark.parametrize(("name", "template"), [("question_rephrase", "rephrase"), ("new_question", "new_question")])
def test_seed_fields_of_an_overridden_question_template_are_required(tmp_path: Path, name: str, template: str):
    """A question-writing template that reads ``{{ topic }}`` makes ``topic`` a required seed
    field: GSM8K seeds (no topic) stop the run with an InputError naming it, before any call."""
    with ReplayTeacher([]) as teacher:
        recipe = Recipe.from_yaml(RECIPES[name], _overrides(teacher, tmp_path / "out", _seeds(tmp_path), **{
            "generation.templates": {template: "Write about {{ topic }}: {{ question }}"}}))
        strategy = recipe.generation.build(recipe)
        assert "topic" in strategy.inputs and "question" in strategy.inputs
        assert "topic" in Plan.make(recipe, tmp_path / "out").required
        with pytest.raises(InputError, match="field 'topic': missing_field"):
            Pipeline(recipe, progress=False).run()
        assert teacher.log == []
    # the shipped templates read only the question, which the strategy fills
    plain = Recipe.from_yaml(RECIPES[name])
    assert plain.generation.build(plain).inputs == {"question"}


def _by_keyword(table: dict[str, list[str]]):
    """An answer rule: the list of the first keyword found in the request, item ``seed % len``."""
    def answer(text, body):
        for key, answers in table.items():
            if key in text:
                return answers[int(body.get("seed") or 0) % len(answers)]
        return "I'm not sure."
    return answer


def _rate(report: dict, rows: dict[str, dict]) -> str:
    reasons = sorted(r["reject_reason"].split(":")[0] for r in rows.values() if not r["accepted"])
    return f"{report['accepted']}/{report['candidates']} accepted; rejected: {reasons}"


ANSWER_AUGMENTATION = {
    "Natalia": [
        "In May Natalia sold half of 48, which is 48 / 2 = 24 clips.\nAcross both months she sold 48 + 24 = 72 clips.\n#### 72",
        "April: 48 clips. May: half as many, so 24. Adding the two months together gives a total of seventy-two, "
        "that is 72 clips in all.\n#### 72",
        "Natalia sold 48 clips in April and twice as many in May, 96 clips, so the answer is 96 clips in May alone.\n#### 96",
    ],
    "Weng": [
        "Weng earns 12 / 60 = $0.2 per minute. For 50 minutes of babysitting she earned 0.2 x 50 = $10.\n#### 10",
        "Weng's hourly rate has to be converted into a per-minute rate first, and then multiplied by the time she spent "
        "babysitting yesterday.",
        "Weng earns 12 / 60 = $0.2 per minute. For 50 minutes of babysitting she earned 0.2 x 50 = $10.\n#### 10",
    ],
    "Betty": [
        "Betty has 100 / 2 = $50. Her parents give $15 and her grandparents 15 x 2 = $30. "
        "She still needs 100 - 50 - 15 - 30 = $5.\n#### 5",
        "I'm sorry, I can't help with that.",
        "Half of the $100 wallet is $50, which Betty already has. Parents: $15. Grandparents: twice that, $30. "
        "Together that is 50 + 15 + 30 = 95, so she is short by $5.\n#### 5",
    ],
}


def test_answer_augmentation_replay(tmp_path: Path):
    """Three answers per real GSM8K question; math_answer (the recipe's verifier) keeps the
    correct ones. Real pipeline; the teacher's outputs are replayed."""
    with ReplayTeacher([("Solve the grade-school", _by_keyword(ANSWER_AUGMENTATION))]) as teacher:
        report, rows = _run(RECIPES["answer_augmentation"], teacher, tmp_path / "aa", _seeds(tmp_path),
                            **{"generation.samples_per_question": 3})
        assert len(teacher.log) == 9 and report["candidates"] == 9 and report["accepted"] == 5
        accepted = {i for i, r in rows.items() if r["accepted"]}
        assert accepted == {"seeds-0#0", "seeds-0#1", "seeds-1#0", "seeds-2#0", "seeds-2#2"}
        reasons = {i: r["reject_reason"] for i, r in rows.items() if not r["accepted"]}
        assert reasons["seeds-0#2"] == "wrong_answer: 96 != 72"
        assert reasons["seeds-1#1"].startswith("no_answer:")
        assert reasons["seeds-1#2"].startswith("exact_duplicate")
        assert reasons["seeds-2#1"].startswith("too_short")
        r = rows["seeds-0#0"]
        assert r["strategy"] == "answer_augmentation" and json.loads(r["strategy_params"]) == {"samples_per_question": 3, "question_field": "question"}
        assert r["chan_strategy"] == "answer_augmentation" and r["source_question"] == N and r["source_seed_id"] == "seeds-0"
        assert r["generated_question"] is None and r["similarity"] is None and r["answer_source"] == "teacher"
        assert r["prompt"][0]["role"] == "system" and r["prompt"][-1] == {"role": "user", "content": N} and r["steps"] == []
        print(f"\nanswer_augmentation replay: {_rate(report, rows)}")


REPHRASE = {
    "Natalia": [
        "In April, Natalia sold hair clips to 48 friends. In May she managed half as many sales. "
        "Over the two months, how many clips did she sell in total?",
        N.replace("and then she", "and she then"),
    ],
    "Weng": [
        "Rewritten question: Weng is paid $12 for every hour of babysitting. Yesterday she babysat for 50 minutes. "
        "How much money did she make?",
        "I'm sorry, but I can't help with rewording this question.",
    ],
    "Betty": [
        "Betty wants a new wallet. She has half the money, her parents give her some and her grandparents give "
        "twice as much. How much more does she need?",
        "",
    ],
}
REPHRASE_ANSWERS = {
    "hair clips": [
        "Natalia sold 48 clips in April and 48 / 2 = 24 clips in May, so 48 + 24 = 72 clips in total.\n#### 72",
        "She sold 48 clips in April and half as many, 24, in May; in total she sold 48 - 24 = 24 clips.\n#### 24",
    ],
    "babysat": [
        "Weng makes 12 / 60 = $0.2 each minute, so 50 minutes bring her 50 x 0.2 = $10.\n#### 10",
        "Weng makes $12 each hour and babysat for 50 minutes, so she made 12 x 50 = $600 yesterday.\n#### 600",
    ],
}


def test_question_rephrase_replay(tmp_path: Path):
    """Two rewordings per real GSM8K question, two teacher answers per kept rewording (the
    seed's reference still applies: math_answer checks them), then the seed's own answer.
    Real pipeline; the teacher's outputs are replayed."""
    rules = [("Reword the question below", _by_keyword(REPHRASE)), ("Solve the grade-school", _by_keyword(REPHRASE_ANSWERS))]
    with ReplayTeacher(rules) as teacher:
        report, rows = _run(RECIPES["question_rephrase"], teacher, tmp_path / "qr", _seeds(tmp_path),
                            **{"generation.answers_per_rephrase": 2})
        assert len(teacher.log) == 6 + 4 and report["candidates"] == 8 and report["accepted"] == 2
        assert {i for i, r in rows.items() if r["accepted"]} == {"seeds-0#0", "seeds-1#0"}
        reasons = {i: r["reject_reason"] for i, r in rows.items() if not r["accepted"]}
        assert reasons == {
            "seeds-0#1": "wrong_answer: 24 != 72",
            "seeds-0#2": "not_rephrased: ROUGE-L 0.97 with the seed question > 0.8",
            "seeds-1#1": "wrong_answer: 600 != 10",
            "seeds-1#2": "refusal: the augmenter declined to write the question",
            "seeds-2#0": "changed_numbers: the rephrase lost 15, 100 of the original",
            "seeds-2#2": "empty_response: the rephrase step returned no text",
        }
        r = rows["seeds-1#0"]
        question = REPHRASE["Weng"][0].removeprefix("Rewritten question: ")
        assert r["prompt"][-1] == {"role": "user", "content": question} and r["prompt"][0]["role"] == "system"
        assert r["generated_question"] == question and r["source_question"] == W and 0 < r["similarity"] <= 0.8
        assert r["chan_strategy"] == "question_rephrase" and r["answer_source"] == "teacher"
        assert [s["name"] for s in r["steps"]] == ["rephrase"] and W in r["steps"][0]["prompt"][-1]["content"]
        assert rows["seeds-0#2"]["response"] is None and json.loads(rows["seeds-0#2"]["verdicts"][-1]["detail"])["raw"] == REPHRASE["Natalia"][1]
        print(f"\nquestion_rephrase replay: {_rate(report, rows)}")

        # the seed's own answer instead of the teacher's: no answering calls
        before = len(teacher.log)
        report2, rows2 = _run(RECIPES["question_rephrase"], teacher, tmp_path / "qr-seed", _seeds(tmp_path),
                              **{"generation.answer_with": "seed", "output.cache": str(tmp_path / "qr" / "cache")})
        assert len(teacher.log) == before  # the rewordings come from the shared cache
        assert report2["candidates"] == 6 and {i for i, r in rows2.items() if r["accepted"]} == {"seeds-0#0", "seeds-1#0"}
        s = rows2["seeds-0#0"]
        assert s["response"] == NATALIA["answer"] and s["answer_source"] == "seed" and s["backend"] == "openai"
        assert s["tokens_out"] is None and s["steps"][0]["tokens_out"] == rows["seeds-0#0"]["steps"][0]["tokens_out"]
        print(f"question_rephrase (answer_with: seed) replay: {_rate(report2, rows2)}")


NEW_QUESTIONS = {
    "Natalia": [
        "A bakery sold 36 muffins on Monday and three times as many on Tuesday. How many muffins did it sell on the two days?",
        N.replace("48", "50"),
    ],
    "Weng": [
        "Sure! Here is a new problem:\n\nA gardener earns $18 an hour. On Saturday he worked for 40 minutes. How much did he earn?",
        "**Problem:** Tom buys 4 notebooks at $3 each and a pen for $2. He pays with a $20 bill. How much change does he get?",
    ],
    "Betty": ["I'm sorry, but I can't create new problems.", "Problem:"],
}
NEW_ANSWERS = {
    "muffins": [
        "On Tuesday the bakery sold 36 x 3 = 108 muffins, so over both days it sold 36 + 108 = 144 muffins.\n#### 144",
        "Monday gives 36 and Tuesday three times that, 108. Adding them up: 144 muffins were sold.\n#### 144",
        "Tuesday: 36 x 3 = 108 muffins. That is the number sold on the second day.\n#### 108",
    ],
    "gardener": [
        "The gardener earns 18 / 60 = $0.3 a minute, and 40 minutes pay 0.3 x 40 = $12.\n#### 12",
        "Forty minutes are two thirds of an hour, and two thirds of $18 is $12 for Saturday's work.\n#### 12",
        "Per minute he makes $0.30; multiplying by 40 minutes of work on Saturday gives twelve dollars.\n#### 12",
    ],
    "notebooks": [
        "The notebooks cost 4 x 3 = $12 and the pen $2, so $14 in all; his change is 20 - 14 = $6.\n#### 6",
        "Tom spends 4 x 3 + 2 = $14. Paying with twenty dollars he gets back 20 - 12 = $8 in change.\n#### 8",
        "Four notebooks are $12. He pays 20 and receives 20 - 12 - 2 + 1 = $7 back after the pen.\n#### 7",
    ],
}


def test_new_question_replay(tmp_path: Path):
    """Two new questions per real GSM8K question, three teacher answers each, voted on by the
    recipe's self_consistency verifier (per new question). Real pipeline; the teacher's outputs
    are replayed."""
    rules = [("Write one new problem", _by_keyword(NEW_QUESTIONS)), ("Solve the grade-school", _by_keyword(NEW_ANSWERS))]
    with ReplayTeacher(rules) as teacher:
        report, rows = _run(RECIPES["new_question"], teacher, tmp_path / "nq", _seeds(tmp_path))
        assert len(teacher.log) == 6 + 9 and report["candidates"] == 12 and report["accepted"] == 5
        assert {i for i, r in rows.items() if r["accepted"]} == {
            "seeds-0/q0#0", "seeds-0/q0#1", "seeds-1/q0#0", "seeds-1/q0#1", "seeds-1/q0#2"}
        reasons = {i: r["reject_reason"] for i, r in rows.items() if not r["accepted"]}
        assert reasons["seeds-0/q0#2"] == "inconsistent: answer 108 has 1 of 3 votes, majority 144 has 2"
        assert reasons["seeds-0/q1#0"].startswith("not_new: ROUGE-L 0.9")
        assert all(reasons[f"seeds-1/q1#{k}"].startswith("inconsistent:") for k in range(3))
        assert reasons["seeds-2/q0#0"] == "refusal: the augmenter declined to write the question"
        assert reasons["seeds-2/q1#0"] == "empty_question: nothing left once the wrapping is removed"
        r = rows["seeds-1/q0#0"]
        question = NEW_QUESTIONS["Weng"][0].split("\n\n", 1)[1]
        assert r["seed_id"] == "seeds-1/q0" and r["source_seed_id"] == "seeds-1" and r["seed_index"] == 1
        assert r["prompt"][-1] == {"role": "user", "content": question} and r["generated_question"] == question
        assert r["chan_strategy"] == "new_question" and r["source_question"] == W and r["similarity"] < 0.8
        assert [s["name"] for s in r["steps"]] == ["new_question"] and r["strategy"] == "new_question"
        print(f"\nnew_question replay: {_rate(report, rows)}")


# -- the shipped recipes against a real server ------------------------------------------------------
@pytest.mark.parametrize("name", ["answer_augmentation", "question_rephrase", "new_question"])
def test_recipe_against_a_real_local_server(gsm8k_server, tmp_path: Path, name: str):
    """Each shipped recipe against a real `transformers serve` (tiny GSM8K model, poor text)."""
    extra = {"seeds.limit": 2, "teacher.sampling.max_tokens": 32, "output.batch_size": 2}
    if name == "answer_augmentation":
        extra["generation.samples_per_question"] = 2
    if name == "new_question":
        extra["generation.questions_per_seed"] = 1
    report, rows = _run(RECIPES[name], gsm8k_server, tmp_path / name, None, **extra)
    assert report["candidates"] == len(rows) >= 2 and report["accepted"] == sum(r["accepted"] for r in rows.values())
    for r in rows.values():
        assert r["strategy"] == r["chan_strategy"] == name and r["teacher"] == gsm8k_server.model
        assert r["source_question"] == r["seed"]["question"] and r["source_seed_id"] in ("train-0", "train-1")
        if name != "answer_augmentation":
            assert r["steps"][0]["name"] == ("rephrase" if name == "question_rephrase" else "new_question")
            assert r["source_question"] in r["steps"][0]["prompt"][-1]["content"]
        if not r["accepted"]:
            assert r["reject_stage"] and r["reject_reason"].split(":")[0] in {
                "truncated", "empty_response", "empty_question", "refusal", "too_short", "not_rephrased", "not_new",
                "changed_numbers", "no_answer", "wrong_answer", "inconsistent", "too_long", "repetitive",
                "exact_duplicate", "near_duplicate", "contaminated"}
