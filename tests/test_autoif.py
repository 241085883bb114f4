"""Strategy ``autoif`` (AutoIF, Dong et al., 2024, "Self-play with Execution Feedback").

Real: parsing of the teacher's functions and test cases, the constraint pool and its seeded
draws, the sandbox (every function here runs in :class:`distillery.verify.sandbox.Sandbox`:
correct, wrong, raising, looping, not compiling), cross-validation, pass rates, the pipeline,
HTTP client, cache and stages, and DPO training of the built-in student on the run. Replayed:
the ``ReplayTeacher`` end-to-end test fakes only a capable model's outputs (hand-written
verification functions and test cases in several formats, prose with no code, malformed JSON,
a function that disagrees with its tests, one that does not compile, one that raises, replies
that pass or break their constraint, a refusal) behind a real local OpenAI-compatible server.
The last test runs the shipped recipe against a real ``transformers serve`` (tiny GSM8K model:
its text is poor, so only the mechanics are checked).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from distillery.errors import RecipeError
from distillery.generate.autoif import (
    CONSTRAINT_TYPES,
    Case,
    FunctionAnswer,
    cross_validate,
    draw_constraints,
    load_constraints,
    parse_cases,
    parse_function_answer,
    pass_rate,
    pool_cases,
    run_functions,
    sandbox_limits,
    shipped_constraints_path,
)
from distillery.recipe import Recipe
from distillery.records import verdict_detail
from distillery.verify.sandbox import Sandbox
from tests.helpers import run_pipeline
from tests.replay_server import ReplayTeacher

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


# -- the constraint pool ----------------------------------------------------------------------------

def test_shipped_pool_covers_every_type_and_draws_are_seeded(tmp_path: Path):
    pool = load_constraints(shipped_constraints_path())
    assert 20 <= len(pool) <= 30 and {c.type for c in pool} == set(CONSTRAINT_TYPES)
    assert len({c.id for c in pool}) == len(pool) and all(c.text.endswith((".", "\".")) for c in pool)
    assert {c.type for c in load_constraints(shipped_constraints_path(), ["json"])} == {"json"}
    a = draw_constraints(pool, 3, 0, "q1")
    assert a == draw_constraints(pool, 3, 0, "q1") and len(set(a)) == 3  # reproducible, distinct within a seed
    assert draw_constraints(pool, 3, 1, "q1") != a or draw_constraints(pool, 3, 0, "q2") != a
    assert len(draw_constraints(pool[:2], 5, 0, "q")) == 2  # never more than the pool
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "type": "length", "constraint": "Be short."}\n{"type": "case"}\n')
    with pytest.raises(RecipeError, match="jsonl:2: needs a non-empty"):
        load_constraints(bad)
    with pytest.raises(RecipeError, match="file not found"):
        load_constraints(tmp_path / "missing.jsonl")
    with pytest.raises(RecipeError, match="no constraints of types"):
        load_constraints(shipped_constraints_path(), ["rhyme"])


# -- parsing the functions answer -------------------------------------------------------------------

GOOD_FENCED = '''Here is a checker.

```python
def evaluate(response: str) -> bool:
    return len(response.split()) < 5

if __name__ == "__main__":
    assert evaluate("a b")
```

```json
[{"response": "short one", "expected": true},
 {"response": "this one has far too many words", "expected": false},
 {"response": "bad item"}]
```'''


def test_parse_function_answer_formats():
    a = parse_function_answer(GOOD_FENCED)
    assert a.function == "def evaluate(response: str) -> bool:\n    return len(response.split()) < 5\n"  # main guard gone
    assert a.cases == [Case("short one", True), Case("this one has far too many words", False)] and not a.problems
    obj = json.dumps({"function": "def evaluate(response):\n    return response.islower()",
                      "cases": [{"input": "abc", "output": "true"}, {"input": "ABC", "output": False}]})
    b = parse_function_answer("Sure:\n" + obj)
    assert b.function.startswith("def evaluate(response):") and b.cases == [Case("abc", True), Case("ABC", False)]
    broken = parse_function_answer('```python\ndef evaluate(r):\n    return True\n```\n```json\n[{"response": "x", "expected": true,]\n```')
    assert broken.function and broken.cases == [] and broken.problems[0].startswith("malformed_json")
    prose = parse_function_answer("You could check whether any letter is upper case.")
    assert prose.function is None and prose.problems[0].startswith("no_function")
    bare = parse_function_answer("def evaluate(r):\n    return r.islower()\n")
    assert bare.function == "def evaluate(r):\n    return r.islower()\n" and bare.problems[0].startswith("malformed_json")
    other = parse_function_answer("```python\ndef check(r):\n    return True\n```\n```json\n[]\n```")
    assert other.function is None and other.problems[0].startswith("no_function")
    assert other.problems[1].startswith("malformed_cases")
    assert parse_function_answer("").problems == ["empty_response: the functions step returned no text"]
    assert parse_cases({"cases": [{"text": "t", "label": True}]}) == ([Case("t", True)], None)
    assert parse_cases("nope")[1].startswith("malformed_cases")


# -- cross-validation and pass rates (pure) ---------------------------------------------------------

def test_cross_validation_logic_on_outcomes():
    answers = [FunctionAnswer("f0", []), FunctionAnswer("f1", []), FunctionAnswer(None, [], ["no_function: prose"]),
               FunctionAnswer("f3", [])]
    cases = [Case(f"c{i}", i % 2 == 0) for i in range(6)]
    right = [c.expected for c in cases]
    outcomes = {
        0: right,                                              # all right
        1: right[:4] + [not right[4], "error: ValueError: x"],  # 4 of 6: 0.67
        3: ["syntax_error: invalid syntax (line 1)"] * 6,      # does not compile
    }
    cv = cross_validate(answers, cases, outcomes, threshold=0.8)
    assert cv.kept == [0] and cv.reason is None and len(cv.cases) == 6
    assert cv.accuracy == {0: 1.0, 1: pytest.approx(4 / 6)}
    assert cv.dropped[1].startswith("disagrees: accuracy 0.67 < 0.8 on 6 test case(s) (error: ValueError")
    assert cv.dropped[2] == "no_function: prose" and cv.dropped[3].startswith("syntax_error")
    # exactly at the threshold is kept; a case no function agrees with is dropped before scoring
    five = {0: right[:5] + [not right[5]], 1: right[:4] + [not right[4], not right[5]]}
    cv = cross_validate(answers[:2], cases, five, threshold=0.8)
    assert len(cv.cases) == 5 and cv.accuracy == {0: 1.0, 1: 0.8} and cv.kept == [0, 1]
    # nothing agrees with anything / too few functions
    assert cross_validate(answers[:1], cases, {0: [not x for x in right]}).reason.startswith("no_verifier: 0 test case")
    assert cross_validate(answers[:2], cases, {0: right}, min_functions=2).reason.startswith("no_verifier: 1 usable")
    halves = {0: [not x for x in right[:3]] + right[3:], 1: right[:3] + [not x for x in right[3:]]}
    cv = cross_validate(answers[:2], cases, halves)  # every case has a function agreeing, each function 0.5
    assert cv.accuracy == {0: 0.5, 1: 0.5} and len(cv.cases) == 6
    assert cv.kept == [] and cv.reason.startswith("no_verifier: no function of 2 agrees with the test cases at >= 0.8")
    # pooling merges duplicates and drops a reply given both labels
    pooled = pool_cases([FunctionAnswer("a", [Case("x", True), Case("y", False)]),
                         FunctionAnswer("b", [Case("x", True), Case("y", True), Case("z", False)])])
    assert pooled == [Case("x", True), Case("z", False)]
    assert pass_rate([True, True, False]) == pytest.approx(2 / 3) and pass_rate([True, "timeout: t"]) == 0.5
    assert pass_rate([True, True]) == 1.0 and pass_rate([]) == 0.0


# -- the sandbox ------------------------------------------------------------------------------------

CORRECT = "def evaluate(response):\n    return len(response.split()) < 5\n"
WRONG = "def evaluate(response):\n    return len(response) < 5\n"          # characters, not words
RAISES = "def evaluate(response):\n    return response.words() < 5\n"
LOOPS = "def evaluate(response):\n    while True:\n        pass\n"
SYNTAX = "def evaluate(response)\n    return True\n"
NOT_BOOL = "def evaluate(response):\n    return 'yes'\n"
MISSING = "def check(response):\n    return True\n"


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, limits=sandbox_limits(0.3)) as sb:
        yield sb


def test_cross_validation_in_the_sandbox(sandbox: Sandbox):
    """Real functions, run: the correct one is kept, the wrong, raising, looping, non-compiling,
    non-boolean and missing ones are dropped, each with its reason."""
    cases = [Case("ok", True), Case("two words", True), Case("a rather long reply", True),
             Case("one two three four five", False), Case("this reply has far too many words", False)]
    sources = [CORRECT, WRONG, RAISES, LOOPS, SYNTAX, NOT_BOOL, MISSING]
    answers = [FunctionAnswer(s, []) for s in sources]
    matrix = run_functions(sandbox, sources, [c.response for c in cases], timeout_s=0.3)
    assert matrix[0] == [True, True, True, False, False]
    assert matrix[1] == [True, False, False, False, False]
    assert all(o.startswith("error: AttributeError") for o in matrix[2])
    assert all(o.startswith("timeout: TimeoutError") for o in matrix[3])
    assert all(o.startswith("syntax_error") for o in matrix[4])
    assert all(o.startswith("not_bool: evaluate returned str") for o in matrix[5])
    assert all(o.startswith("no_function") for o in matrix[6])
    cv = cross_validate(answers, cases, dict(enumerate(matrix)), threshold=0.8)
    assert cv.kept == [0] and len(cv.cases) == 5
    assert cv.dropped[1] == "disagrees: accuracy 0.60 < 0.8 on 5 test case(s)"
    assert "AttributeError" in cv.dropped[2] and "timeout" in cv.dropped[3]
    assert cv.dropped[4].startswith("syntax_error") and cv.dropped[6].startswith("no_function")
    assert cv.dropped[5].startswith("disagrees: accuracy 0.00") and "not_bool" in cv.dropped[5]
    # pass rates of replies through the kept function and a second, stricter one
    kept = [CORRECT, "def evaluate(response):\n    return response == response.lower()\n", LOOPS]
    m = run_functions(sandbox, kept, ["fine", "Fine", "Way too many words for this"], timeout_s=0.3)
    rates = [pass_rate([m[f][t] for f in range(3)]) for t in range(3)]
    assert rates == [pytest.approx(2 / 3), pytest.approx(1 / 3), 0.0]  # the loop counts as a failure
    # more texts than one program takes are split over programs, order kept
    texts = [" ".join(["w"] * (i % 7)) for i in range(40)]
    assert run_functions(sandbox, [CORRECT], texts, 0.3)[0] == [len(t.split()) < 5 for t in texts]


# -- replay teacher, end to end ---------------------------------------------------------------------

LOWER = "Write your whole answer in lowercase letters only."
SHORT = "Answer in fewer than 12 words."
BANANA = "Mention the word banana."

LOWER_CASES = [{"response": "all small letters here.", "expected": True},
               {"response": "One Capital here.", "expected": False},
               {"response": "numbers 123 are fine.", "expected": True},
               {"response": "SHOUTING", "expected": False}]
FUNCTIONS = {
    LOWER: [
        "```python\ndef evaluate(response: str) -> bool:\n    return response == response.lower()\n```\n\n```json\n"
        + json.dumps(LOWER_CASES) + "\n```",
        "Sure! To check this you would look at each character and see whether it is a capital letter.",  # prose
        "```python\ndef evaluate(response):\n    return not any(ch.isupper() for ch in response)\n```\n```json\n"
        '[{"response": "fine text", "expected": true}, {"response": "Not fine", "expected": false,]\n```',  # bad JSON
    ],
    SHORT: [
        json.dumps({"function": "def evaluate(response):\n    return len(response.split()) < 12",
                    "cases": [{"response": "Yes.", "expected": True},
                              {"response": "The tide rises and falls twice every single day on most of the coasts.",
                               "expected": False},
                              {"response": "Gravity from the moon pulls the oceans toward it.", "expected": True}]}),
        "```python\ndef evaluate(response):\n    return len(response) < 12\n```\n```json\n"  # characters: disagrees
        '[{"response": "Short and sweet answer here.", "expected": true}, {"response": "No.", "expected": true}, '
        '{"response": "Moon pulls water up.", "expected": true}]\n```',
        "```python\ndef evaluate(response)\n    return len(response.split()) < 12\n```\n```json\n"  # does not compile
        '[{"response": "one two three four five six seven eight nine ten eleven twelve", "expected": false}]\n```',
    ],
    BANANA: [
        "```python\ndef evaluate(response):\n    return 'banana' not in response.lower()\n```\n```json\n"  # inverted
        '[{"response": "I like banana bread.", "expected": true}, {"response": "Apples only.", "expected": false}]\n```',
        "```python\ndef evaluate(response):\n    return response.count_words('banana') > 0\n```\n```json\n"  # raises
        '[{"response": "A banana a day.", "expected": true}]\n```',
        "",  # an empty answer
    ],
}
QUERIES = {"tides": "Why are there tides?", "bread": "How does bread rise?"}
REPLIES = {
    ("tides", LOWER): ["tides happen because the moon pulls on the oceans as the earth turns.",
                       "the moon's gravity tugs the sea, so most coasts see two high tides a day.",
                       "The Moon pulls the sea toward it. That is why tides happen."],
    ("tides", SHORT): ["The Moon's gravity pulls the oceans.",
                       "Tides happen because the gravity of the Moon and, to a lesser degree, the Sun pulls on "
                       "the water of the oceans as the Earth rotates.",
                       "I'm sorry, but I can't help with that."],
    ("bread", LOWER): ["yeast eats sugar in the dough and makes gas bubbles that lift it.",
                       "bread rises when yeast gives off carbon dioxide inside the dough.",
                       "Yeast makes Carbon Dioxide, and the gas makes the dough puff up."],
    ("bread", SHORT): ["Yeast releases gas that inflates the dough.",
                       "Bread rises because yeast feeds on the sugars in the flour and gives off carbon dioxide, "
                       "which is trapped by gluten.",
                       "I'm sorry, but I can't answer that."],
}


def autoif_rules() -> list:
    rules = [("Requirement: " + re.escape(c), answers) for c, answers in FUNCTIONS.items()]
    for (q, c), replies in REPLIES.items():
        rules.append((re.escape(QUERIES[q]) + r"\n\n" + re.escape(c), replies))
    return rules


def _replay_recipe(tmp_path: Path, teacher: ReplayTeacher, out: Path) -> Recipe:
    seeds = tmp_path / "queries.jsonl"
    seeds.write_text("".join(json.dumps({"id": k, "query": v}) + "\n" for k, v in QUERIES.items()))
    pool = tmp_path / "constraints.jsonl"
    pool.write_text("".join(json.dumps({"id": i, "type": t, "constraint": c}) + "\n"
                            for i, t, c in (("lower", "case", LOWER), ("short", "length", SHORT),
                                            ("banana", "keywords", BANANA))))
    return Recipe.from_yaml(RECIPES / "autoif.yaml", {
        "seeds.path": str(seeds), "teacher.base_url": teacher.base_url, "teacher.model": teacher.model,
        "teacher.concurrency": 4, "teacher.max_retries": 0, "output.dir": str(out), "output.batch_size": 1,
        "report.embedding_model": None, "decontamination": None, "dedup": [{"type": "exact"}],
        "generation.constraints": str(pool), "generation.constraints_per_query": 3,
        "generation.responses_per_query": 3, "generation.min_functions": 1, "generation.min_test_cases": 2,
        "generation.timeout_s": 0.5,
    })


def test_autoif_end_to_end_against_a_replay_teacher_then_distill(tmp_path: Path):
    """Replayed teacher outputs; everything else real; then the run's preference pairs and SFT of
    the built-in student on its accepted records."""
    teacher = ReplayTeacher(autoif_rules(), default=None)
    out = tmp_path / "run"
    try:
        report, accepted, rejected = run_pipeline(_replay_recipe(tmp_path, teacher, out), out)
    finally:
        teacher.close()
    assert not teacher.unmatched
    records = accepted + rejected
    # per query: lowercase 2 of 3 replies pass; short 1 of 3 (one too long, one refusal); banana has no verifier
    assert len(accepted) == 6 and len(rejected) == 8 and report["candidates"] == 14
    reasons = Counter(r["reject_reason"].split(":")[0] for r in rejected)
    assert reasons == {"constraint_failed": 4, "refusal": 2, "no_verifier": 2}
    # K answers per constraint, asked by both batches (one seed each): the second is served from the cache
    assert report["cache"]["backend_calls"] == 3 * 3 + 2 * 2 * 3 and report["cache"]["hits"] == 3 * 3
    assert len({r["id"] for r in records}) == 14
    for r in records:
        assert r["strategy"] == "autoif" and json.loads(r["strategy_params"])["functions_per_constraint"] == 3
        assert r["prompt"] == [{"role": "user", "content": f"{r['seed']['query']}\n\n{r['constraint']}"}]
        assert [s["name"] for s in r["steps"]][:3] == ["functions"] * 3
        assert r["constraint_type"] == {LOWER: "case", SHORT: "length", BANANA: "keywords"}[r["constraint"]]
        assert r["verifiers_kept"] == {LOWER: 2, SHORT: 1, BANANA: 0}[r["constraint"]]
    no_verifier = [r for r in rejected if r["reject_reason"].startswith("no_verifier")]
    assert {r["constraint"] for r in no_verifier} == {BANANA} and all(r["response"] is None for r in no_verifier)
    assert all(len(r["steps"]) == 3 and r["pass_rate"] is None for r in no_verifier)
    assert no_verifier[0]["reject_reason"].startswith("no_verifier: 0 test case(s) that a function agrees with")
    for r in accepted:
        assert r["pass_rate"] == 1.0 and [s["name"] for s in r["steps"]] == ["functions"] * 3 + ["respond"]
        detail = verdict_detail(next(v for v in r["verdicts"] if v["name"] == "autoif"))
        fate = detail["functions"]
        if r["constraint"] == LOWER:
            assert fate["kept"] == [0, 2] and fate["dropped"]["1"].startswith("no_function")
        else:
            assert fate["kept"] == [0] and fate["dropped"]["1"].startswith("disagrees: accuracy")
            assert fate["dropped"]["2"].startswith("syntax_error")
    failed = [r for r in rejected if r["reject_reason"].startswith("constraint_failed")]
    assert all(r["pass_rate"] == 0.0 and r["reject_stage"] == "autoif" for r in failed)
    assert "pass rate 0.00 < 1 (0 of 2 verification function(s) passed)" in next(
        r["reject_reason"] for r in failed if r["constraint"] == LOWER)
    # preference pairs: the first passing reply of each prompt with its failing one
    paired = [r for r in accepted if r["chosen"]]
    assert len(paired) == 4 and all(r["sample_index"] % 3 == 0 for r in paired)
    for r in paired:
        assert r["chosen"] == [{"role": "assistant", "content": r["response"]}]
        q = next(k for k, v in QUERIES.items() if v == r["seed"]["query"])
        assert r["rejected"] == [{"role": "assistant", "content": REPLIES[(q, r["constraint"])][
            2 if r["constraint"] == LOWER else 1]}]
    assert all(r["chosen"] is None and r["rejected"] is None for r in accepted if r not in paired)
    print(f"\nautoif replay accept rate: {len(accepted)}/{len(records)} = {len(accepted) / len(records):.2f}; "
          f"rejected: {dict(reasons)}")

    # the pairs as `distill --method dpo` takes them (dpo_pairs on the run's full records)
    import pyarrow.parquet as pq

    from distillery.train.api import distill
    from distillery.train.data import dpo_pairs

    pairs, stats = dpo_pairs(pq.read_table(out / "accepted.parquet").to_pylist(),
                             pq.read_table(out / "rejected.parquet").to_pylist())
    assert stats.pairs == 4 and all(p["chosen"] != p["rejected"] for p in pairs)
    assert {p["rejected"][0]["content"] for p in pairs} == {r["rejected"][0]["content"] for r in paired}
    metrics = distill(out, "builtin:student", "dpo", tmp_path / "dpo", steps=2, batch_size=2, threads=1,
                      progress=False, max_length=256)
    assert metrics["steps"] == 2 and metrics["data"]["pairs"] == 4  # the strategy's own pairs, as they are
    assert (tmp_path / "dpo" / "model.safetensors").exists()


# -- the shipped recipe against a real server -------------------------------------------------------

def test_autoif_recipe_against_a_real_server(gsm8k_server, tmp_path: Path):
    """The shipped recipe, pool, queries and templates against real `transformers serve` (tiny
    GSM8K model: its "functions" are poor, so most prompts have no verifier); mechanics only."""
    out = tmp_path / "autoif"
    recipe = Recipe.from_yaml(RECIPES / "autoif.yaml", {
        "teacher.base_url": gsm8k_server.base_url, "teacher.model": gsm8k_server.model, "teacher.concurrency": 4,
        "teacher.sampling.max_tokens": 32, "output.dir": str(out), "output.batch_size": 4,
        "report.embedding_model": None, "seeds.limit": 2, "generation.constraints_per_query": 1,
        "generation.functions_per_constraint": 1, "generation.min_functions": 1, "generation.responses_per_query": 2,
    })
    report, accepted, rejected = run_pipeline(recipe, out)
    records = accepted + rejected
    assert report["candidates"] == len(records) >= 2 and len({r["id"] for r in records}) == len(records)
    constraints = {r["constraint"] for r in records}
    with_verifier = {r["seed_id"] for r in records if r["verifiers_kept"]}
    assert report["cache"]["backend_calls"] == len(constraints) + 2 * len(with_verifier)
    pool = {c.text: c for c in load_constraints(shipped_constraints_path())}
    for r in records:
        assert r["strategy"] == "autoif" and r["strategy_params"] and r["teacher"] == gsm8k_server.model
        assert r["constraint"] in pool and r["constraint_type"] == pool[r["constraint"]].type
        assert [s["name"] for s in r["steps"]][:1] == ["functions"]
        if not r["accepted"]:
            assert r["reject_stage"] and r["reject_reason"] and ":" in r["reject_reason"]
        if r["verifiers_kept"] == 0:
            assert r["reject_reason"].startswith("no_verifier") and r["response"] is None
    for r in accepted:
        assert r["pass_rate"] == 1.0 and r["response"]
    print(f"\nautoif on the tiny model: {len(accepted)}/{len(records)} accepted; "
          f"{Counter(r['reject_reason'].split(':')[0] for r in rejected)}")
