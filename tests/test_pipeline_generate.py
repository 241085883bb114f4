"""The GSM8K recipe against a real OpenAI-compatible server (`transformers serve` with a
tiny model built by the tests), the in-process transformers backend, re-runs from the
cache, and SIGKILL-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distillery.backends.cache import ResponseCache
from distillery.pipeline.runner import Pipeline
from distillery.recipe import Recipe
from distillery.records import RECORD_FIELDS
from tests.helpers import REPO, VENV_BIN

GSM8K_RECIPE = REPO / "recipes" / "gsm8k.yaml"


def server_overrides(server, out: Path, **extra) -> dict:
    return {
        "teacher.base_url": server.base_url,
        "teacher.model": server.model,
        "teacher.concurrency": 4,
        "teacher.sampling.max_tokens": 64,
        "seeds.limit": 12,
        "generation.samples_per_prompt": 2,
        "output.dir": str(out),
        "output.batch_size": 4,
        "report.embedding_model": None,
        **extra,
    }


def check_records(table, teacher: str, backend: str) -> None:
    assert table.column_names == list(RECORD_FIELDS)
    for r in table.to_pylist():
        assert r["teacher"] == teacher and r["backend"] == backend
        assert r["prompt"][0]["role"] == "system" and r["prompt"][-1]["content"] == r["seed"]["question"]
        assert r["messages"] == r["prompt"] + r["completion"]
        assert r["completion"] == ([] if r["response"] is None else [{"role": "assistant", "content": r["response"]}])
        assert r["strategy"] == "rejection_sampling" and r["steps"] == []
        assert json.loads(r["sampling"])["temperature"] == 0.8
        assert len(r["prompt_template_hash"]) == 16 and r["sample_index"] in (0, 1)
        assert r["verdicts"] and r["distillery_version"] and r["created_at"]
        if r["response"] is not None:
            assert r["tokens_in"] > 0 and r["latency_s"] > 0 and r["finish_reason"] in ("stop", "length")
        if not r["accepted"]:
            assert r["reject_stage"] and r["reject_reason"]


def test_gsm8k_recipe_against_a_real_local_server(gsm8k_server, tmp_path: Path):
    out = tmp_path / "gsm8k"
    recipe = Recipe.from_yaml(GSM8K_RECIPE, server_overrides(gsm8k_server, out))
    served_before = gsm8k_server.completions_served()
    report = Pipeline(recipe, progress=False).run()
    served = gsm8k_server.completions_served() - served_before
    # adaptive best-of-2: one or two samples per prompt
    assert 12 <= report["candidates"] <= 24
    # every candidate was one request, plus one preflight request (this server lists no models)
    assert report["cache"]["backend_calls"] == report["candidates"] == served  # the server lists the model: the preflight sends no completion
    funnel = [row["stage"] for row in report["funnel"]]
    assert funnel[:2] == ["seeds", "generate"] and "math_answer" in funnel
    assert report["tokens"]["out"] > 0 and report["throughput"]["requests_per_s"] > 0
    accepted, rejected = pq.read_table(out / "accepted.parquet"), pq.read_table(out / "rejected.parquet")
    assert accepted.num_rows + rejected.num_rows == report["candidates"]
    check_records(rejected, gsm8k_server.model, "openai")
    check_records(accepted, gsm8k_server.model, "openai")
    reasons = {r["reject_reason"].split(":")[0] for r in rejected.to_pylist()}
    assert reasons <= {"truncated", "empty_response", "no_answer", "wrong_answer", "too_short", "too_long", "repetitive",
                       "exact_duplicate", "near_duplicate", "contaminated"}

    # the same recipe again, from scratch but with the cache kept: zero backend calls
    again = Pipeline(recipe, progress=False, fresh=True).run()
    assert gsm8k_server.completions_served() - served_before == served
    assert again["cache"]["backend_calls"] == 0 and again["cache"]["hits"] == report["candidates"]
    assert again["funnel"] == report["funnel"]


def test_transformers_backend_same_records(tiny_gsm8k_model: Path, tmp_path: Path):
    out = tmp_path / "local"
    recipe = Recipe.from_yaml(
        GSM8K_RECIPE,
        {
            "teacher.backend": "transformers",
            "teacher.model": str(tiny_gsm8k_model),
            "teacher.batch_size": 8,
            "teacher.sampling.max_tokens": 64,
            "seeds.limit": 8,
            "generation.samples_per_prompt": 2,
            "generation.accept_per_prompt": None,
            "output.dir": str(out),
            "report.embedding_model": None,
        },
    )
    report = Pipeline(recipe, progress=False).run()
    assert report["candidates"] == 16 and report["cache"]["backend_calls"] == 16
    table = pa.concat_tables([pq.read_table(out / "accepted.parquet"), pq.read_table(out / "rejected.parquet")])
    check_records(table, str(tiny_gsm8k_model), "transformers")
    again = Pipeline(recipe, progress=False, fresh=True).run()
    assert again["cache"]["backend_calls"] == 0


def test_sigkill_mid_run_then_resume_loses_and_repeats_nothing(gsm8k_server, tmp_path: Path):
    out = tmp_path / "killed"
    recipe_path = tmp_path / "r.yaml"
    recipe = Recipe.from_yaml(
        GSM8K_RECIPE,
        server_overrides(
            gsm8k_server, out, **{"seeds.limit": 20, "output.batch_size": 2, "teacher.concurrency": 2,
                                  "generation.accept_per_prompt": None}
        ),
    )
    text = recipe.to_yaml().replace("../data/gsm8k/train.jsonl.gz", str(REPO / "data/gsm8k/train.jsonl.gz"))
    recipe_path.write_text(text)
    cmd = [str(VENV_BIN / "distillery"), "run", str(recipe_path), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    deadline = time.time() + 300
    shards = out / "shards"
    while time.time() < deadline:  # kill once some batches are done and others are under way
        if shards.exists() and len(list(shards.glob("batch-*.json"))) >= 3:
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "accepted.parquet").exists()
    cached_before = len(ResponseCache(out / "cache"))
    markers_before = len(list(shards.glob("batch-*.json")))
    assert markers_before < 10 and cached_before < 40

    resumed = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    # every candidate exactly once: 20 seeds x 2 samples
    ids = pq.read_table(out / "accepted.parquet").column("id").to_pylist() + pq.read_table(
        out / "rejected.parquet"
    ).column("id").to_pylist()
    expected = {f"{row}#{k}" for row in {i.split("#")[0] for i in ids} for k in (0, 1)}
    assert len(ids) == 40 and len(set(ids)) == 40 and set(ids) == expected
    assert report["candidates"] == 40 and report["batches"] == 10
    # the resumed session called the backend only for responses not received before the kill
    assert len(ResponseCache(out / "cache")) == 40
    assert report["cache"]["session_backend_calls"] == 40 - cached_before


def test_empty_and_truncated_responses_are_recorded_rejections(tmp_path: Path):
    from tests.fault_server import FaultServer

    fates = iter([("empty", None), ("length", "2 + 2 = "), ("ok", "2+2=4\n#### 4"), ("ok", "#### 5")])
    server = FaultServer(lambda n, body: next(fates))
    try:
        seeds = tmp_path / "s.jsonl"
        seeds.write_text("".join(json.dumps({"id": f"s{i}", "question": f"q{i}", "answer": "#### 4"}) + "\n" for i in range(4)))
        recipe = Recipe.from_dict({
            "seeds": {"path": str(seeds)},
            "teacher": {"model": server.model, "base_url": server.base_url, "concurrency": 1, "max_retries": 0},
            "verifiers": [{"type": "math_answer"}],
            "output": {"dir": str(tmp_path / "run")},
            "report": {"embedding_model": None},
        })
        report = Pipeline(recipe, progress=False).run()
        rejected = {r["id"]: r for r in pq.read_table(tmp_path / "run" / "rejected.parquet").to_pylist()}
        assert rejected["s0#0"]["reject_reason"].startswith("empty_response")
        assert rejected["s1#0"]["reject_reason"] == "truncated: cut off at max_tokens=512"
        assert rejected["s1#0"]["response"] == "2 + 2 = "  # the text is kept
        assert rejected["s3#0"]["reject_reason"] == "wrong_answer: 5 != 4"
        assert report["accepted"] == 1 and report["failures"] == {"empty_response": 1, "truncated": 1}
    finally:
        server.close()
