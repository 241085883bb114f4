"""The filter stack end to end through `Pipeline`: a generate-mode recipe (teacher: the tiny
GSM8K model in-process) with language, perplexity, judge, difficulty and self-consistency."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from distillery.pipeline.runner import Pipeline
from distillery.recipe import Recipe
from tests.fault_server import FaultServer
from tests.helpers import GSM8K_TEST


def grader(n: int, body: dict):
    """A rubric judge with a fixed, checkable rule: 8 for responses of even length, else 3."""
    text = body["messages"][-1]["content"]
    response = text.split("[Response]\n", 1)[1].rsplit("\n\nFirst explain", 1)[0]
    return ("ok", f"Score: [[{8 if len(response) % 2 == 0 else 3}]]")


def recipe(model: Path, server: FaultServer, out: Path) -> Recipe:
    tiny = {"backend": "transformers", "model": str(model), "device": "cpu"}
    return Recipe.from_dict({
        "name": "stack",
        "seeds": {"path": str(GSM8K_TEST), "limit": 3},
        "prompt": {"template": "{{ question }}"},
        "teacher": {**tiny, "sampling": {"temperature": 1.0, "max_tokens": 40, "seed": 0, "stop": ["\n"]}},
        "generation": {"samples_per_prompt": 3},
        "verifiers": [
            {"type": "self_consistency", "m": 2},
            {"type": "judge", "threshold": 5,
             "model": {"backend": "openai", "model": server.model, "base_url": server.base_url, "max_retries": 0}},
        ],
        "filters": [
            {"type": "difficulty", "n": 2, "low": 0.0, "high": 0.5, "verifier": {"type": "math_answer"},
             "model": {**tiny, "sampling": {"temperature": 1.0, "max_tokens": 32}}},
            {"type": "perplexity", "model": str(model), "max_perplexity": 1e9},
            {"type": "language", "languages": ["en"], "min_confidence": 0.0},
        ],
        "output": {"dir": str(out), "batch_size": 3},
        "report": {"embedding_model": None},
    })


def test_recipe_with_the_whole_filter_stack(tiny_gsm8k_model: Path, tmp_path: Path):
    server = FaultServer(grader)
    try:
        out = tmp_path / "run"
        report = Pipeline(recipe(tiny_gsm8k_model, server, out), progress=False).run()
        stages = [row["stage"] for row in report["funnel"]]
        # cheap stages first inside the sampling loop; the prompt-scoped vote after sampling
        assert stages == ["seeds", "generate", "language", "perplexity", "judge", "difficulty", "self_consistency"]
        for before, after in zip(report["funnel"][1:], report["funnel"][2:], strict=False):
            assert after["in"] == before["out"]
        assert report["candidates"] == 9
        records = pq.read_table(out / "accepted.parquet").to_pylist() + pq.read_table(out / "rejected.parquet").to_pylist()
        assert len(records) == 9
        by_stage = {s["name"]: s for s in report["stages"]}
        for r in records:
            names = [v["name"] for v in r["verdicts"]]
            if names != ["generate"]:  # a truncated generation stops there
                assert names == stages[2 : 2 + len(names)]  # in order, stopping at the first rejection
            if not r["accepted"]:
                assert r["reject_stage"] == names[-1] and r["reject_reason"]
            for v in r["verdicts"]:
                d = json.loads(v["detail"])
                if v["name"] == "judge":
                    assert d["score"] == (8.0 if len(r["response"]) % 2 == 0 else 3.0)
                    assert v["passed"] == (d["score"] >= 5)
                if v["name"] == "perplexity":
                    assert d["perplexity"] > 1 and d["tokens"] > 0
                if v["name"] == "difficulty":
                    assert d["n"] == 2 and v["passed"] == (d["pass_rate"] <= 0.5)
                if v["name"] == "self_consistency":
                    assert d["k"] == 3 and d["m"] == 2
        judged = by_stage["judge"]
        assert judged["in"] - judged["out"] == judged["reasons"].get("low_score", 0)
        assert server.requests == judged["in"]
        assert (out / "judge-cache").is_dir() and (out / "difficulty-cache").is_dir()
        # a fresh re-run answers every judge and student request from the caches
        served = server.requests
        again = Pipeline(recipe(tiny_gsm8k_model, server, out), fresh=True, progress=False).run()
        assert server.requests == served
        assert again["funnel"] == report["funnel"] and again["accepted"] == report["accepted"]
    finally:
        server.close()
