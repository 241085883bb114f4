"""Self-consistency: majority vote per prompt over math answers and program values, on
hand-written candidates (exact vote counts) and on samples of a real model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from distillery.backends.base import GenerationRequest, SamplingParams
from distillery.backends.transformers_local import TransformersBackend
from distillery.records import add_verdict, new_record
from distillery.verify.answers import extract_answer
from distillery.verify.consistency import SelfConsistency, SelfConsistencyConfig
from distillery.verify.math_answer import answers_equal
from tests.helpers import GSM8K_TEST, read_jsonl


def cand(seed_id: str, k: int, response: str | None) -> dict:
    return new_record(id=f"{seed_id}#{k}", seed_id=seed_id, sample_index=k, response=response,
                      prompt=[{"role": "user", "content": f"question {seed_id}"}])


def detail(record: dict) -> dict:
    return json.loads(record["verdicts"][-1]["detail"])


def run(stage: SelfConsistency, records: list[dict]) -> list[dict]:
    stage.prepare(records)
    return stage.apply(records)


def test_majority_class_with_m_votes_passes_and_every_other_reason():
    s1 = [cand("s1", 0, "48 + 24 = 72\n#### 72"), cand("s1", 1, "The answer is 72.0"),
          cand("s1", 2, "so \\boxed{72}"), cand("s1", 3, "#### 41")]
    s2 = [cand("s2", 0, "#### 10"), cand("s2", 1, "#### 10"), cand("s2", 2, "#### 12"), cand("s2", 3, "#### 12")]
    s3 = [cand("s3", 0, "#### 5"), cand("s3", 1, "I am not sure."), cand("s3", 2, "#### 6")]
    stage = SelfConsistency(SelfConsistencyConfig(m=3))
    kept = run(stage, s1 + s2 + s3)
    assert [r["id"] for r in kept] == ["s1#0", "s1#1", "s1#2"]
    d = detail(s1[0])
    assert d["votes"] == [["72", 3], ["41", 1]] and d["k"] == 4 and d["m"] == 3 and d["majority"] == "72"
    assert s1[3]["reject_reason"] == "inconsistent: answer 41 has 1 of 4 votes, majority 72 has 3"
    assert s2[0]["reject_reason"] == "inconsistent: answer 10 ties with 12 for the most votes (2 of 4)"
    assert s2[2]["reject_reason"] == "inconsistent: answer 12 ties with 10 for the most votes (2 of 4)"
    assert detail(s2[0])["majority"] is None
    assert s3[1]["reject_reason"] == "no_answer: no final answer found"
    assert s3[0]["reject_reason"] == "inconsistent: answer 5 ties with 6 for the most votes (1 of 3)"
    s4 = [cand("s4", k, f"#### {a}") for k, a in enumerate([5, 5, 6, 6, 7])]
    run(stage, s4)
    assert s4[4]["reject_reason"] == "inconsistent: answer 7 has 1 of 5 votes < 2 of the tied leaders"
    assert stage.stats.reasons == {"inconsistent": 12, "no_answer": 1}
    # the majority itself below m
    strict = SelfConsistency(SelfConsistencyConfig(m=4))
    again = [cand("s1", k, r["response"]) for k, r in enumerate(s1)]
    assert run(strict, again) == []
    assert again[0]["reject_reason"] == "inconsistent: answer 72 has 3 of 4 votes < m=4"


def test_symbolic_equivalence_classes():
    group = [cand("s", 0, "\\boxed{\\frac{1}{2}}"), cand("s", 1, "\\boxed{0.5}"), cand("s", 2, "\\boxed{1/2}"),
             cand("s", 3, "\\boxed{\\sqrt{2}}")]
    kept = run(SelfConsistency(SelfConsistencyConfig(m=2)), group)
    assert [r["id"] for r in kept] == ["s#0", "s#1", "s#2"]
    assert detail(group[0])["votes"] == [["\\frac{1}{2}", 3], ["\\sqrt{2}", 1]]


def test_votes_from_all_candidates_or_only_accepted_ones():
    group = [cand("s", k, f"#### {a}") for k, a in enumerate([7, 7, 9, 9, 9])]
    for r in group[2:4]:
        add_verdict(r, "filter", "length", False, {"reason": "too_long: 900 > 500 tokens"})
    failed = cand("s", 5, None)  # a failed generation: no sample, no vote
    stage = SelfConsistency(SelfConsistencyConfig(m=2))
    kept = run(stage, group + [failed])
    assert [r["id"] for r in kept] == ["s#4"]  # rejected candidates 2 and 3 still voted for 9
    assert failed["reject_reason"].startswith("no_answer: the candidate did not vote")
    assert detail(group[0])["votes"] == [["9", 3], ["7", 2]] and detail(group[0])["k"] == 5
    assert group[0]["reject_reason"] == "inconsistent: answer 7 has 2 of 5 votes, majority 9 has 3"
    fresh = [cand("s", k, f"#### {a}") for k, a in enumerate([7, 7, 9, 9, 9])]
    for r in fresh[2:4]:
        add_verdict(r, "filter", "length", False, {"reason": "too_long: 900 > 500 tokens"})
    accepted_only = SelfConsistency(SelfConsistencyConfig(m=2, votes_from="accepted"))
    kept = run(accepted_only, fresh)
    assert [r["id"] for r in kept] == ["s#0", "s#1"] and detail(fresh[0])["votes"] == [["7", 2], ["9", 1]]


def test_without_prepare_votes_among_the_records_given():
    group = [cand("s", k, f"#### {a}") for k, a in enumerate([3, 3, 4])]
    kept = SelfConsistency(SelfConsistencyConfig(m=2)).apply(group)
    assert [r["id"] for r in kept] == ["s#0", "s#1"]


def test_program_extractor_runs_the_programs_in_the_sandbox():
    def program(body: str) -> str:
        return f"Here is my program.\n```python\ndef solution():\n{body}\n```"

    group = [
        cand("p", 0, program("    return 48 + 48 // 2")),
        cand("p", 1, program("    return 144 / 2")),  # 72.0 matches 72
        cand("p", 2, program("    clips = [48, 24]\n    return sum(clips)")),
        cand("p", 3, program("    return 48 * 2")),
        cand("p", 4, program("    raise ValueError('no idea')")),
        cand("p", 5, "I would need a calculator."),
        cand("p", 6, "```python\nprint(72)\n```"),
    ]
    stage = SelfConsistency(SelfConsistencyConfig(extractor="program", m=3, timeout_s=5))
    try:
        kept = run(stage, group)
    finally:
        stage.close()
    assert [r["id"] for r in kept] == ["p#0", "p#1", "p#2"]
    assert detail(group[0])["votes"] == [["72", 3], ["96", 1]] and detail(group[0])["k"] == 7
    assert group[3]["reject_reason"] == "inconsistent: answer 96 has 1 of 7 votes, majority 72 has 3"
    assert group[4]["reject_reason"].startswith("no_answer: program error: ValueError: no idea")
    assert group[5]["reject_reason"].startswith("no_answer: program syntax_error: ")  # prose run as a program
    assert group[6]["reject_reason"] == "no_answer: no program: 1 code block(s), none defines solution()"


async def sample(model: Path, questions: list[str], k: int) -> list[dict]:
    backend = TransformersBackend(str(model), device="cpu", batch_size=16)
    sampling = SamplingParams(temperature=1.0, max_tokens=32, seed=0)
    plan = [(q, i) for q in range(len(questions)) for i in range(k)]
    requests = [GenerationRequest.make([{"role": "user", "content": questions[q]}], sampling, i) for q, i in plan]
    out: list[dict] = [{}] * len(plan)
    async for j, result in backend.stream(requests):
        q, i = plan[j]
        out[j] = cand(f"q{q}", i, result.text)
    await backend.aclose()
    return out


def test_majority_logic_on_samples_of_a_real_model(tiny_gsm8k_model: Path):
    questions = [r["question"] for r in read_jsonl(GSM8K_TEST, 3)]
    records = asyncio.run(sample(tiny_gsm8k_model, questions, 4))
    stage = SelfConsistency(SelfConsistencyConfig(m=2))
    run(stage, records)
    for q in range(len(questions)):
        group = [r for r in records if r["seed_id"] == f"q{q}"]
        answers = [extract_answer(r["response"])[0] for r in group]
        classes: list[list] = []  # [representative, members]
        for k, a in enumerate(answers):
            if a is None:
                continue
            home = next((c for c in classes if answers_equal(c[0], a)), None)
            if home is None:
                classes.append([a, [k]])
            else:
                home[1].append(k)
        top = max((len(c[1]) for c in classes), default=0)
        leaders = [c for c in classes if len(c[1]) == top]
        winners = set(leaders[0][1]) if len(leaders) == 1 and top >= 2 else set()
        for k, record in enumerate(group):
            assert record["accepted"] == (k in winners), (record["response"], answers)
            assert detail(record)["k"] == 4
        assert sorted(c for _, c in detail(group[0])["votes"]) == sorted(len(c[1]) for c in classes)
