"""The difficulty band: pass rates measured by sampling a real model (the tests' tiny GSM8K
model in-process) or a scripted student behind a real HTTP server, verified by the existing
verifier stages; each prompt measured once; the band keeps and rejects accordingly."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from distillery.backends.base import GenerationRequest
from distillery.filter.difficulty import DifficultyConfig, DifficultyFilter
from distillery.pipeline.stage import BuildContext
from distillery.records import new_record
from distillery.verify.answers import extract_answer
from distillery.verify.math_answer import answers_equal
from tests.fault_server import FaultServer
from tests.helpers import GSM8K_TEST, read_jsonl

N = 4


def rec(seed_id: str, question: str, answer: str, k: int = 0) -> dict:
    return new_record(id=f"{seed_id}#{k}", seed_id=seed_id, seed={"question": question, "answer": answer},
                      prompt=[{"role": "user", "content": question}])


def detail(record: dict) -> dict:
    return json.loads(record["verdicts"][-1]["detail"])


def tiny(model: Path, tmp_path: Path, **kw) -> DifficultyFilter:
    config = DifficultyConfig(
        model={"backend": "transformers", "model": str(model), "device": "cpu",
               "sampling": {"temperature": 1.0, "max_tokens": 40, "seed": 0}},
        verifier={"type": "math_answer", "reference": "answer"},
        n=N,
        cache=str(tmp_path / "student-cache.sqlite"),
        **kw,
    )
    stage = config.build(BuildContext(run_dir=tmp_path))
    assert isinstance(stage, DifficultyFilter)
    return stage


def test_band_on_pass_rates_measured_with_a_real_model(tiny_gsm8k_model: Path, tmp_path: Path):
    questions = [r["question"] for r in read_jsonl(GSM8K_TEST, 2)]
    # 1. a reference the model never reaches: too hard; one measurement per prompt
    probe = tiny(tiny_gsm8k_model, tmp_path, low=0.1, high=0.9)
    impossible = [rec("q0", questions[0], "-987654321", 0), rec("q0", questions[0], "-987654321", 1),
                  rec("q1", questions[1], "-987654321", 0)]
    assert probe.apply(impossible) == []
    for r in impossible:
        assert r["reject_reason"] == "too_hard: pass rate 0.00 < 0.1"
        d = detail(r)
        assert d["n"] == N and d["passes"] == 0 and sum(d["verifier_reasons"].values()) == N
    assert probe.backend.calls == 2 * N  # q0 measured once for its two candidates
    assert [detail(r)["measured_before"] for r in impossible] == [False, False, False]
    again = [rec("q0", questions[0], "-987654321", 2)]
    probe.apply(again)
    assert detail(again[0])["measured_before"] and probe.backend.calls == 2 * N  # remembered for the run
    # the student's completions, from the cache the stage filled
    requests = [GenerationRequest.make(impossible[0]["messages"], probe.sampling, k) for k in range(N)]
    completions = asyncio.run(probe.backend.generate(requests))
    assert all(c.cached for c in completions)
    answers = [extract_answer(c.text or "")[0] for c in completions]
    target = next(a for a in answers if a is not None)  # what the model itself answers
    expected = sum(a is not None and answers_equal(target, a) for a in answers) / N
    assert expected >= 1 / N
    probe.close()
    # 2. the same completions (from the cache: no call) judged against the model's own answer
    easy = tiny(tiny_gsm8k_model, tmp_path, low=0.0, high=0.2)
    rows = [rec("q0", questions[0], target)]
    easy.apply(rows)
    assert easy.backend.calls == 0 and easy.backend.cache_hits == N
    assert detail(rows[0])["pass_rate"] == pytest.approx(expected)
    assert rows[0]["reject_reason"] == f"too_easy: pass rate {expected:.2f} > 0.2"
    easy.close()
    band = tiny(tiny_gsm8k_model, tmp_path, low=0.25, high=1.0)
    rows = [rec("q0", questions[0], target)]
    assert band.apply(rows) == rows and detail(rows[0])["passes"] == round(expected * N)
    assert band.stats.records_out == 1
    band.close()


def program(value: int) -> str:
    return f"```python\ndef solution():\n    return {value}\n```"


def test_python_program_verifier_and_a_scripted_student():
    """A student behind a real HTTP server that is right on 3 of 4 samples (chosen by the
    request's seed, i.e. the sample index) for q-easy, on 1 of 4 for q-mid, never for q-hard."""

    def student(n: int, body: dict):
        question, k = body["messages"][-1]["content"], body["seed"] % N
        right = {"q-easy": k < 3, "q-mid": k == 0, "q-hard": False}[question]
        return ("ok", program(72 if right else 60 + k))

    server = FaultServer(student)
    try:
        config = DifficultyConfig(
            model={"backend": "openai", "model": server.model, "base_url": server.base_url, "max_retries": 0,
                   "sampling": {"temperature": 1.0, "seed": 100}},
            verifier={"type": "python_program", "reference": "answer", "timeout_s": 5},
            n=N, low=0.2, high=0.6,
        )
        stage = config.build(BuildContext())
        assert stage.config.inputs == ("prompt", "seed.answer")
        records = [rec(q, q, "72") for q in ("q-easy", "q-mid", "q-hard")]
        kept = asyncio.run(stage.apply_async(records))
        assert [r["id"] for r in kept] == ["q-mid#0"]
        assert records[0]["reject_reason"] == "too_easy: pass rate 0.75 > 0.6"
        assert records[2]["reject_reason"] == "too_hard: pass rate 0.00 < 0.2"
        assert detail(records[1]) | {"verifier_reasons": None} == {
            "pass_rate": 0.25, "n": 4, "passes": 1, "failed_requests": 0, "band": [0.2, 0.6],
            "verifier_reasons": None, "measured_before": False,
        }
        assert detail(records[2])["verifier_reasons"] == {"wrong_answer": 4}
        assert server.requests == 3 * N
        stage.close()
    finally:
        server.close()


def test_a_student_that_always_fails_is_a_recorded_rejection():
    server = FaultServer(lambda n, body: ("status", 400))
    try:
        config = DifficultyConfig(
            model={"backend": "openai", "model": server.model, "base_url": server.base_url, "max_retries": 0},
            verifier={"type": "math_answer"}, n=3,
        )
        stage = config.build(BuildContext())
        records = [rec("q", "How many?", "4")]
        stage.apply(records)
        assert records[0]["reject_reason"].startswith("student_error: all 3 samples failed (http_400: ")
        assert detail(records[0])["failed_requests"] == 3
        stage.close()
    finally:
        server.close()


def test_config_defaults_and_validation():
    config = DifficultyConfig(verifier={"type": "math_answer", "reference": "answer"})
    assert config.model.backend == "transformers" and config.model.model == "builtin:student"
    assert (config.n, config.low, config.high) == (8, 0.1, 0.9)
    dumped = config.model_dump(mode="json")
    assert dumped["verifier"]["type"] == "math_answer" and DifficultyConfig.model_validate(dumped) == config
    with pytest.raises(ValueError, match=r"verifier\n.*unknown verifier 'nope'"):
        DifficultyConfig(verifier={"type": "nope"})
    with pytest.raises(ValueError, match=r"verifier\.refrence\n.*Extra inputs"):
        DifficultyConfig(verifier={"type": "math_answer", "refrence": "answer"})
    with pytest.raises(ValueError, match="low 0.9 > high 0.1"):
        DifficultyConfig(verifier={"type": "math_answer"}, low=0.9, high=0.1)
    with pytest.raises(RuntimeError, match="apply_async"):
        asyncio.run(_apply_inside_a_loop(config))


async def _apply_inside_a_loop(config: DifficultyConfig) -> None:
    config.build(BuildContext()).apply([rec("q", "How many?", "4")])
