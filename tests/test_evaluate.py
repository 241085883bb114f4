"""`distillery eval`: tasks, the verifiers it shares with the pipeline, pass@k bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillery.errors import DistilleryError
from distillery.evaluate.harness import evaluate
from distillery.evaluate.passk import pass_at_k
from distillery.evaluate.tasks import load_task
from tests.helpers import run_cli


def test_tasks_load_with_their_verifiers():
    arith = load_task("arith", n=10)
    assert [p.difficulty for p in arith.problems] == [1, 2, 3, 4, 5] * 2
    assert arith.verifier.type == "python_program" and arith.problems[0].messages[0]["role"] == "user"
    gsm8k = load_task("gsm8k", n=3)
    assert gsm8k.verifier.type == "math_answer" and "####" in gsm8k.problems[0].seed["answer"]
    math500 = load_task("math500")
    assert len(math500.problems) == 500 and "\\boxed" in math500.problems[0].seed["solution"]
    with pytest.raises(DistilleryError, match="ships only its test split"):
        load_task("gsm8k", "train")
    with pytest.raises(DistilleryError, match="unknown task"):
        load_task("mmlu")


def test_evaluate_counts_and_pass_at_k_are_consistent(tiny_gsm8k_model: Path):
    result = evaluate(str(tiny_gsm8k_model), "gsm8k", n=4, samples=3, ks=(1, 2, 3), max_new_tokens=24, device="cpu")
    assert result["n_problems"] == 4 and result["greedy"]["accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    sampled = result["sampled"]
    counts = list(sampled["correct_per_problem"].values())
    assert len(counts) == 4 and all(0 <= c <= 3 for c in counts)
    for k in (1, 2, 3):
        expected = sum(pass_at_k(3, c, k) for c in counts) / 4
        assert sampled["pass_at_k"][f"pass@{k}"] == pytest.approx(expected)
    assert sampled["pass_at_k"]["pass@1"] == pytest.approx(sampled["accuracy"])
    assert result["tokens_out"] > 0
    with pytest.raises(ValueError, match="k <= samples"):
        evaluate(str(tiny_gsm8k_model), "gsm8k", n=1, samples=1, ks=(2,))


def test_eval_command_writes_json(tiny_gsm8k_model: Path, tmp_path: Path):
    out = tmp_path / "eval.json"
    result = run_cli("eval", str(tiny_gsm8k_model), "--task", "gsm8k", "--n", "2", "--max-new-tokens", "16",
                     "--device", "cpu", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "greedy accuracy" in result.stdout and json.loads(out.read_text())["n_problems"] == 2
    bad = run_cli("eval", str(tiny_gsm8k_model), "--task", "nope")
    assert bad.returncode == 1 and "unknown task 'nope'" in bad.stderr


def test_arith_task_selects_difficulties():
    task = load_task("arith", "test", 10, difficulties=(1, 2))
    levels = [p.difficulty for p in task.problems]
    assert len(levels) == 10 and set(levels) == {1, 2} and levels.count(1) == levels.count(2) == 5
    assert {p.difficulty for p in load_task("arith", "test", difficulties=(5,)).problems} == {5}
    assert len(load_task("arith", "test", difficulties=(5,)).problems) == 200
    with pytest.raises(DistilleryError, match="no difficulty levels"):
        load_task("gsm8k", "test", 5, difficulties=(1,))
