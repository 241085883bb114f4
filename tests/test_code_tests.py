"""The ``code_tests`` strategy: AST dedup, and end-to-end runs through ``Pipeline``.

Real: the pipeline, HTTP client, cache, sandbox (every test and solution really runs in it),
the shipped recipe, seeds and templates, and `transformers serve` with the tiny GSM8K model in the
last test. Replayed: the ``ReplayTeacher`` fakes a capable teacher's outputs — hand-written
tests (good, one wrong, prose instead of code, mostly wrong), solutions (correct, renamed copies,
other algorithms, wrong, malformed, a refusal, an early ``sys.exit``) and generated problems
(good JSON, malformed JSON, a refusal).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from distillery.generate.code_tests import CodeTestsConfig, extract_tests, normalized_ast
from distillery.recipe import Recipe
from tests.helpers import REPO, run_pipeline
from tests.replay_server import ReplayTeacher

RECIPES = REPO / "recipes"
SEEDS = RECIPES / "data" / "code-problems.jsonl"


# -- pure functions --------------------------------------------------------------------------------
def test_normalized_ast_ignores_names_comments_docstrings_and_layout():
    a = "def f(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total\n"
    renamed = ('def f(values: list) -> int:\n    """Sum."""\n    # running sum\n    acc = 0\n'
               "    for v in values:\n        acc += v\n\n    return acc\n")
    other = "def f(xs):\n    return sum(xs)\n"
    swapped = "def f(xs):\n    total = 0\n    for x in xs:\n        total -= x\n    return total\n"
    builtin_renamed = "def f(xs):\n    return max(xs)\n"
    assert normalized_ast(a) == normalized_ast(renamed)
    assert len({normalized_ast(s) for s in (a, other, swapped, builtin_renamed)}) == 4
    assert normalized_ast("def g(xs):\n    return sum(xs)\n") != normalized_ast(other)  # the function's own name counts
    assert normalized_ast("def f(:") is None


def test_extract_tests_and_seed_file():
    assert extract_tests("Tests:\n```python\nassert f(1) == 1\n```\nDone.") == "assert f(1) == 1\n"
    assert extract_tests("assert f(1) == 1") == "assert f(1) == 1"
    rows = [json.loads(line) for line in SEEDS.read_text().splitlines()]
    assert len(rows) == 20 and len({r["id"] for r in rows}) == 20
    for r in rows:  # every reference defines its entry point
        assert re.search(rf"^def {r['entry_point']}\(", r["solution"], re.M) and r["entry_point"] in r["problem"]


# -- replayed teacher ---------------------------------------------------------------------------------
def fence(code: str, after: str = "It runs in linear time.") -> str:
    return f"```python\n{code}```\n{after}"


CLAMP_TESTS = fence("assert clamp(5, 0, 10) == 5\nassert clamp(-3, 0, 10) == 0\nassert clamp(12, 0, 10) == 10\n"
                    "assert clamp(0, 0, 0) == 0\nassert clamp(7, 0, 10) == 10\n", "These cover the edges.")  # the last is wrong
CLAMP = [
    fence("def clamp(x, low, high):\n    return max(low, min(x, high))\n"),
    fence("def clamp(value, lo, hi):\n    # keep it in range\n    return max(lo, min(value, hi))\n"),  # renamed copy
    fence("def clamp(x, low, high):\n    if x < low:\n        return low\n    if x > high:\n        return high\n    return x\n"),
    fence("def clamp(x, low, high):\n    return min(low, max(x, high))\n"),  # wrong
]
DIGIT_TESTS = fence("assert digit_sum(0) == 0\nassert digit_sum(123) == 6\nassert digit_sum(-45) == 9\n"
                    "assert digit_sum(1000) == 1\n")
DIGIT = [
    fence("def digit_sum(n)\n    return sum(map(int, str(abs(n))))\n"),  # syntax error
    "I'm sorry, but I can't help with that.",
    fence("import sys\n\ndef digit_sum(n):\n    return 0\n\nprint('all tests passed')\nsys.exit(0)\n"),
    fence("def digit_sum(n):\n    n = abs(n)\n    s = 0\n    while n:\n        s += n % 10\n        n //= 10\n    return s\n"),
]
GCD_TESTS = fence("assert gcd(12, 8) == 4\nassert gcd(7, 3) == 2\nassert gcd(0, 5) == 0\nassert gcd(9, 9) == 1\n")
PRIME_TESTS = fence("assert is_prime(2) is True\nassert is_prime(1) is False\nassert is_prime(9) is False\n"
                    "assert is_prime(97) is True\nassert is_prime(-7) is False\n")
PRIME = [
    fence("def is_prime(n):\n    if n < 2:\n        return False\n    return all(n % d for d in range(2, int(n ** 0.5) + 1))\n"),
    fence("def is_prime(n):\n    if n < 2:\n        return False\n    d = 2\n    while d * d <= n:\n        if n % d == 0:\n"
          "            return False\n        d += 1\n    return True\n"),
    fence("def is_prime(n):\n    return n > 1 and not any(n % k == 0 for k in range(2, n))\n"),
    fence('def is_prime(num):\n    """Trial division."""\n    if num < 2:\n        return False\n'
          "    return all(num % q for q in range(2, int(num ** 0.5) + 1))\n"),  # a copy of the first
]


def rules() -> list:
    def solve(name: str) -> str:
        return rf"Solve the following task in Python.*Write a function named `{name}`"

    return [
        (r"Write unit tests for the function `clamp`", CLAMP_TESTS), (solve("clamp"), CLAMP),
        (r"Write unit tests for the function `count_vowels`", "Test that vowels are counted and consonants are not."),
        (solve("count_vowels"), fence("def count_vowels(text):\n    return sum(c in 'aeiouAEIOU' for c in text)\n")),
        (r"Write unit tests for the function `digit_sum`", DIGIT_TESTS), (solve("digit_sum"), DIGIT),
        (r"Write unit tests for the function `gcd`", GCD_TESTS),
        (solve("gcd"), fence("def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n")),
        (r"Write unit tests for the function `is_prime`", PRIME_TESTS), (solve("is_prime"), PRIME),
    ]


def replay_recipe(teacher: ReplayTeacher, seeds: Path, out: Path, **generation) -> Recipe:
    return Recipe.from_dict({
        "seeds": {"path": str(seeds), "id_field": "id"},
        "teacher": {"model": teacher.model, "base_url": teacher.base_url, "concurrency": 4,
                    "sampling": {"max_tokens": 300, "seed": 0}},
        "generation": {"strategy": "code_tests", "solutions": 4, "keep": 2, "min_tests": 3, "workers": 2, **generation},
        "filters": [{"type": "length", "min_tokens": 5, "max_tokens": 700}],
        "dedup": [{"type": "exact"}],
        "output": {"dir": str(out), "batch_size": 8},
        "report": {"embedding_model": None},
    })


@pytest.fixture(scope="module")
def replay_run(tmp_path_factory) -> tuple[Path, dict, list[dict], list[dict]]:
    tmp = tmp_path_factory.mktemp("code-tests")
    wanted = ["clamp", "count_vowels", "digit_sum", "gcd", "is_prime"]
    rows = {json.loads(line)["id"]: line for line in SEEDS.read_text().splitlines()}
    seeds = tmp / "problems.jsonl"
    seeds.write_text("".join(rows[w] + "\n" for w in wanted))
    out = tmp / "run"
    with ReplayTeacher(rules(), default=None) as teacher:
        report, accepted, rejected = run_pipeline(replay_recipe(teacher, seeds, out), out)
        assert not teacher.unmatched
    return out, report, accepted, rejected


def test_replay_teacher_end_to_end(replay_run):
    """Seed problems with references: tests rejecting the reference are dropped, solutions run
    in the sandbox, distinct passing ones kept (two per problem at most)."""
    out, report, accepted, rejected = replay_run
    assert report["candidates"] == 20 and len(accepted) == 5
    reasons = {r["id"]: r["reject_reason"] for r in rejected}
    assert sorted(r["id"] for r in accepted) == ["clamp#0", "clamp#2", "digit_sum#3", "is_prime#0", "is_prime#1"]
    assert reasons["clamp#1"] == "duplicate_solution: same normalized syntax tree as clamp#0"
    assert reasons["clamp#3"].startswith("failed_tests: 2 of 4 failed (first: L1: assert clamp(5, 0, 10) == 5")
    assert all(reasons[f"count_vowels#{k}"].startswith("bad_tests: the test code does not parse") for k in range(4))
    assert reasons["digit_sum#0"].startswith("syntax_error")
    assert reasons["digit_sum#1"].split(":")[0] in ("syntax_error", "no_program")
    assert reasons["digit_sum#2"].startswith("exited: 4 of 4 tests")
    assert all(reasons[f"gcd#{k}"] == "too_few_tests: 1 of 4 test(s) left (3 rejected the reference) < 3"
               for k in range(4))
    assert reasons["is_prime#2"] == "enough_solutions: 2 distinct passing solution(s) already kept"
    assert reasons["is_prime#3"] == "duplicate_solution: same normalized syntax tree as is_prime#0"
    by_id = {r["id"]: r for r in accepted + rejected}
    clamp = by_id["clamp#0"]
    assert clamp["strategy"] == "code_tests" and json.loads(clamp["strategy_params"])["keep"] == 2
    assert (clamp["tests_total"], clamp["tests_dropped"], clamp["tests_passed"]) == (5, 1, 4)
    assert clamp["problem_source"] == "seed" and clamp["entry_point"] == "clamp"
    assert "clamp(7, 0, 10)" not in clamp["unit_tests"] and "clamp(12, 0, 10)" in clamp["unit_tests"]
    assert [s["name"] for s in clamp["steps"]] == ["tests"] and clamp["response"] == CLAMP[0]
    assert clamp["prompt"][0]["role"] == "user" and clamp["problem"] in clamp["prompt"][0]["content"]
    assert by_id["is_prime#0"]["solution_ast"] != by_id["is_prime#1"]["solution_ast"]
    assert by_id["is_prime#3"]["solution_ast"] == by_id["is_prime#0"]["solution_ast"]
    assert by_id["digit_sum#3"]["tests_passed"] == 4 and by_id["clamp#3"]["tests_passed"] == 2
    categories = Counter(v.split(":")[0] for v in reasons.values())
    print(f"\ncode_tests accept rate vs replay teacher (seed problems): {len(accepted)}/{report['candidates']}",
          dict(categories))


def test_generated_problems_against_a_replay_teacher(tmp_path: Path):
    """problems: generate: good JSON, a fenced JSON answer, malformed JSON and a refusal."""
    seeds = tmp_path / "problems.jsonl"
    lines = SEEDS.read_text().splitlines()
    seeds.write_text(lines[0] + "\n" + lines[9] + "\n")  # clamp, gcd
    square = json.dumps({"problem": "Write a function `square_all(xs)` returning the squares of a list of integers, "
                                    "in order.", "entry_point": "square_all"})
    evens = json.dumps({"problem": "Write a function `count_even(xs)` returning how many integers of the list are "
                                   "even.", "entry_point": "count_even"})
    gen = [
        (r"example of a programming exercise:\n\nWrite a function `clamp", [square, '{"problem": "Write a function'],
         ),
        (r"example of a programming exercise:\n\nWrite a function `gcd", ["I'm sorry, I can't do that.",
                                                                           f"```json\n{evens}\n```"]),
        (r"Write unit tests for the function `square_all`",
         fence("assert square_all([]) == []\nassert square_all([1, -2]) == [1, 4]\nassert square_all([3]) == [9]\n")),
        (r"Write a function named `square_all`", fence("def square_all(xs):\n    return [x * x for x in xs]\n")),
        (r"Write unit tests for the function `count_even`",
         fence("assert count_even([]) == 0\nassert count_even([2, 3, 4]) == 2\nassert count_even([1]) == 0\n")),
        (r"Write a function named `count_even`", fence("def count_even(xs):\n    return len(xs)\n")),
    ]
    out = tmp_path / "run"
    with ReplayTeacher(gen, default=None) as teacher:
        recipe = replay_recipe(teacher, seeds, out, problems="generate", new_problems=2, solutions=1)
        report, accepted, rejected = run_pipeline(recipe, out)
        assert not teacher.unmatched
    assert report["candidates"] == 4 and [r["id"] for r in accepted] == ["clamp#0"]
    reasons = {r["id"]: r["reject_reason"] for r in rejected}
    assert reasons["clamp#1"].startswith("malformed_problem: malformed_json")
    assert reasons["gcd#0"] == "refusal: the teacher declined to write a problem"
    assert reasons["gcd#1"].startswith("failed_tests: 2 of 3 failed")
    square_rec = accepted[0]
    assert square_rec["problem_source"] == "generated" and square_rec["entry_point"] == "square_all"
    assert [s["name"] for s in square_rec["steps"]] == ["problem", "tests"] and square_rec["tests_dropped"] == 0
    assert square_rec["prompt"][0]["content"].count("square_all") >= 1 and "example" not in square_rec["prompt"][0]["content"]
    assert json.loads(next(r for r in rejected if r["id"] == "gcd#0")["verdicts"][0]["detail"])["raw"].startswith("I'm sorry")
    print(f"\ncode_tests accept rate vs replay teacher (generated problems): {len(accepted)}/{report['candidates']}",
          dict(Counter(v.split(":")[0] for v in reasons.values())))


def test_sft_consumes_the_run(replay_run, tmp_path: Path):
    """`distill --method sft` (the API behind the CLI) trains the built-in student on the accepted solutions."""
    from distillery.train.api import distill

    out, _, accepted, _ = replay_run
    metrics = distill(out, "builtin:student", "sft", tmp_path / "sft", steps=2, batch_size=2, threads=1,
                      progress=False, max_length=256)
    assert metrics["steps"] == 2 and metrics["data"]["examples"] == len(accepted) == 5
    assert (tmp_path / "sft" / "model.safetensors").exists()


def test_config_defaults():
    c = CodeTestsConfig()
    assert (c.problems, c.solutions, c.keep, c.reference_field) == ("seeds", 4, 2, "solution")


# -- the shipped recipe against a real server ------------------------------------------------------
def test_code_tests_recipe_against_a_real_server(gsm8k_server, tmp_path: Path):
    """The shipped recipe, seeds and templates against real `transformers serve` (tiny GSM8K
    model: it writes no usable tests or code, so records are rejected); mechanics only."""
    out = tmp_path / "code-tests"
    recipe = Recipe.from_yaml(RECIPES / "code-tests.yaml", {
        "teacher.base_url": gsm8k_server.base_url, "teacher.model": gsm8k_server.model, "teacher.concurrency": 4,
        "teacher.sampling.max_tokens": 48, "output.dir": str(out), "output.batch_size": 2,
        "report.embedding_model": None, "seeds.limit": 2, "generation.solutions": 1,
    })
    report, accepted, rejected = run_pipeline(recipe, out)
    records = accepted + rejected
    assert report["candidates"] == len(records) == 2
    assert len({r["id"] for r in records}) == 2
    for r in records:
        assert r["strategy"] == "code_tests" and r["strategy_params"] and r["problem_source"] == "seed"
        assert r["entry_point"] == r["seed"]["entry_point"] and [s["name"] for s in r["steps"]] == ["tests"]
        if not r["accepted"]:
            assert r["reject_stage"] and ":" in r["reject_reason"]
    assert report["cache"]["backend_calls"] == 2 * 2  # one tests and one solve call per problem
    print("\ncode_tests vs the tiny GSM8K model:", Counter((r["reject_reason"] or "accepted").split(":")[0] for r in records))
