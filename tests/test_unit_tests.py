"""The ``unit_tests`` verifier: test splitting, program forming, and real sandboxed runs.

Everything here is real: HumanEval's own problems, tests and canonical solutions (from the
shared data folder), run through ``Stage.apply`` in the real sandbox; the broken solutions are
hand-made mutations of canonical ones.
"""

from __future__ import annotations

import gzip
import json

import pytest
from pydantic import ValidationError

from distillery.pipeline.stage import BuildContext
from distillery.records import new_record, verdict_detail
from distillery.verify.unit_tests import (
    UnitTestsConfig,
    prepare_program,
    read_tests,
    split_tests,
    summarize,
)
from tests.helpers import SHARED

HUMANEVAL = SHARED / "humaneval" / "HumanEval.jsonl.gz"


@pytest.fixture(scope="module")
def humaneval() -> dict[str, dict]:
    with gzip.open(HUMANEVAL, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    return {r["task_id"]: r for r in rows}


@pytest.fixture(scope="module")
def stage():
    verifier = UnitTestsConfig(prompt_field="prompt", workers=2, timeout_s=3.0).build(BuildContext())
    yield verifier
    verifier.close()


def he_record(row: dict, response: str, rid: str = "r") -> dict:
    return new_record(id=rid, seed=row, response=response)


def run(stage, records: list[dict]) -> list[dict]:
    stage.apply(records)
    return [verdict_detail(r["verdicts"][-1]) for r in records]


# -- splitting ---------------------------------------------------------------------------------
def test_split_check_keeps_setup_before_each_assert_and_drops_trivial_asserts():
    code = (
        "METADATA = {}\n\ndef helper(x):\n    return x\n\n"
        "def check(candidate):\n"
        "    import math\n"
        "    assert candidate(1) == 2\n"
        "    y = 3\n"
        "    assert candidate(y) == 4, 'second'\n"
        "    assert True, 'a placeholder'\n"
        "    for i in range(3):\n"
        "        assert candidate(i) == i + 1\n"
        "check(f)\n"
    )
    suite = split_tests(code)
    assert suite.style == "check" and len(suite.units) == 3
    assert "METADATA" in suite.setup and "def helper" in suite.setup
    assert "check(f)" not in suite.setup  # a call that would run every test is not setup
    first, second, loop = suite.units
    assert first.name == "L8: assert candidate(1) == 2" and first.pass_candidate
    assert "import math" in second.source and "y = 3" in second.source and "candidate(1)" not in second.source
    assert "for i in range(3)" in loop.source and "y = 3" in loop.source


def test_split_assert_lines_pytest_functions_and_lists():
    suite = split_tests("import math\nassert f(1) == 1\nx = 2\nassert f(x) == 4\n")
    assert suite.style == "asserts" and [u.call for u in suite.units] == [None, None]
    assert "import math" in suite.units[1].source and "x = 2" in suite.units[1].source
    suite = split_tests("def test_one():\n    assert f(1) == 1\n\ndef test_two():\n    assert f(2) == 4\n")
    assert suite.style == "pytest" and [u.call for u in suite.units] == ["test_one", "test_two"]
    assert "def test_one" in suite.setup
    mbpp = read_tests(["assert f(1) == 1", "assert f(2) == 2"])
    assert len(split_tests(mbpp).units) == 2
    with pytest.raises(ValueError, match="no test"):
        split_tests("x = 1\nassert True\n")
    with pytest.raises(ValueError, match="does not parse"):
        split_tests("def check(:\n")
    with pytest.raises(ValueError):
        read_tests("  ")


def test_prepare_program_body_or_whole_function():
    prompt = 'def add(a, b):\n    """Add."""\n'
    program, form = prepare_program("    return a + b\n", "add", prompt)
    assert form == "whole_response+body" and program.endswith("    return a + b\n")
    program, form = prepare_program("```python\nreturn a + b\n```", "add", prompt)  # unindented body
    assert form == "code_block+body" and "    return a + b" in program
    program, form = prepare_program("Here:\n```python\ndef add(a, b):\n    return a + b\n```", "add", prompt)
    assert form == "code_block+prompt" and program.startswith(prompt.rstrip("\n"))
    assert prepare_program("def add(a, b):\n    return a + b\n", "add")[1] == "whole_response"
    assert prepare_program("```python\nx = 1\n```", "add")[0] is None
    assert prepare_program("", "add", prompt)[1].startswith("no_program")
    assert prepare_program("def add(a, b) return", "add", prompt)[1].startswith("syntax_error")


def test_summarize_reasons():
    from distillery.verify.unit_tests import UnitResult

    ok = UnitResult("a", True, "passed")
    bad = UnitResult("b", False, "failed", "AssertionError")
    slow = UnitResult("c", False, "timeout", "exceeded")
    assert summarize([ok, ok])[0] is True
    passed, reason, detail = summarize([ok, bad, bad])
    assert not passed and reason.startswith("failed_tests: 2 of 3 failed (first: b: AssertionError")
    assert detail["passed"] == 1 and detail["total"] == 3 and len(detail["tests"]) == 3
    assert summarize([ok, slow])[1].startswith("timeout: 1 of 2 tests")
    assert summarize([ok, bad, slow])[1].startswith("failed_tests")
    assert summarize([ok, bad], min_pass_rate=0.5)[0] is True


def test_config_inputs_and_validation():
    c = UnitTestsConfig(prompt_field="prompt")
    assert c.inputs == ("seed.test", "seed.entry_point", "seed.prompt")
    assert UnitTestsConfig(entry="f", tests="tests").inputs == ("seed.tests",)
    with pytest.raises(ValidationError):
        UnitTestsConfig(min_pass_rate=0)


# -- HumanEval through the sandbox ----------------------------------------------------------------
def test_all_humaneval_canonical_solutions_pass(stage, humaneval):
    """All 164 canonical solutions, as bodies completing the prompt, pass every test (~1100 runs)."""
    rows = list(humaneval.values())
    assert len(rows) == 164
    records = [he_record(r, r["canonical_solution"], r["task_id"]) for r in rows]
    details = run(stage, records)
    failed = [(r["task_id"], r["reject_reason"]) for r in records if not r["accepted"]]
    assert failed == []
    assert all(d["passed"] == d["total"] > 0 for d in details)
    assert sum(d["total"] for d in details) > 1000
    assert {d["program"] for d in details} == {"whole_response+body"}


def test_whole_function_in_a_code_block_passes(stage, humaneval):
    row = humaneval["HumanEval/0"]
    response = f"Here is the function.\n\n```python\n{row['prompt']}{row['canonical_solution']}```\n"
    (detail,) = run(stage, [he_record(row, response)])
    assert detail["program"] == "code_block+prompt" and detail["passed"] == detail["total"] == 7


@pytest.mark.parametrize(
    ("task", "mutate", "reason"),
    [
        ("HumanEval/0", lambda s: s.replace("distance < threshold", "distance > threshold"), "failed_tests"),
        ("HumanEval/53", lambda s: s.replace("x + y", "x + y + 1"), "failed_tests"),
        ("HumanEval/12", lambda s: s.replace("max(len(x)", "max(len(x) - 1"), "failed_tests"),
        ("HumanEval/53", lambda s: "    import sys\n    sys.exit(0)\n" + s, "exited"),
        ("HumanEval/53", lambda s: "    import os\n    os._exit(0)\n" + s, "exited"),
        ("HumanEval/53", lambda s: "    print('All tests passed!')\n    return None\n", "failed_tests"),
        (
            "HumanEval/53",
            lambda s: "    class Yes:\n        def __eq__(self, other):\n            return True\n    return Yes()\n",
            "unsupported_return",
        ),
        (
            "HumanEval/53",
            lambda s: "    class Num(int):\n        def __eq__(self, other):\n            return True\n    return Num(0)\n",
            "unsupported_return",
        ),
        ("HumanEval/53", lambda s: "    return [x, y\n", "syntax_error"),
    ],
    ids=["wrong-operator", "off-by-one", "off-by-one-max", "sys-exit", "os-exit", "fake-print",
         "always-equal", "int-subclass", "syntax"],
)
def test_broken_solutions_fail(stage, humaneval, task, mutate, reason):
    row = humaneval[task]
    body = mutate(row["canonical_solution"])
    assert body != row["canonical_solution"]
    (record,) = [he_record(row, body)]
    (detail,) = run(stage, [record])
    assert record["accepted"] is False
    assert record["reject_reason"].split(":", 1)[0] == reason, record["reject_reason"]
    if reason != "syntax_error":
        assert detail["passed"] < detail["total"] and detail["tests"]
        assert all(set(t) == {"name", "passed", "status", "error"} for t in detail["tests"])


def test_module_level_exit_and_whole_program_tricks_fail(stage, humaneval):
    row = humaneval["HumanEval/2"]  # its tests use abs(): patching builtins must not help
    patch = ("```python\nimport builtins\nbuiltins.abs = lambda x: 0\n"
             "def truncate_number(number):\n    return 0.5\n```")
    early = ("```python\nimport sys\ndef truncate_number(number):\n    return number % 1.0\n"
             "print('3 passed')\nsys.exit(0)\n```")
    records = [he_record(row, patch, "patch"), he_record(row, early, "early")]
    patched, exited = run(stage, records)
    assert records[0]["reject_reason"].startswith("failed_tests: 2 of 3 failed")
    assert patched["tests"][0]["passed"] is True  # 3.5 % 1.0 really is 0.5
    assert records[1]["reject_reason"].startswith("exited: 3 of 3 tests")
    assert exited["tests"][0]["status"] == "exited"


def test_swallowed_exceptions_and_mbpp_style_asserts(stage):
    """A test that swallows exceptions still fails an always-equal object; MBPP-style lines and
    pytest functions run per test, with per-test detail."""
    seed = {
        "entry_point": "double",
        "test": "def check(candidate):\n    try:\n        assert candidate(2) == 4\n    except Exception:\n        pass\n",
    }
    cheat = "def double(x):\n    class Y:\n        __eq__ = lambda s, o: True\n    return Y()\n"
    good = "def double(x):\n    return 2 * x\n"
    mbpp = {"entry_point": "double", "test": ["assert double(1) == 2", "assert double(3) == 6", "assert double(0) == 1"]}
    pytest_seed = {"entry_point": "double", "test": "def test_a():\n    assert double(5) == 10\n\ndef test_b():\n    assert double(-1) == -2\n"}
    records = [new_record(id="cheat", seed=seed, response=cheat), new_record(id="good", seed=seed, response=good),
               new_record(id="mbpp", seed=mbpp, response=good), new_record(id="py", seed=pytest_seed, response=good),
               new_record(id="none", seed=mbpp, response="I cannot write that."),
               new_record(id="badseed", seed={"entry_point": "double", "test": "x = 1"}, response=good)]
    details = run(stage, records)
    assert [r["accepted"] for r in records] == [False, True, False, True, False, False]
    assert records[0]["reject_reason"].startswith("unsupported_return")
    assert records[2]["reject_reason"] == (
        "failed_tests: 1 of 3 failed (first: L3: assert double(0) == 1: AssertionError)"
    )
    assert [t["passed"] for t in details[2]["tests"]] == [True, True, False]
    assert details[3]["style"] == "pytest" and [t["name"] for t in details[3]["tests"]] == ["test_a", "test_b"]
    assert records[4]["reject_reason"].split(":")[0] in ("syntax_error", "no_program")
    assert records[5]["reject_reason"].startswith("bad_tests")


def test_partial_pass_rate_memory_and_time_limits():
    stage = UnitTestsConfig(entry="f", min_pass_rate=0.5, workers=2, memory_mb=128, timeout_s=0.5).build(BuildContext())
    try:
        seed = {"test": ["assert f(1) == 1", "assert f(2) == 3"]}
        half = new_record(id="a", seed=seed, response="def f(x):\n    return 1\n")
        hog = new_record(id="b", seed=seed, response="def f(x):\n    return len(bytearray(1 << 30))\n")
        loop = new_record(id="c", seed=seed, response="def f(x):\n    while True:\n        pass\n")
        stage.apply([half, hog, loop])
        assert half["accepted"] is True and verdict_detail(half["verdicts"][-1])["pass_rate"] == 0.5
        assert hog["reject_reason"].startswith("memory: 2 of 2 tests")
        assert loop["reject_reason"].startswith("timeout: 2 of 2 tests")
    finally:
        stage.close()
