"""Curate mode end to end on real GSM8K data, and the run directory it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from distillery.pipeline.runner import Pipeline
from distillery.recipe import Recipe
from distillery.records import RECORD_FIELDS
from tests.helpers import GSM8K_TRAIN, REPO


def curate_recipe(out: Path, embeddings: bool = False, **overrides) -> Recipe:
    settings = {"output.dir": str(out), **overrides}
    if not embeddings:  # the embedding-based diversity metrics cost seconds; one test measures them
        settings["report.embedding_model"] = None
    return Recipe.from_yaml(REPO / "recipes" / "gsm8k-curate.yaml", settings)


def test_gsm8k_curate_recipe_verifies_dedups_and_decontaminates(tmp_path: Path):
    out = tmp_path / "run"
    report = Pipeline(curate_recipe(out, embeddings=True), progress=False).run()
    n = sum(1 for _ in open(GSM8K_TRAIN))
    funnel = {row["stage"]: row for row in report["funnel"]}
    assert funnel["seeds"]["in"] == n and report["seeds"] == n
    verified = funnel["math_answer"]
    assert verified["out"] / verified["in"] >= 0.99
    # each stage's input is the previous stage's output
    for before, after in zip(report["funnel"], report["funnel"][1:], strict=False):
        assert after["in"] == before["out"]
    assert report["accepted"] == report["funnel"][-1]["out"]
    assert report["accepted"] + report["rejected"] == n
    accepted = pq.read_table(out / "accepted.parquet")
    rejected = pq.read_table(out / "rejected.parquet")
    assert accepted.num_rows == report["accepted"] and rejected.num_rows == report["rejected"]
    assert accepted.column_names == list(RECORD_FIELDS)
    rej = rejected.to_pylist()
    assert all(r["reject_stage"] and r["reject_reason"] and not r["accepted"] for r in rej)
    assert {r["reject_stage"] for r in rej} <= {"math_answer", "length", "exact", "minhash", "decontaminate"}
    ids = accepted.column("id").to_pylist() + rejected.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == n
    first = accepted.slice(0, 1).to_pylist()[0]
    assert first["seed"]["question"] and first["prompt"][-1]["content"] == first["seed"]["question"]
    assert "####" not in first["response"] and first["backend"] == "seed"
    # stages ran cheapest first (length, decontamination, verification), deduplication last
    assert [v["name"] for v in first["verdicts"]] == ["length", "decontaminate", "math_answer", "exact", "minhash"]
    assert [row["stage"] for row in report["funnel"]][1:] == ["length", "decontaminate", "math_answer", "exact", "minhash"]
    # run directory: resolved recipe, report, card
    assert yaml.safe_load((out / "recipe.yaml").read_text())["seeds"]["response_template"]
    assert json.loads((out / "report.json").read_text())["accepted"] == report["accepted"]
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "## Funnel" in card and "## Provenance" in card and "## Limitations" in card
    assert not list(out.glob(".*.tmp"))
    diversity = report["diversity"]
    assert diversity["accepted_responses"] == report["accepted"] and 0 < diversity["distinct_2"] <= 1
    assert diversity["embedding_sample"] == 200 and diversity["vendi_score"] > 1
    assert "## Diversity" in card
    assert diversity["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"  # its name, not "default"
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "other" and front["pretty_name"]


def test_rerunning_a_finished_run_rewrites_the_same_dataset(tmp_path: Path):
    out = tmp_path / "run"
    recipe = curate_recipe(out, **{"seeds.limit": 300, "output.batch_size": 64})
    first = Pipeline(recipe, progress=False).run()
    before = pq.read_table(out / "accepted.parquet").column("id").to_pylist()
    second = Pipeline(recipe, progress=False).run()
    assert pq.read_table(out / "accepted.parquet").column("id").to_pylist() == before
    assert first["funnel"] == second["funnel"]


def test_jsonl_output_on_request(tmp_path: Path):
    out = tmp_path / "run"
    report = Pipeline(curate_recipe(out, **{"seeds.limit": 50, "output.jsonl": True}), progress=False).run()
    lines = (out / "accepted.jsonl").read_text().splitlines()
    assert len(lines) == report["accepted"] and json.loads(lines[0])["id"]
