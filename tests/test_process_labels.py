"""Strategy ``process_labels`` (Math-Shepherd, Wang et al., 2024): step labels by completion.

Real: step splitting, the answer checker, the label estimates (pure functions); the pipeline,
HTTP client, cache, filters and dedup; a student trained with ``distillery distill --method sft``
on the run produced; the shipped recipe against a real ``transformers serve`` with the tiny GSM8K
model. Replayed: the ``ReplayTeacher`` test fakes only a capable model's outputs (hand-written
step-by-step solutions, one with a known first wrong step whose completions never reach the
answer afterwards, a one-sentence solution, a refusal, a solution with no answer, a truncated
one) behind a real local OpenAI-compatible server.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from distillery.generate.process_labels import reaches, reference_answer, split_steps, step_labels
from distillery.recipe import Recipe
from tests.helpers import run_pipeline
from tests.replay_server import ReplayTeacher

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


# -- pure functions -----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "rule", "expected"), [
    ("Step 1: 3 + 2 = 5 apples.\nStep 2: 5 * 2 = 10.\n#### 10", "auto",
     ["Step 1: 3 + 2 = 5 apples.", "Step 2: 5 * 2 = 10.\n#### 10"]),  # the answer line joins the last step
    ("Let me think.\n**Step 1:** 4 cats\nand 2 dogs.\n**Step 2:** 6 pets.\nThe answer is 6.", "auto",
     ["Let me think.\n**Step 1:** 4 cats\nand 2 dogs.", "**Step 2:** 6 pets.\nThe answer is 6."]),  # preamble + multi-line step
    ("### Step 1. Ann has 7.\n### Step 2. She gives 2, 7 - 2 = 5.\n### Step 3) 5", "markers",
     ["### Step 1. Ann has 7.", "### Step 2. She gives 2, 7 - 2 = 5.", "### Step 3) 5"]),
    ("He buys 3 packs.\n\nEach has 4, so 3 * 4 = 12.\n#### 12", "auto", ["He buys 3 packs.", "Each has 4, so 3 * 4 = 12.\n#### 12"]),
    ("It costs $2.50 each. He buys 4, so 4 * 2.5 = 10. The answer is 10.", "auto",
     ["It costs $2.50 each.", "He buys 4, so 4 * 2.5 = 10. The answer is 10."]),  # sentences; decimals do not split
    ("Step 1: only one step, 2 + 2 = 4", "markers", ["Step 1: only one step, 2 + 2 = 4"]),  # cannot be split
    ("The answer is 4.", "auto", ["The answer is 4."]),
    ("", "auto", []),
])
def test_split_steps(text: str, rule: str, expected: list[str]):
    steps = split_steps(text, rule)
    assert [s for s, _ in steps] == expected
    for k, (step, prefix) in enumerate(steps):  # each prefix is the solution through that step
        assert text.startswith(prefix) and prefix.endswith(step)
        if k == len(steps) - 1:
            assert prefix == text.rstrip()
    with pytest.raises(ValueError, match="unknown split rule"):
        split_steps(text, "paragraphs")


def test_labels_and_answers():
    assert reference_answer("3 + 5 = 8\n#### 8") == "8" and reference_answer("1,200") == "1,200" and reference_answer(" ") is None
    assert reaches("So 4 + 4 = 8.\n#### 8", "8") == (True, "8")
    assert reaches("so the answer is $8.00.", "8") == (True, "8.00")
    assert reaches("#### 9", "8") == (False, "9") and reaches("no idea", "8") == (False, None) and reaches(None, "8")[0] is False
    # Math-Shepherd: hard = any completion reaches the answer, soft = the fraction; the last step = the solution
    hard, soft, first = step_labels([[True, False, False], [False, False, False]], False)
    assert hard == [1, 0, 0] and soft == [pytest.approx(1 / 3), 0.0, 0.0] and first == 2
    assert step_labels([[True, True], [False, True]], True) == ([1, 1, 1], [1.0, 0.5, 1.0], None)
    assert step_labels([], False) == ([0], [0.0], 1)
    assert step_labels([[False]], True) == ([0, 1], [0.0, 1.0], 1)  # a good solution can still have a doubtful step


# -- replay teacher ---------------------------------------------------------------------------

PROBLEMS = {  # id -> (question, reference, solution)
    "apples": ("Tom has 3 apples and buys 5 more. How many apples does he have?", "3 + 5 = 8\n#### 8",
               "Step 1: Tom starts with 3 apples.\nStep 2: He buys 5, so 3 + 5 = 8 apples.\n#### 8"),
    "pens": ("A box holds 6 pens. Ana buys 4 boxes and loses 5 pens. How many pens are left?", "#### 19",
             "Step 1: The boxes hold 4 * 6 = 24 pens.\nStep 2: She loses 5, so 24 + 5 = 29 pens.\n"
             "Step 3: So Ana has 29 pens.\n#### 29"),  # step 2 is wrong (adds instead of subtracting)
    "eggs": ("A hen lays 2 eggs a day. How many eggs in 7 days?", "#### 14",
             "Each day gives 2 eggs.\nOver 7 days that is 7 * 2 = 14 eggs.\n#### 14"),  # lines, no markers
    "cake": ("A cake is cut into 8 pieces and 3 are eaten. How many are left?", "#### 5",
             "8 - 3 = 5, so 5 pieces are left."),  # one sentence: cannot be split
    "bus": ("A bus has 10 seats and 4 are taken. How many are free?", "#### 6",
            "I'm sorry, but I can't help with that."),
    "kites": ("Sam makes kites. How many can he make?", "#### 3",
              "Step 1: Think about kites.\nStep 2: Kites are fun."),  # no number anywhere: no final answer
    "coins": ("Lia has 12 coins and spends 7. How many coins are left?", "#### 5",
              "Step 1: " + " ".join(["Lia has twelve coins and she spends some of them"] * 12) + "\nStep 2: 5\n#### 5"),
    "none": ("What is 2 + 2?", "", "Step 1: 2 + 2 = 4.\nStep 2: #### 4"),  # the seed has no reference
}

COMPLETIONS = {  # (id, step) -> the replayed completions, sample k gets answer k
    ("apples", 1): ["Step 2: 3 + 5 = 8.\n#### 8", "Step 2: 3 + 5 = 8.\n#### 8", "Step 2: 3 * 5 = 15.\n#### 15"],
    # after step 1 (correct) some completions still reach 19; after the wrong step 2, none can
    ("pens", 1): ["Step 2: 24 - 5 = 19 pens.\n#### 19", "Step 2: 24 + 5 = 29.\n#### 29", "Step 2: 24 - 5 = 19.\n#### 19"],
    ("pens", 2): ["Step 3: 29 pens.\n#### 29", "Step 3: So 29.\n#### 29", "I am not sure how to continue."],
    ("eggs", 1): ["So 7 * 2 = 14.\n#### 14", "So 2 + 7 = 9.\n#### 9",
                  " ".join(["and then we keep counting eggs"] * 20) + " #### 14"],  # cut off at max_tokens: no answer
}


def rules() -> list:
    out = []
    for key, (question, _, solution) in PROBLEMS.items():
        out.append((r"Solve the problem below.*Problem:\n" + re.escape(question), solution))
        steps = split_steps(solution)
        for i, (_, prefix) in enumerate(steps[:-1], start=1):
            if (key, i) in COMPLETIONS:
                out.append((r"Solution so far:\n" + re.escape(prefix) + r"\s*\Z", COMPLETIONS[(key, i)]))
    return out


def replay_recipe(teacher: ReplayTeacher, seeds: Path, out: Path) -> Recipe:
    return Recipe.from_yaml(RECIPES / "process-labels.yaml", {
        "seeds.path": str(seeds), "seeds.id_field": "id", "seeds.limit": None, "seeds.shuffle_seed": None,
        "teacher.base_url": teacher.base_url, "teacher.model": teacher.model, "teacher.concurrency": 4,
        "teacher.sampling.max_tokens": 60, "generation.solutions_per_problem": 1, "generation.completions_per_step": 3,
        "output.dir": str(out), "output.batch_size": 4, "decontamination": None, "report.embedding_model": None,
        "filters": [{"type": "length", "min_tokens": 5, "max_tokens": 500}],
    })


def test_process_labels_end_to_end_against_a_replay_teacher(tmp_path: Path):
    """Real pipeline + HTTP + cache + dedup, and a real SFT run on the result; the teacher is
    replayed (a good solution, one whose step 2 is wrong and from which no completion reaches the
    answer, one split by lines, a one-sentence solution, a refusal, no final answer, a truncated
    solution, a seed without a reference)."""
    seeds = tmp_path / "problems.jsonl"
    seeds.write_text("".join(json.dumps({"id": k, "question": q, "answer": a}) + "\n" for k, (q, a, _) in PROBLEMS.items()))
    out = tmp_path / "run"
    with ReplayTeacher(rules(), default=None) as teacher:
        report, accepted, rejected = run_pipeline(replay_recipe(teacher, seeds, out), out)
        assert not teacher.unmatched
        completes = teacher.requests("Solution so far:")
        assert len(teacher.requests("Solve the problem below")) == 7  # not for the seed without a reference
        assert len(completes) == 3 * (1 + 2 + 1)  # apples: 1 step to complete, pens: 2, eggs: 1 (N = 3)
        assert sorted(b["seed"] for b in teacher.requests("Solution so far:\nStep 1: Tom")) == [0, 1, 2]
    assert report["candidates"] == 8 and len(accepted) == 3
    reasons = {r["seed_id"]: r["reject_reason"] for r in rejected}
    assert reasons == {
        "cake": "unsplittable: 1 step(s) < min_steps=2 (split rule 'auto')",
        "bus": "refusal: the teacher declined to solve the problem",
        "kites": "no_answer: the solution states no final answer",
        "coins": "truncated: the solve step was cut off at max_tokens=60",
        "none": "bad_reference: seed field 'answer' is missing or empty",
    }
    by = {r["seed_id"]: r for r in accepted + rejected}

    pens = by["pens"]  # the known first wrong step: 2
    assert pens["accepted"] and pens["solution_correct"] is False and pens["reference_answer"] == "19"
    assert pens["step_texts"] == ["Step 1: The boxes hold 4 * 6 = 24 pens.", "Step 2: She loses 5, so 24 + 5 = 29 pens.",
                                  "Step 3: So Ana has 29 pens.\n#### 29"]
    assert pens["step_labels_hard"] == [1, 0, 0] and pens["step_labels_soft"] == [pytest.approx(2 / 3), 0.0, 0.0]
    assert pens["first_wrong_step"] == 2 and pens["labels"] == [True, False, False] and pens["completions"] == pens["step_texts"]
    assert [s["name"] for s in pens["steps"]] == ["solve"] + ["complete-s1"] * 3 + ["complete-s2"] * 3
    s2 = pens["steps"][4]["prompt"][-1]["content"].rstrip()
    assert s2.endswith("Step 2: She loses 5, so 24 + 5 = 29 pens.") and "Step 3" not in s2  # the prefix through step 2
    assert pens["prompt"] == [{"role": "user", "content": PROBLEMS["pens"][0]}]  # the problem, not the meta-prompt
    assert pens["response"] == PROBLEMS["pens"][2] and pens["finish_reason"] == "stop"

    apples = by["apples"]
    assert apples["step_labels_hard"] == [1, 1] and apples["step_labels_soft"] == [pytest.approx(2 / 3), 1.0]
    assert apples["first_wrong_step"] is None and apples["labels"] == [True, True] and apples["solution_correct"] is True
    eggs = by["eggs"]  # split by lines; a truncated completion counts as not reaching the answer
    assert eggs["step_texts"] == ["Each day gives 2 eggs.", "Over 7 days that is 7 * 2 = 14 eggs.\n#### 14"]
    assert eggs["step_labels_soft"] == [pytest.approx(1 / 3), 1.0] and eggs["step_labels_hard"] == [1, 1]
    assert eggs["steps"][3]["finish_reason"] == "length"
    assert by["cake"]["step_texts"] == ["8 - 3 = 5, so 5 pieces are left."] and by["cake"]["step_labels_hard"] is None
    assert json.loads(by["bus"]["verdicts"][0]["detail"])["raw"].startswith("I'm sorry")
    for r in accepted + rejected:
        assert r["strategy"] == "process_labels" and json.loads(r["strategy_params"])["completions_per_step"] == 3
    print(f"\nprocess_labels accept rate vs replay teacher: {len(accepted)}/{report['candidates']}",
          dict(Counter(v.split(":")[0] for v in reasons.values())))

    # the run trains a student (SFT on problem -> step-by-step solution)
    from distillery.train.api import distill

    metrics = distill(out, "builtin:student", "sft", tmp_path / "student", steps=2, batch_size=2, threads=1,
                      progress=False, max_length=128)
    assert metrics["data"]["examples"] == 3 and (tmp_path / "student" / "model.safetensors").exists()


# -- the shipped recipe against a real server ----------------------------------------------------

def test_process_labels_recipe_against_a_real_server(gsm8k_server, tmp_path: Path):
    """The shipped recipe on real GSM8K train problems against real `transformers serve` (the
    tiny GSM8K model: poor math, so the labels are mostly 0; the mechanics are what is checked)."""
    out = tmp_path / "run"
    recipe = Recipe.from_yaml(RECIPES / "process-labels.yaml", {
        "teacher.base_url": gsm8k_server.base_url, "teacher.model": gsm8k_server.model, "teacher.concurrency": 4,
        "teacher.sampling.max_tokens": 64, "seeds.limit": 3, "generation.solutions_per_problem": 1,
        "generation.completions_per_step": 2, "generation.split": "sentences", "generation.max_steps": 4,
        "output.dir": str(out), "output.batch_size": 3, "report.embedding_model": None,
    })
    report, accepted, rejected = run_pipeline(recipe, out)
    records = accepted + rejected
    assert report["candidates"] == len(records) == 3
    calls = 0
    for r in records:
        assert r["strategy"] == "process_labels" and r["strategy_params"] and r["steps"][0]["name"] == "solve"
        calls += len(r["steps"])
        if not r["accepted"]:
            assert r["reject_stage"] and ":" in r["reject_reason"]
        if r["step_labels_hard"] is not None:
            n = len(r["step_texts"])
            assert len(r["step_labels_hard"]) == len(r["step_labels_soft"]) == len(r["labels"]) == n
            assert len(r["steps"]) == 1 + 2 * (n - 1)
            assert all(0 <= s <= 1 for s in r["step_labels_soft"])
    assert report["cache"]["backend_calls"] == calls
