"""``generation.allocation: posterior`` (rejection sampling that stops prompts judged hopeless) on
the embedded default: the built-in teacher in process, the ``python_program`` sandbox, 30 seeds."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from distillery.errors import RecipeError
from distillery.generate.rejection_sampling import fit_beta_prior
from distillery.recipe import Recipe
from tests.helpers import REPO, run_pipeline

ARITH = REPO / "recipes" / "arith.yaml"
N = 4


def arith(out: Path, allocation: str | None, **extra) -> Recipe:
    """30 train problems of another seed than the benchmark's, 2 batches of 15, best-of-4."""
    sets = {
        "seeds.options": {"n": 30, "split": "train", "seed": 7},
        "generation.samples_per_prompt": N,
        "generation.accept_per_prompt": 1,
        "output.dir": str(out),
        "output.batch_size": 15,
        "report.embedding_model": None,
        "dedup": [],
        **extra,
    }
    if allocation:
        sets["generation.allocation"] = allocation
        sets["generation.stop_below"] = 0.15  # stops several of 30 prompts, so the path is exercised
    return Recipe.from_yaml(ARITH, sets)


def by_prompt(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        out[r["seed_id"]].append(r)
    return out


def fingerprint(records: list[dict]) -> list[tuple]:
    """What a record says, less its timings (the sandbox's ``wall_s``, latencies)."""
    return sorted((r["id"], r["response"], r["accepted"], r["reject_reason"], r["tokens_in"], r["tokens_out"],
                   tuple((v["stage"], v["name"], v["passed"]) for v in r["verdicts"])) for r in records)


def decisions(run: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((run / "state" / "allocation").glob("*.json"))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("bon")
    adaptive = run_pipeline(arith(tmp / "adaptive", None), tmp / "adaptive")
    posterior = run_pipeline(arith(tmp / "posterior", "posterior"), tmp / "posterior")
    return {"tmp": tmp, "adaptive": adaptive, "posterior": posterior}


def test_hopeless_prompts_get_fewer_samples_and_every_stop_is_counted(runs):
    _, acc_a, rej_a = runs["adaptive"]
    report, acc_p, rej_p = runs["posterior"]
    adaptive, posterior = by_prompt(acc_a + rej_a), by_prompt(acc_p + rej_p)
    assert set(adaptive) == set(posterior) and len(posterior) == 30
    assert max(len(v) for v in posterior.values()) <= N
    state = decisions(runs["tmp"] / "posterior")
    assert sorted(state) == ["batch-000000.json", "batch-000001.json"]
    stopped = {sid: d for s in state.values() for sid, d in s["decisions"].items()}
    assert sum(s["stopped"] for s in state.values()) == len(stopped) > 0
    assert report["stopped_early"] == len(stopped) and runs["adaptive"][0]["stopped_early"] == 0
    for sid, d in stopped.items():
        samples = posterior[sid]
        # stopped before its budget ran out, none accepted, after at least two samples
        assert 2 <= len(samples) == d["drawn"] < N and not any(r["accepted"] for r in samples)
        assert d["q"] < 0.15 * d["relative_cost"]
    # prompts never stopped are treated as adaptive best-of-N treats them
    for sid, samples in posterior.items():
        if sid not in stopped:
            assert any(r["accepted"] for r in samples) or len(samples) == N
    # the first two waves are the same requests, so the same records as adaptive's
    early = lambda recs: fingerprint([r for r in recs if r["sample_index"] < 2])  # noqa: E731
    assert early(acc_a + rej_a) == early(acc_p + rej_p)
    assert len(acc_p + rej_p) < len(acc_a + rej_a)
    assert report["candidates"] == len(acc_p + rej_p)
    params = json.loads(acc_p[0]["strategy_params"])
    assert params["allocation"] == "posterior" and params["stop_below"] == 0.15
    assert "allocation" not in json.loads(acc_a[0]["strategy_params"])  # unset: as before the option


def test_records_and_decisions_are_deterministic_and_survive_a_resume(runs):
    tmp = runs["tmp"]
    _, acc, rej = runs["posterior"]
    first, state = fingerprint(acc + rej), decisions(tmp / "posterior")
    # a second run from an empty run directory and cache makes the same records and decisions
    again_report, acc2, rej2 = run_pipeline(arith(tmp / "again", "posterior"), tmp / "again")
    assert again_report["cache"]["backend_calls"] > 0
    assert fingerprint(acc2 + rej2) == first and decisions(tmp / "again") == state
    # resume: batch 1 unfinished (no marker, no shard, no decisions): replayed from the cache, same result
    run = tmp / "again"
    for p in (run / "shards").glob("batch-000001.*"):
        p.unlink()
    (run / "state" / "allocation" / "batch-000001.json").unlink()
    resumed, acc3, rej3 = run_pipeline(arith(run, "posterior"), run)
    assert resumed["cache"]["session_backend_calls"] == 0
    assert fingerprint(acc3 + rej3) == first and decisions(run) == state


def test_beta_prior_fit_and_recipe_checks():
    # prompts that pass all or nothing: a U-shaped prior (a, b < 1) with the right mean
    a, b = fit_beta_prior([(4, 0)] * 30 + [(0, 4)] * 70)
    assert a < 1 and b < 1 and abs(a / (a + b) - 0.3) < 0.05
    # every prompt at the same rate 0.5: a concentrated prior
    a, b = fit_beta_prior([(2, 2)] * 50 + [(1, 3), (3, 1)] * 20)
    assert a + b > 20 and abs(a / (a + b) - 0.5) < 0.02
    assert fit_beta_prior([]) == (1.0, 1.0)
    with pytest.raises(RecipeError, match="accept_per_prompt"):
        Recipe.from_yaml(ARITH, {"generation.allocation": "posterior", "generation.accept_per_prompt": None})
    with pytest.raises(RecipeError, match="stop_below"):
        Recipe.from_yaml(ARITH, {"generation.stop_below": 0.1})
