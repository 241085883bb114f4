"""Honest progress, timings and re-runs: the bar moves with every candidate and shows its
figures; a finished recipe run again says so and recomputes nothing; a higher limit extends a
finished run; a changed recipe is refused naming the keys that differ; the report's times cover
the whole session; the funnel's ``generate`` row counts prompts in; a run that fails before any
batch finished leaves no run directory.

The teacher is a real local HTTP server (``tests/fault_server.py``) that answers at once and
counts the requests it served; the curate runs call no model."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from distillery.errors import BackendError, InputError, RecipeError
from distillery.pipeline.progress import RunProgress
from distillery.pipeline.runner import Pipeline
from distillery.recipe import Recipe
from tests.fault_server import FaultServer


@pytest.fixture
def server():
    s = FaultServer(lambda n, body: ("ok", f"#### {body['messages'][-1]['content'][1:]}"))
    yield s
    s.close()


def _seeds(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"id": f"s{i}", "question": f"q{i}", "answer": f"#### {i}"}) + "\n"
                            for i in range(n)))
    return path


def _generate(tmp_path: Path, server: FaultServer, n: int = 10, **seeds) -> dict:
    return {
        "seeds": {"path": str(_seeds(tmp_path, n)), **seeds},
        "teacher": {"model": server.model, "base_url": server.base_url, "concurrency": 4},
        "generation": {"samples_per_prompt": 2},
        "verifiers": [{"type": "math_answer"}],
        "dedup": [{"type": "exact"}],
        "output": {"dir": str(tmp_path / "run"), "batch_size": 4},
        "report": {"embedding_model": None},
    }


def _curate(tmp_path: Path, n: int = 8) -> dict:
    return {
        "seeds": {"path": str(_seeds(tmp_path, n)), "response_field": "answer"},
        "verifiers": [{"type": "math_answer"}],
        "filters": [{"type": "length", "min_chars": 1}],
        "output": {"dir": str(tmp_path / "run"), "batch_size": 3},
        "report": {"embedding_model": None},  # lexical diversity metrics only
    }


def _run(data: dict, progress: bool = False) -> tuple[dict, str]:
    out = io.StringIO()
    console = Console(file=out, width=1000)
    report = Pipeline(Recipe.from_dict(data), progress=progress, console=console).run()
    return report, out.getvalue()


def test_the_bar_moves_with_every_candidate_and_shows_rates_accept_rate_and_cost():
    bar = RunProgress(10, enabled=False, per_seed=2, prices=(1.0, 2.0, "USD"))
    seen = []
    for _ in range(4):  # four candidates of a batch still running: two seeds' worth
        bar.on_candidate({"tokens_in": 10, "tokens_out": 5, "cached": False})
        seen.append(bar.completed())
    assert seen == [0.5, 1.0, 1.5, 2.0]
    bar.on_candidate({"tokens_in": 10, "tokens_out": 5, "cached": True})  # a cache hit: no request, no cost
    assert (bar.requests, bar.tokens_in, bar.tokens_out, bar.candidates) == (4, 40, 20, 5)
    bar.on_batch(3, accepted=3, made=5)  # the batch ends: its real seed count replaces the estimate
    assert bar.completed() == 3.0 and bar.seeds_done == 3
    figures = bar.figures()
    assert "candidates 5" in figures and "accepted 3 (60%)" in figures
    assert "req/s" in figures and "tok/s" in figures and "cost 0.0001 USD" in figures
    for _ in range(40):  # a batch that gives far more than expected never completes the run by itself
        bar.on_candidate({"tokens_in": 1, "tokens_out": 1})
    assert 3.0 < bar.completed() < 10.0
    bar.on_batch(7, accepted=0, candidates=14)  # a batch finished in an earlier session
    assert bar.seeds_done == 10
    assert "cost" not in RunProgress(1, enabled=False).figures()  # no prices: no cost shown


def test_the_run_bar_ends_with_the_runs_figures(tmp_path: Path, server: FaultServer):
    report, text = _run(_generate(tmp_path, server, limit=10), progress=True)
    assert report["candidates"] == 20
    assert "10/10" in text and "candidates 20" in text and f"accepted {report['accepted']}" in text


def test_a_finished_recipe_run_again_says_so_and_recomputes_nothing(tmp_path: Path):
    data = _curate(tmp_path)
    first, _ = _run(data)
    run = tmp_path / "run"
    files = [run / "report.json", run / "README.md", run / "reduce.json", run / "accepted.parquet",
             *sorted((run / "shards").iterdir())]
    before = {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files}
    again, text = _run(data)
    assert "already finished" in text and "nothing to do" in text
    assert "accepted" in text and "funnel" in text  # the old run's figures, said to be those
    assert again == first
    assert {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files} == before  # no batch, reduce or diversity redone
    # a report section that changes the report (not the data) is recomputed, batches are not
    data["report"]["diversity_sample"] = 0
    third, text = _run(data)
    assert "already finished" not in text and third["diversity"] is None
    for shard in files[4:]:
        assert shard.stat().st_mtime_ns == before[shard][0]


def test_a_higher_limit_extends_a_finished_run(tmp_path: Path, server: FaultServer):
    first, _ = _run(_generate(tmp_path, server, limit=6))  # batches of 4 and 2 seeds
    assert first["seeds"] == 6 and server.requests == 12
    shards = tmp_path / "run" / "shards"
    whole = (shards / "batch-000000.json").read_bytes()
    second, text = _run(_generate(tmp_path, server, limit=10))  # no --fresh
    assert "seeds.limit 6 -> 10: keeping 1 finished batch(es), redoing 1 from the response cache" in " ".join(text.split())
    assert (shards / "batch-000000.json").read_bytes() == whole  # the whole batch is kept as it was
    assert second["seeds"] == 10 and second["candidates"] == 20 and second["batches"] == 3
    assert server.requests == 20 and second["cache"]["session_backend_calls"] == 8  # only the new seeds are asked
    # a lower limit keeps the batches inside it
    third, _ = _run(_generate(tmp_path, server, limit=4))
    assert third["seeds"] == 4 and third["batches"] == 1 and server.requests == 20


def test_a_changed_recipe_is_refused_naming_the_keys_that_differ(tmp_path: Path, server: FaultServer):
    _run(_generate(tmp_path, server, limit=4))
    changed = _generate(tmp_path, server, limit=8)
    changed["generation"]["samples_per_prompt"] = 3
    changed["prompt"] = {"system": "Answer briefly."}
    changed["teacher"]["concurrency"] = 2  # operational: not a difference
    with pytest.raises(RecipeError) as err:
        _run(changed)
    message = str(err.value)
    assert "these keys differ: generation.samples_per_prompt, prompt.system" in message
    assert "limit" not in message and "concurrency" not in message and "--fresh" in message


def test_times_cover_the_whole_session_and_the_funnel_counts_prompts_in(tmp_path: Path, server: FaultServer):
    report, text = _run(_generate(tmp_path, server, limit=10))
    phases = report["phases_s"]
    assert set(phases) == {"prepare", "batches", "reduce", "diversity"}
    assert report["session_wall_s"] >= sum(phases.values()) - 0.01
    assert report["run_time_s"] == report["session_wall_s"]  # one session
    assert report["session_wall_s"] >= report["wall_time_s"]
    assert f"time {report['run_time_s']:.1f}s (batches" in text
    card = (tmp_path / "run" / "README.md").read_text()
    assert f"processing time {report['run_time_s']:.1f}s" in card
    gen = next(row for row in report["funnel"] if row["stage"] == "generate")
    assert gen["in"] == report["prompts"] == 10 and gen["candidates"] == report["candidates"] == 20
    assert gen["out"] == next(row for row in report["funnel"] if row["stage"] == "math_answer")["in"]

    curated, _ = _run(_curate(tmp_path, 6) | {"output": {"dir": str(tmp_path / "curated"), "batch_size": 3}})
    stages = [row["stage"] for row in curated["funnel"]]
    assert "generate" not in stages and stages[0] == "seeds"
    for before, after in zip(curated["funnel"], curated["funnel"][1:], strict=False):
        assert after["in"] == before["out"]


def test_a_resumed_runs_time_includes_the_earlier_sessions_batches(tmp_path: Path, server: FaultServer):
    first, _ = _run(_generate(tmp_path, server, limit=8))
    (tmp_path / "run" / "report.json").unlink()  # as if the first session had stopped after its batches
    second, _ = _run(_generate(tmp_path, server, limit=8))
    assert second["cache"]["session_backend_calls"] == 0
    assert second["run_time_s"] >= second["session_wall_s"] + first["wall_time_s"] - 0.01


@pytest.mark.parametrize("case", ["unknown_model", "unreachable", "bad_template", "missing_field"])
def test_a_run_that_fails_before_any_batch_leaves_no_run_directory(tmp_path: Path, server: FaultServer, case: str):
    data = _generate(tmp_path, server, limit=4)
    expected: type[Exception] = BackendError
    if case == "unknown_model":
        data["teacher"]["model"] = "no-such-model"
    elif case == "unreachable":
        data["teacher"]["base_url"] = "http://127.0.0.1:9/v1"  # the discard port: nothing listens
        data["teacher"]["max_retries"] = 0
    elif case == "bad_template":
        data["prompt"] = {"template": "{{ question | no_such_filter }}"}
        expected = RecipeError
    else:
        data["prompt"] = {"template": "{{ no_such_field.x }}"}
        expected = InputError
    with pytest.raises(expected):
        _run(data)
    assert not (tmp_path / "run").exists()
