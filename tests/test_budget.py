"""The hard budget (``budget:``): a run stops before a call would exceed it, checkpoints, says
so and exits non-zero; a re-run with a larger budget continues and ends with the same data as
a run that never stopped. Against the real `transformers serve` (requests counted by the
proxy in front of it) and through the CLI; the token limit against the replay teacher, whose
token counts are exact (a fake of a model's outputs only)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distillery.pipeline.budget import BudgetExhausted, spent_in, total
from distillery.pipeline.runner import Pipeline
from distillery.recipe import Recipe
from tests.helpers import REPO, run_cli
from tests.replay_server import ReplayTeacher
from tests.test_pipeline_generate import GSM8K_RECIPE, server_overrides


def _rows(out: Path) -> list[tuple]:
    rows = pq.read_table(out / "accepted.parquet").to_pylist() + pq.read_table(out / "rejected.parquet").to_pylist()
    return sorted((r["id"], r["response"], r["accepted"]) for r in rows)


def test_max_requests_stops_then_a_larger_budget_continues(gsm8k_server, tmp_path: Path):
    out = tmp_path / "budgeted"
    overrides = server_overrides(gsm8k_server, out, **{
        "generation.accept_per_prompt": None, "output.batch_size": 2, "seeds.limit": 8, "teacher.concurrency": 2,
    })
    served = gsm8k_server.completions_served()
    recipe = Recipe.from_yaml(GSM8K_RECIPE, {**overrides, "budget.max_requests": 7})
    with pytest.raises(BudgetExhausted) as stop:
        Pipeline(recipe, progress=False).run()
    first = gsm8k_server.completions_served() - served
    # 2 seeds x 2 samples = 4 requests a batch: batch 0 is sent whole, 3 of batch 1's fit, its 4th is not sent
    assert first == 7
    assert "budget.max_requests = 7" in str(stop.value) and "run the same command again" in str(stop.value)
    markers = sorted((out / "shards").glob("batch-*.json"))
    assert [m.name for m in markers] == ["batch-000000.json"]  # batch 1 waits; later ones were not started
    assert not (out / "accepted.parquet").exists()
    assert total(spent_in(out / "budget")).requests == first

    # a larger budget: the run goes on from the checkpoint and pays only for what is left
    recipe = Recipe.from_yaml(GSM8K_RECIPE, {**overrides, "budget.max_requests": 100})
    report = Pipeline(recipe, progress=False).run()
    assert gsm8k_server.completions_served() - served == 16  # 8 seeds x 2 samples: nothing was paid twice
    assert total(spent_in(out / "budget")).requests == 16
    assert report["model_calls"]["teacher"]["requests"] == 16

    # the same data as a run that never stopped
    plain = tmp_path / "plain"
    Pipeline(Recipe.from_yaml(GSM8K_RECIPE, {**server_overrides(gsm8k_server, plain, **{
        "generation.accept_per_prompt": None, "output.batch_size": 2, "seeds.limit": 8}),
        "output.cache": str(out / "cache")}), progress=False).run()
    assert _rows(plain) == _rows(out)


def test_budget_stop_through_the_cli_exits_non_zero_with_a_clear_message(gsm8k_server, tmp_path: Path):
    out = tmp_path / "cli"
    recipe = Recipe.from_yaml(GSM8K_RECIPE, server_overrides(gsm8k_server, out, **{"seeds.limit": 4, "output.batch_size": 2}))
    path = tmp_path / "r.yaml"
    path.write_text(recipe.to_yaml().replace("../data/gsm8k/train.jsonl.gz", str(REPO / "data/gsm8k/train.jsonl.gz")))
    done = run_cli("run", str(path), "--no-progress", "--set", "budget.max_requests=1")
    assert done.returncode == 1
    assert "budget reached" in done.stderr and "Traceback" not in done.stderr
    again = run_cli("run", str(path), "--no-progress", "--set", "budget.max_requests=1000")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((out / "report.json").read_text())["seeds"] == 4


def test_max_tokens_and_max_cost_are_never_exceeded(tmp_path: Path):
    """Replay teacher (fixed answers with exact word-count usage): the budget's worst-case
    reservation keeps the tokens and the cost actually spent under the limits."""
    answer = "Natalia sold 48 clips in April and half as many in May, 72 in all.\n#### 72"
    with ReplayTeacher([(".", answer)]) as teacher:
        for key, value in (("budget.max_tokens", 400), ("budget.max_cost", 0.0004)):
            out = tmp_path / key
            recipe = Recipe.from_yaml(GSM8K_RECIPE, {
                "teacher.base_url": teacher.base_url, "teacher.model": teacher.model,
                "teacher.sampling.max_tokens": 40, "seeds.limit": 12, "output.batch_size": 2,
                "generation.samples_per_prompt": 1, "output.dir": str(out), "report.embedding_model": None,
                "pricing.input_per_million": 1.0, "pricing.output_per_million": 1.0, key: value,
            })
            with pytest.raises(BudgetExhausted) as stop:
                Pipeline(recipe, progress=False).run()
            spent = total(spent_in(out / "budget"))
            assert 0 < spent.requests < 12
            assert spent.tokens <= 400 and spent.cost <= 0.0004 + 1e-12
            # what calls in flight reserved but did not use is spent on more calls: the run stops only
            # when the next call's worst case (prompt + max_tokens 40) does not fit in what is left
            refused = float(re.search(r"the next call \(up to ([0-9.e-]+)\)", str(stop.value)).group(1))
            used = spent.tokens if key == "budget.max_tokens" else spent.cost
            assert used + refused > value, (spent, refused)
            teacher.log.clear()
