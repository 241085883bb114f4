"""``distillery plan``: a pilot through the real backend estimates the run, its responses are
reused by the run that follows, and model-calling stages are estimated apart from generation.

The embedded default (the in-process built-in teacher on ``builtin:arith``) is real end to
end; the judge stage's model is the replay teacher (a real HTTP server replaying a capable
judge's answers — no capable judge runs here)."""

from __future__ import annotations

import json
from pathlib import Path

from distillery.pipeline.estimate import estimate, format_plan
from distillery.pipeline.runner import Pipeline
from distillery.recipe import Recipe
from tests.helpers import REPO, run_cli
from tests.replay_server import ReplayTeacher
from tests.test_pipeline_generate import GSM8K_RECIPE

ARITH = REPO / "recipes" / "arith.yaml"


def test_plan_on_the_embedded_default_is_within_25_percent_of_the_run(tmp_path: Path):
    out = tmp_path / "arith"
    overrides = {"seeds.options": {"n": 60, "split": "train", "seed": 0}, "output.batch_size": 30,
                 "output.dir": str(out), "report.embedding_model": None}
    recipe = Recipe.from_yaml(ARITH, overrides)
    plan = estimate(recipe)
    assert plan["seeds"] == 60 and plan["batches"] == 2 and plan["pilot"]["seeds"] == 30
    assert plan["pilot"]["calls"] > 0
    assert not (out / "shards").exists() or not list((out / "shards").glob("batch-*"))  # the pilot wrote no results
    e = plan["estimate"]
    assert set(e["by_role"]) == {"teacher"} and e["wall_s"] > 0 and "python_program" in e["stages"]
    assert plan["favoured_strategy"]["strategy"]
    lines = "\n".join(format_plan(plan))
    assert "budget ratio" in lines and "teacher" in lines

    report = Pipeline(recipe, progress=False).run()
    assert report["cache"]["hits"] >= plan["pilot"]["calls"]  # the run reused every pilot response
    for key, real in (("tokens_in", report["tokens"]["in"]), ("tokens_out", report["tokens"]["out"]),
                      ("requests", report["candidates"])):
        assert abs(e[key] - real) <= 0.25 * real, (key, e[key], real)


def test_plan_estimates_a_judge_stage_apart_from_generation(tmp_path: Path):
    """Teacher and judge both the replay teacher (one server, answers keyed by prompt)."""
    rules = [
        (r"Rate the response", "Correct and clearly explained.\nScore: 8"),
        (r".", "She sold 48 in April and 24 in May, 72 in all.\n#### 72"),
    ]
    with ReplayTeacher(rules) as server:
        out = tmp_path / "judged"
        model = {"backend": "openai", "model": server.model, "base_url": server.base_url}
        recipe = Recipe.from_yaml(GSM8K_RECIPE, {
            "teacher.base_url": server.base_url, "teacher.model": server.model, "seeds.limit": 12,
            "output.batch_size": 4, "output.dir": str(out), "generation.samples_per_prompt": 1,
            "generation.accept_per_prompt": None, "report.embedding_model": None, "filters": [],
            "verifiers": [{"type": "judge", "model": model, "allow_self_judging": True,
                           "template": "Rate the response to {{ prompt }}:\n{{ response }}", "threshold": 5}],
            "pricing.input_per_million": 2.0, "pricing.output_per_million": 4.0, "budget.max_requests": 1000,
        })
        plan = estimate(recipe)
        roles = plan["estimate"]["by_role"]
        assert set(roles) == {"teacher", "judge"}
        assert roles["teacher"]["requests"] == 12 and roles["judge"]["requests"] == 12
        assert plan["estimate"]["cost"] > 0 and plan["query_budget"] == 1000
        assert abs(plan["budget_ratio"] - 1000 / 12) < 1e-9
        again = estimate(recipe)  # a second plan measures again (a pilot is always paid): the same figures
        assert again["estimate"]["by_role"] == roles
        served = len(server.log)
        report = Pipeline(recipe, progress=False).run()
        assert len(server.log) - served == 16  # the 4 pilot prompts and their 4 judgements came from the cache
        assert set(report["model_calls"]) == {"teacher", "judge"}
        assert report["cost"]["estimated"] > 0


def test_plan_through_the_cli(tmp_path: Path):
    done = run_cli("plan", str(ARITH), "--set", 'seeds.options={"n": 20, "split": "train", "seed": 0}',
                   "--set", "output.batch_size=10", "-o", str(tmp_path / "run"), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    plan = json.loads(done.stdout)
    assert plan["seeds"] == 20 and plan["pilot"]["seeds"] == 10 and plan["estimate"]["requests"] > 0
    bad = run_cli("plan", str(ARITH), "--set", "teacher.sampling.temprature=1")
    assert bad.returncode == 1 and "did you mean 'temperature'" in bad.stderr and "Traceback" not in bad.stderr
