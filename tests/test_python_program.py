"""The ``python_program`` verifier stage, through ``Stage.apply`` on real records."""

from __future__ import annotations

import json
import re
from fractions import Fraction

import pytest
from pydantic import ValidationError

from distillery.pipeline.stage import BuildContext
from distillery.records import new_record, verdict_detail
from distillery.verify.python_program import (
    PythonProgramConfig,
    PythonProgramVerifier,
    extract_program,
    parse_reference,
)
from tests.helpers import SHARED

GSM8K_TEST = SHARED / "gsm8k" / "test.jsonl"


@pytest.fixture(scope="module")
def stage():
    verifier = PythonProgramConfig(timeout_s=1.0, workers=2).build(BuildContext())
    yield verifier
    verifier.close()


def record(response: str | None, answer, **seed):
    return new_record(id="r", seed={"answer": answer, **seed}, response=response)


def fenced(code: str, lang: str = "python") -> str:
    return f"Let me write a program.\n\n```{lang}\n{code}```\n\nThe answer follows from it."


# -- extraction and references --------------------------------------------------------------
def test_extract_program_prefers_the_block_defining_the_entry():
    text = "```python\nimport math\n```\nthen\n```py\ndef solution():\n    return 1\n```\n```\nx = 2\n```"
    program, source = extract_program(text)
    assert source == "code_block" and program.startswith("def solution")
    assert extract_program("```\ndef solution():\n    return 3\n```")[1] == "code_block"
    assert extract_program("def solution():\n    return 3\n") == (
        "def solution():\n    return 3\n",
        "whole_response",
    )
    assert extract_program("```python\nprint(1)\n```")[0] is None
    assert extract_program("   ")[0] is None and extract_program(None)[0] is None
    cut = "Here:\n```python\ndef solution():\n    return 2"  # truncated by the token limit
    assert extract_program(cut) == ("def solution():\n    return 2", "code_block")
    assert extract_program("```python\nanswer = lambda: 1\n```", entry="answer")[1] == "code_block"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("42", 42),
        (" -7 ", -7),
        ("7/3", Fraction(7, 3)),
        ("3.5", 3.5),
        ("1e-3", 0.001),
        ("$1,234", 1234),
        ("50%", 50),
        ("She makes 9 * 2 = $18 every day.\n#### 18", 18),
        ("#### 1,234", 1234),
        (12, 12),
        (2.5, 2.5),
        ([1, 2], [1, 2]),
    ],
)
def test_parse_reference(raw, expected):
    value = parse_reference(raw)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("raw", [None, True, "seven", "1/0", "nan", float("inf"), "#### "])
def test_parse_reference_rejects(raw):
    with pytest.raises(ValueError):
        parse_reference(raw)


def test_config_is_validated():
    assert PythonProgramConfig().type == "python_program"
    with pytest.raises(ValidationError):
        PythonProgramConfig(timeout_s=0)
    with pytest.raises(ValidationError):
        PythonProgramConfig(entry="not an identifier")
    with pytest.raises(ValidationError):
        PythonProgramConfig(unknown_option=1)
    stage = PythonProgramConfig(name="pal", reference="target", timeout_s=3, memory_mb=128).build(
        BuildContext()
    )
    assert isinstance(stage, PythonProgramVerifier) and stage.name == "pal" and stage.kind == "verify"
    assert stage.config.inputs == ("seed.target",)
    assert (stage.limits.wall_time_s, stage.limits.memory_mb) == (3, 128)
    stage.close()  # never started: nothing to stop


# -- the stage on records --------------------------------------------------------------------
def test_stage_verdicts(stage):
    records = [
        record(fenced("def solution():\n    return 6 * 7\n"), "42"),
        record(fenced("def solution():\n    return 41\n"), "42"),
        record(fenced("def solution():\n    while True:\n        pass\n"), "1"),
        record(fenced("def solution():\n    return 1 / 0\n"), "1"),
        record("I think the answer is 42.", "42"),
        record(fenced("def solution():\n    return 1\n"), "forty-two"),
        record(fenced("def solution():\n    return 0.1 + 0.2\n"), "0.3"),
        record(
            fenced("from fractions import Fraction\ndef solution():\n    return Fraction(14, 6)\n"), "7/3"
        ),
        record(fenced("def solution():\n    return 18\n"), "Janet sells 9 eggs.\n#### 18"),
        record(fenced("def solution():\n    return True\n"), "1"),
        record(fenced("def solution(:\n"), "1"),
        record(fenced("class X: pass\ndef solution():\n    return X()\n"), "1"),
        record("```python\nprint(42)\n```", "42"),
    ]
    survivors = stage.apply(records)
    assert [r["accepted"] for r in records] == [
        True,
        False,
        False,
        False,
        False,
        False,
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    assert survivors == [records[i] for i in (0, 6, 7, 8)]
    reasons = [r["reject_reason"] for r in records]
    assert reasons[1] == "wrong_answer: 41 != 42"
    assert re.match(r"timeout: exceeded 1(\.0)? s", reasons[2]), reasons[2]
    assert reasons[3].startswith("error: ZeroDivisionError: division by zero")
    assert reasons[4].startswith("error: ") or reasons[4].startswith("syntax_error: ")  # prose is not Python
    assert reasons[5].startswith("bad_reference: seed field 'answer'")
    assert reasons[9] == "wrong_answer: True != 1"
    assert reasons[10].startswith("syntax_error: SyntaxError")
    assert reasons[11].startswith("unsupported_return: unsupported return type")
    assert reasons[12] == "no_program: 1 code block(s), none defines solution()"
    detail = verdict_detail(records[0]["verdicts"][-1])
    assert detail["status"] == "ok" and detail["value"] == "42" and detail["reference"] == "42"
    assert detail["program"] == "code_block" and detail["wall_s"] > 0
    assert verdict_detail(records[1]["verdicts"][-1])["value"] == "41"
    counts = stage.stats.reasons
    assert counts["wrong_answer"] == 2 and counts["timeout"] == 1 and counts["no_program"] == 1
    assert stage.stats.records_in == 13 and stage.stats.records_out == 4


def test_rejected_records_are_skipped(stage):
    done = record(fenced("def solution():\n    return 1\n"), "1")
    done["accepted"] = False
    live = record(fenced("def solution():\n    return 1\n"), "1")
    assert stage.apply([done, live]) == [live]
    assert done["verdicts"] == [] and len(live["verdicts"]) == 1


def test_other_reference_field_and_entry():
    verifier = PythonProgramConfig(reference="target", entry="compute", workers=1).build(BuildContext())
    try:
        rec = new_record(seed={"target": "2/3"}, response=fenced("def compute():\n    return 2 / 3\n"))
        assert verifier.apply([rec]) == [rec]
    finally:
        verifier.close()
    assert verifier._sandbox is None


def _gsm8k_programs(n: int) -> list[tuple[str, str]]:
    """(program, GSM8K solution) pairs: the program returns the solution's last calculator
    annotation ``<<expr=result>>`` (a PAL-style program built from the real solution)."""
    out = []
    with GSM8K_TEST.open() as f:
        for line in f:
            row = json.loads(line)
            calcs = re.findall(r"<<([0-9+\-*/(). ]+)=([^>]+)>>", row["answer"])
            if calcs:
                out.append((f"def solution():\n    return {calcs[-1][0]}\n", row["answer"]))
            if len(out) == n:
                break
    return out


@pytest.mark.skipif(not GSM8K_TEST.exists(), reason="GSM8K test split not available")
def test_gsm8k_programs(stage):
    pairs = _gsm8k_programs(40)
    good = [record(fenced(p), answer) for p, answer in pairs]
    off_by_one = [record(fenced(p.replace("return ", "return 1 + ")), answer) for p, answer in pairs]
    stage.apply(good + off_by_one)
    accepted = sum(r["accepted"] for r in good)
    # Almost every final annotation is the final answer (a few solutions end with a unit step).
    assert accepted >= 0.9 * len(good), [r["reject_reason"] for r in good if not r["accepted"]]
    assert not any(r["accepted"] for r in off_by_one)
    assert {r["reject_reason"].split(":")[0] for r in off_by_one} == {"wrong_answer"}
