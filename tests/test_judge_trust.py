"""A judge you can trust: Cohen's kappa and agreement against hand-computed values, Markdown
normalisation, panels of judges (majority / mean / all), the self-judging refusal, calibration
against human verdicts (refusal below ``min_kappa``), and the judge's bias figures in
``report.json``.

Real: the pure functions; the stage, its HTTP client and cache, the pipeline and the report.
Scripted: the judges are ``FaultServer`` scripts (a real local HTTP server answering
hand-written verdicts: a grader that knows the right answer, a generous and a harsh one, one
fond of Markdown, an honest pairwise judge); the teacher of the pipeline runs is a
``ReplayTeacher`` (hand-written solutions).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillery.errors import RecipeError
from distillery.pipeline.stage import BuildContext, StageStats
from distillery.recipe import Recipe
from distillery.records import new_record
from distillery.verify.judge import JudgeConfig, JudgeStage
from distillery.verify.judge_parse import agreement, cohen_kappa, strip_markdown
from tests.fault_server import FaultServer
from tests.helpers import run_pipeline
from tests.replay_server import ReplayTeacher
from tests.test_judge import QUESTION, RIGHT, WRONG, answers_in

# -- pure functions ----------------------------------------------------------------------------


def test_kappa_and_agreement_by_hand():
    human = ["pass", "pass", "fail", "fail", "pass", "fail"]
    judge = ["pass", "pass", "fail", "pass", "fail", "fail"]
    # p_o = 4/6; each rater says pass 3/6 -> p_e = 0.25 + 0.25 = 0.5; kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert agreement(human, judge) == pytest.approx(4 / 6)
    assert cohen_kappa(human, judge) == pytest.approx(1 / 3)
    # three classes: p_o = 4/6; human a3 b2 tie1, judge a1 b3 tie2 -> p_e = (3 + 6 + 2) / 36; kappa = 13/25
    h3, j3 = list("aabbta"), list("abbbtt")
    assert cohen_kappa(h3, j3) == pytest.approx(0.52)
    assert cohen_kappa(human, human) == 1.0
    assert cohen_kappa(["pass", "fail"], ["fail", "pass"]) == pytest.approx(-1.0)
    assert cohen_kappa(["pass"] * 3, [None] * 3) == 0.0  # an unreadable verdict is a category of its own
    assert cohen_kappa(["pass"] * 3, ["pass"] * 3) is None  # undefined: one label throughout
    with pytest.raises(ValueError):
        cohen_kappa(["pass"], [])


def test_markdown_normalization():
    text = ("## The answer\n**In May** she sold *half*: 48/2 = 24.\n- April: 48\n* May: 24\n"
            "```python\nprint(48 + 24)\n```\n> see [notes](http://x.y)\n---\n`total` = 72, snake_case 2 * 3 * 4\n#### 72")
    assert strip_markdown(text) == ("The answer\nIn May she sold half: 48/2 = 24.\nApril: 48\nMay: 24\nprint(48 + 24)\n"
                                    "see notes\ntotal = 72, snake_case 2 * 3 * 4\n#### 72")
    assert strip_markdown(RIGHT) == RIGHT and strip_markdown(None) == ""


def test_stage_stats_summary_merges_and_reports_rates():
    a = StageStats("judge", "verify", summary={"counts": {"x": 1, "n": 2}, "ratios": {"r": ["x", "n"]}, "calibration": {"kappa": 0.5}})
    b = StageStats.from_dict(StageStats("judge", "verify", summary={"counts": {"x": 2, "n": 2}, "ratios": {"r": ["x", "n"]},
                                                                  "calibration": {"kappa": 0.5}}).to_dict())
    a.merge(b)
    d = a.to_dict()
    assert d["summary"]["counts"] == {"x": 3, "n": 4} and d["summary"]["rates"] == {"r": 0.75}
    assert d["summary"]["calibration"] == {"kappa": 0.5}  # not added up
    assert "summary" not in StageStats("x", "filter").to_dict()


# -- scripted judges ----------------------------------------------------------------------------

def scorer(rule):
    """A FaultServer script answering ``Score: [[n]]`` with ``n = rule(user text)``; ``bodies`` keeps the requests."""
    bodies: list[dict] = []

    def script(n: int, body: dict):
        bodies.append(body)
        value = rule(body["messages"][-1]["content"])
        return ("ok", "Unreadable judgement." if value is None else f"Assessment.\nScore: [[{value}]]")
    script.bodies = bodies  # type: ignore[attr-defined]
    return script


def grader(text: str):
    return 9 if "#### 72" in text else 2 if "#### 96" in text else None


def model(server: FaultServer) -> dict:
    return {"backend": "openai", "model": server.model, "base_url": server.base_url, "max_retries": 0}


def rec(rid: str, response: str) -> dict:
    return new_record(id=rid, seed_id=rid, response=response, seed={"answer": RIGHT},
                      prompt=[{"role": "user", "content": QUESTION}])


@pytest.fixture
def panel():
    servers = [FaultServer(scorer(grader), model="grader"), FaultServer(scorer(lambda t: 8), model="generous"),
               FaultServer(scorer(lambda t: 4), model="harsh")]
    yield servers
    for s in servers:
        s.close()


@pytest.mark.parametrize(("combine", "kept", "reasons"), [
    ("majority", ["right"], {"wrong": "outvoted: 1 of 3 judges passed it, a majority needed"}),
    ("all", [], {"right": "outvoted: 2 of 3 judges passed it, all needed",
                 "wrong": "outvoted: 1 of 3 judges passed it, all needed"}),
    ("mean", ["right"], {"wrong": "low_score: mean 4.67 < 7 over 3 judges"}),  # right: (9 + 8 + 4) / 3 = 7
])
def test_panel_of_judges(panel, combine: str, kept: list[str], reasons: dict):
    stage = JudgeConfig(judges=[model(s) for s in panel], combine=combine, threshold=7).build(BuildContext())
    records = [rec("right", RIGHT), rec("wrong", WRONG)]
    assert [r["id"] for r in stage.apply(records)] == kept
    assert {r["id"]: r["reject_reason"] for r in records if not r["accepted"]} == reasons
    d = json.loads(records[0]["verdicts"][-1]["detail"])
    assert [(j["model"], j["score"], j["passed"]) for j in d["judges"]] == [("grader", 9, True), ("generous", 8, True),
                                                                          ("harsh", 4, False)]
    assert d["combine"] == combine and d["passed_judges"] == 2
    assert all(len(s.log) == 2 for s in panel)  # each judge saw each record once
    assert stage.stats.summary["counts"]["calls"] == 6 and stage.stats.summary["judges"] == ["grader", "generous", "harsh"]


def test_panel_unreadable_reply_is_never_a_pass(panel):
    stage = JudgeConfig(judges=[model(s) for s in panel], combine="mean", threshold=1).build(BuildContext())
    records = [rec("mumble", "MUMBLE")]  # the grader cannot score it; the others can
    assert stage.apply(records) == [] and records[0]["reject_reason"].startswith("judge_unparseable:")
    with pytest.raises(RecipeError, match=r"set model \(one judge\) or judges \(a panel\), not both"):
        Recipe.from_dict({"seeds": {"path": "x"}, "verifiers": [{"type": "judge", "model": model(panel[0]),
                                                                "judges": [model(panel[1])]}]})


def test_format_normalization_removes_what_a_markdown_fond_judge_rewards():
    fond = scorer(lambda t: 9 if ("**" in t or "\n- " in t) else 5)
    server = FaultServer(fond, model="fond")
    fancy = "## Solution\n**In May:** 48/2 = 24 clips.\n- Altogether: **48 + 24 = 72**\n#### 72"
    try:
        plain = JudgeConfig(model=model(server), threshold=7).build(BuildContext())
        assert len(plain.apply([rec("fancy", fancy)])) == 1  # formatting bought the score
        normal = JudgeConfig(model=model(server), threshold=7, normalize_format=True).build(BuildContext())
        records = [rec("fancy", fancy)]
        assert normal.apply(records) == [] and records[0]["reject_reason"] == "low_score: 5 < 7"
        seen = fond.bodies[-1]["messages"][-1]["content"]
        assert "Solution\nIn May: 48/2 = 24 clips.\nAltogether: 48 + 24 = 72\n#### 72" in seen and "**" not in seen
        assert normal.stats.summary["normalize_format"] is True
    finally:
        server.close()


def test_self_judging_is_refused_unless_allowed():
    teacher = {"model": "Qwen/Qwen2.5-7B-Instruct", "base_url": "http://127.0.0.1:8000/v1"}
    base = {"seeds": {"path": "x"}, "teacher": teacher}

    def recipe(judge: dict, **extra) -> Recipe:
        return Recipe.model_validate({**base, "verifiers": [{"type": "judge", "model": judge, **extra}]})

    def check_self_judging(r: Recipe) -> list[str]:
        return r.verifiers[0].check_recipe(r, "verifiers.0")

    with pytest.raises(RecipeError) as e:  # when the recipe is validated
        Recipe.from_dict({**base, "verifiers": [{"type": "judge", "model": {**teacher, "base_url": "http://127.0.0.1:8000/v1/"}}]})
    assert "judge model 'Qwen/Qwen2.5-7B-Instruct'" in str(e.value) and "teacher model 'Qwen/Qwen2.5-7B-Instruct'" in str(e.value)
    assert "allow_self_judging: true" in str(e.value) and "verifiers.0 (judge)" in str(e.value)
    warnings = check_self_judging(recipe(teacher, allow_self_judging=True))
    assert len(warnings) == 1 and "self-preference" in warnings[0] and "may favour the teacher" in warnings[0]
    assert check_self_judging(recipe({**teacher, "model": "meta-llama/Llama-3.1-70B-Instruct"})) == []
    assert check_self_judging(recipe({**teacher, "base_url": "http://10.0.0.2:8000/v1"})) == []  # another server
    with pytest.raises(RecipeError, match="is the teacher"):
        Recipe.from_dict({**base, "verifiers": [{"type": "judge", "judges": [{"model": "other"}, teacher]}]})


# -- calibration ----------------------------------------------------------------------------

def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


RUBRIC_HUMANS = [  # the grader says: 72 -> 9 (pass), 96 -> 2 (fail), MUMBLE -> unreadable
    {"prompt": QUESTION, "response": RIGHT, "label": "pass"},            # agree
    {"prompt": QUESTION, "response": RIGHT.replace("Altogether", "In all"), "label": 8},  # agree (8 >= 7)
    {"prompt": QUESTION, "response": WRONG, "label": "fail"},            # agree
    {"prompt": QUESTION, "response": WRONG + " ", "label": 3},           # agree
    {"prompt": QUESTION, "response": "In all 72. #### 96", "label": "pass"},   # disagree (judge: fail)
    {"prompt": QUESTION, "response": "MUMBLE", "label": "fail"},         # disagree (judge: unreadable)
]
# human: pass pass fail fail pass fail; judge: pass pass fail fail fail None
# p_o = 4/6; p_e = P(pass) 3/6 * 2/6 + P(fail) 3/6 * 3/6 = 5/12; kappa = (2/3 - 5/12) / (7/12) = 3/7


def test_rubric_calibration_figures_and_refusal(tmp_path: Path):
    script = scorer(grader)
    server = FaultServer(script, model="grader")
    cal = write_jsonl(tmp_path / "humans.jsonl", RUBRIC_HUMANS)
    try:
        stage = JudgeConfig(model=model(server), calibration=str(cal), min_kappa=0.4).build(BuildContext(run_dir=tmp_path))
        assert isinstance(stage, JudgeStage) and stage.apply([rec("right", "So 72.\n#### 72")])
        figures = stage.summary()["calibration"]
        assert figures["items"] == 6 and figures["agreement"] == pytest.approx(0.6667, abs=1e-4)
        assert figures["kappa"] == pytest.approx(3 / 7, abs=1e-4) and figures["min_kappa"] == 0.4
        assert figures["labels"] == {"human": {"pass": 3, "fail": 3}, "judge": {"pass": 2, "fail": 3, "None": 1}}
        assert stage.stats.summary["calibration"] == figures
        assert len(script.bodies) == 7  # six calibration verdicts, once, then the record
        stage.apply([rec("wrong", "So 96.\n#### 96")])
        assert len(script.bodies) == 8  # calibration is not repeated

        strict = JudgeConfig(model=model(server), calibration=str(cal), min_kappa=0.5).build(BuildContext(run_dir=tmp_path))
        with pytest.raises(RecipeError) as e:
            strict.apply([rec("right", RIGHT)])
        assert "kappa with the human verdicts" in str(e.value) and "0.429 < min_kappa 0.5" in str(e.value)
        assert "agreement 0.667 on 6 items" in str(e.value)
        assert len(script.bodies) == 8  # same judge, same cache folder: the calibration verdicts were cached
    finally:
        server.close()
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "label": "pass"}])
    with pytest.raises(RecipeError, match="line 1: missing response"):
        JudgeConfig(model={"model": "m"}, calibration=str(bad)).build(BuildContext())
    with pytest.raises(RecipeError, match="min_kappa needs a calibration"):
        Recipe.from_dict({"seeds": {"path": "x"}, "verifiers": [{"type": "judge", "model": {"model": "m"}, "min_kappa": 0.5}]})


def honest(n: int, body: dict):
    """Prefers the answer ending in #### 72; a tie when both or neither do."""
    a, b = answers_in(body)
    good_a, good_b = a.endswith("#### 72"), b.endswith("#### 72")
    return ("ok", "[[C]]" if good_a == good_b else ("[[A]]" if good_a else "[[B]]"))


def test_pairwise_calibration(tmp_path: Path):
    rows = [{"prompt": QUESTION, "answer_a": RIGHT, "answer_b": WRONG, "label": "a"},
            {"prompt": QUESTION, "answer_a": WRONG, "answer_b": RIGHT, "label": "B"},
            {"prompt": QUESTION, "answer_a": RIGHT, "answer_b": "In all 72.\n#### 72", "label": "tie"},
            {"prompt": QUESTION, "answer_a": WRONG, "answer_b": "96 clips.\n#### 96", "label": "a"}]  # judge: tie
    server = FaultServer(honest, model="honest")
    try:
        stage = JudgeConfig(model=model(server), mode="pairwise", reference="answer",
                            calibration=str(write_jsonl(tmp_path / "pairs.jsonl", rows))).build(BuildContext())
        stage.apply([rec("right", RIGHT)])
        figures = stage.calibration
        # human a2 b1 tie1, judge a1 b1 tie2: p_o = 3/4, p_e = (2 + 1 + 2) / 16; kappa = (12/16 - 5/16) / (11/16) = 7/11
        assert figures["agreement"] == 0.75 and figures["kappa"] == pytest.approx(7 / 11, abs=1e-4)
        assert stage.summary()["pairwise"]["comparisons"] == 1  # calibration pairs are not the run's bias figures
    finally:
        server.close()


# -- the judge's figures in report.json ------------------------------------------------------------

def test_judge_summary_reaches_the_report(tmp_path: Path):
    """Real pipeline: a replayed teacher writes right and wrong solutions; a pairwise judge
    against the reference and a calibrated rubric judge; their bias and calibration figures
    are in report.json under stages[].summary."""
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"id": f"q{i}", "question": QUESTION + f" (case {i})", "answer": RIGHT}
                                                   for i in range(4)])
    pairwise = FaultServer(honest, model="pairwise-judge")
    rubric = FaultServer(scorer(grader), model="rubric-judge")
    with ReplayTeacher([(r"case [02]", RIGHT), (r"case 1", WRONG), (r"case 3", RIGHT + "\nLet me say it again: 72.\n#### 72")]) as teacher:
        try:
            out = tmp_path / "run"
            recipe = Recipe.from_dict({
                "seeds": {"path": str(seeds), "id_field": "id"},
                "prompt": {"template": "{{ question }}"},
                "teacher": {"model": teacher.model, "base_url": teacher.base_url, "sampling": {"max_tokens": 100, "seed": 0}},
                "verifiers": [
                    {"type": "judge", "name": "pairwise", "mode": "pairwise", "reference": "answer", "model": model(pairwise)},
                    {"type": "judge", "name": "rubric", "model": model(rubric), "min_kappa": 0.4,
                     "calibration": str(write_jsonl(tmp_path / "humans.jsonl", RUBRIC_HUMANS))},
                ],
                "stage_order": "recipe",
                "output": {"dir": str(out), "batch_size": 2},
                "report": {"embedding_model": None},
            })
            assert recipe.verifiers[1].check_recipe(recipe, "verifiers.1") == []
            report, accepted, rejected = run_pipeline(recipe, out)
        finally:
            pairwise.close()
            rubric.close()
    assert sorted(r["seed_id"] for r in accepted) == ["q0", "q2", "q3"]
    assert {r["seed_id"]: r["reject_reason"] for r in rejected} == {
        "q1": "lost_pairwise: win rate 0.00 < 0.5 (0 win, 0 tie, 1 loss vs the reference)"}
    stages = {s["name"]: s for s in json.loads((out / "report.json").read_text())["stages"]}
    assert report["stages"] == list(stages.values())
    summary = stages["pairwise"]["summary"]
    # 4 comparisons over 2 batches, all consistent; the only decisive ones are q1's (the reference, shown second
    # then first: one [[B]], one [[A]]), won by the longer answer; q0, q2 and q3 tie the reference. q0 and q2 are
    # the reference itself: both orders are one conversation, asked once (8 - 2 calls)
    assert summary["counts"]["pairwise_comparisons"] == 4 and summary["counts"]["calls"] == 6
    assert summary["rates"] == {"consistency_rate": 1.0, "first_position_rate": 0.5, "longer_wins_rate": 1.0}
    rub = stages["rubric"]["summary"]
    assert rub["counts"]["rubric_scored"] == 3 and rub["rates"] == {"mean_score": 9.0, "pass_rate": 1.0}
    assert rub["calibration"]["kappa"] == pytest.approx(3 / 7, abs=1e-4) and rub["calibration"]["items"] == 6
