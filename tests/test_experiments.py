"""`distillery improve` and the experiments, in their quick configurations, on the shipped models.

These check the machinery (datasets built as specified, every figure present and consistent,
JSON and plot written); the full-size experiments' findings are in the README.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from distillery.experiments.registry import run_experiment
from distillery.train.improve import ImproveConfig, improve
from tests.helpers import run_cli


def test_improve_one_round_trains_on_verified_samples_only(tmp_path):
    cfg = ImproveConfig(rounds=1, problems=12, samples=2, steps=3, eval_problems=10, embedding_model=None,
                        mix_gold=0.5)
    result = improve(cfg, tmp_path)
    r0, r1 = result["rounds"]
    assert r0["round"] == 0 and r0["model"] == "builtin:student"
    assert 0.0 <= r0["accuracy"] <= 1.0 and 0.0 <= r1["accuracy"] <= 1.0
    accepted = pq.read_table(tmp_path / "round-1" / "samples" / "accepted.parquet").to_pylist()
    rejected = pq.read_table(tmp_path / "round-1" / "samples" / "rejected.parquet").to_pylist()
    # every kept example passed the sandboxed verifier; the candidates add up
    assert r1["examples"] == len(accepted)
    assert all(any(v["name"] == "python_program" and v["passed"] for v in r["verdicts"]) for r in accepted)
    assert len(accepted) + len(rejected) == 12 * 2
    assert r1["accept_rate"] == pytest.approx(len(accepted) / 24)
    assert r1["gold"] == round(0.5 * len(accepted))
    assert r1["tokens"]["sampled_out"] > 0
    if accepted:  # a model folder exists only when there was data to train on
        assert (tmp_path / "round-1" / "model" / "config.json").exists()
    saved = json.loads((tmp_path / "improve.json").read_text())
    assert [r["round"] for r in saved["rounds"]] == [0, 1]


def test_filter_lift_quick_builds_equal_datasets(tmp_path):
    result = run_experiment("filter-lift", tmp_path, quick=True)
    ds = result["datasets"]
    assert set(ds) == {"unfiltered", "verified", "gold"}
    assert ds["unfiltered"]["size"] == ds["verified"]["size"] == ds["gold"]["size"] == 20
    assert ds["verified"]["correct_fraction"] == 1.0
    assert ds["unfiltered"]["correct_fraction"] < 1.0  # the teacher is imperfect at temperature 0.8
    for d in ds.values():
        assert len(d["accuracy"]["values"]) == 2  # two seeds
    pool = result["pool"]
    # responses cut off by the token limit are rejected before the verifier and left out of the pool
    assert 0 < pool["verified"] < pool["candidates"] <= 40 * 2
    assert (tmp_path / "filter-lift.png").stat().st_size > 1000
    assert json.loads((tmp_path / "filter-lift.json").read_text())["lift"] == result["lift"]


def test_collapse_quick_has_both_arms(tmp_path):
    result = run_experiment("collapse", tmp_path, quick=True)
    for arm in ("replace", "mix"):
        rows = result["arms"][arm]
        assert [r["generation"] for r in rows] == [0, 1, 2]
        for r in rows:
            assert 0 < r["distinct_2"] <= 1 and r["token_entropy_bits"] > 0 and 0 < r["samples"] <= 8 * 2
    assert result["arms"]["mix"][1]["train_examples"] == result["arms"]["replace"][1]["train_examples"] + 16
    assert (tmp_path / "collapse.png").exists()


def test_experiment_cli_star_quick_and_unknown_name(tmp_path):
    proc = run_cli("experiment", "star", "--quick", "--out", str(tmp_path / "star"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "star" / "star.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    assert (tmp_path / "star" / "star.png").exists()
    bad = run_cli("experiment", "nope", "--out", str(tmp_path / "x"))
    assert bad.returncode == 1 and "unknown experiment 'nope'" in bad.stderr


def test_experiment_list_names_what_there_is():
    from tests.helpers import run_cli

    done = run_cli("experiment", "list")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["collapse", "filter-lift", "star"]
