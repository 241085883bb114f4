"""`distillery distill`: SFT, KD (forward / reverse KL, JSD, on-policy) and DPO on a real run
directory made by the curate pipeline, with tiny models sharing one tokenizer; the KD loss
against hand-computed values; the saved student loads and generates; clear errors."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from distillery.pipeline.runner import Pipeline
from distillery.recipe import Recipe
from distillery.train.api import distill
from distillery.train.data import dpo_pairs, load_run, reject_kind
from distillery.train.errors import (
    NoTrainingDataError,
    RunDirError,
    TokenizerMismatchError,
    TrainError,
    TrainOptionError,
)
from distillery.train.losses import divergence_beta, kd_loss
from distillery.train.sft import sft_train
from tests.helpers import GSM8K_TRAIN, REPO, read_jsonl

FAST = {"threads": 1, "progress": False, "batch_size": 8, "max_length": 320}


# -- fixtures: a run directory and tiny models ---------------------------------------------------------


def _curate_run(out: Path, seeds: list[dict]) -> Path:
    """A real curate run (gsm8k-curate recipe: length filter, math_answer verifier, exact + MinHash dedup)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.jsonl").write_text("".join(json.dumps(s) + "\n" for s in seeds))
    recipe = Recipe.from_yaml(REPO / "recipes" / "gsm8k-curate.yaml", {
        "seeds.path": str(out / "seeds.jsonl"), "seeds.id_field": "qid", "seeds.response_template": "{{ solution }}",
        "output.dir": str(out / "run"), "decontamination": None, "report.embedding_model": None,
    })
    Pipeline(recipe, progress=False).run()
    return out / "run"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """24 GSM8K questions. Each has its reference solution (accepted); every second one also a
    solution ending in a wrong total (rejected by the verifier), every fourth one "ok" (too
    short: rejected by the length filter), every sixth one an empty response (a generation
    failure) and a copy of the reference solution (an exact duplicate)."""
    seeds = []
    for i, row in enumerate(read_jsonl(GSM8K_TRAIN, 24)):
        solution = row["answer"].split("####")[0].strip()
        total = int(row["answer"].split("####")[1].replace(",", ""))
        base = {"question": row["question"], "answer": row["answer"]}
        seeds.append({**base, "qid": f"q{i}", "solution": solution})
        if i % 2 == 0:
            seeds.append({**base, "qid": f"q{i}-wrong", "solution": f"{solution}\nThe total is {total + 7}."})
        if i % 4 == 0:
            seeds.append({**base, "qid": f"q{i}-short", "solution": "ok"})
        if i % 6 == 0:
            seeds.append({**base, "qid": f"q{i}-empty", "solution": ""})
            seeds.append({**base, "qid": f"q{i}-copy", "solution": solution})
    return _curate_run(tmp_path_factory.mktemp("distill-run"), seeds)


@pytest.fixture(scope="module")
def student(tiny_gsm8k_model: Path, tmp_path_factory) -> str:
    """A randomly initialised 1-layer Llama (~50K parameters) with the teacher's tokenizer."""
    from transformers import AutoTokenizer

    from distillery.builtin.modelling import build_llama, save_model

    tok = AutoTokenizer.from_pretrained(tiny_gsm8k_model)
    model = build_llama(tok, seed=1, hidden=32, layers=1, heads=2)
    return str(save_model(model, tok, tmp_path_factory.mktemp("student")))


def _falls(metrics: dict, k: int = 3, by: float = 0.05) -> tuple[float, float]:
    losses = [c["loss"] for c in metrics["loss_curve"]]
    first, last = float(np.mean(losses[:k])), float(np.mean(losses[-k:]))
    assert all(math.isfinite(v) for v in losses)
    assert last < first * (1 - by), losses
    return first, last


def _check_saved_student(out: Path, run: Path | None = None, method: str = "sft") -> None:
    """The folder loads with from_pretrained and with TransformersBackend, and generates."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distillery.backends.base import GenerationRequest, SamplingParams
    from distillery.backends.transformers_local import TransformersBackend

    assert json.loads((out / "generation_config.json").read_text())["do_sample"] is True
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] > ids.shape[1]

    async def one():
        backend = TransformersBackend(str(out), device="cpu")
        req = GenerationRequest.make([{"role": "user", "content": "What is 2 + 3?"}], SamplingParams(0.8, max_tokens=6, seed=0))
        return [r async for _, r in backend.stream([req])][0]

    result = asyncio.run(one())
    assert result.error_kind is None and result.tokens_out >= 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["steps"] > 0 and metrics["train_tokens_per_s"] > 0
    assert metrics["wall_time_s"] > 0 and metrics["loss_curve"][0]["step"] >= 1
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and f"- {method}" in card and "## Hyper-parameters" in card
    if run is not None:
        report = json.loads((run / "report.json").read_text())
        assert str(run) in card and report["recipe_hash"] in card and f"{report['accepted']} accepted" in card


# -- the loss against hand-computed values -----------------------------------------------------------


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p * (np.log(p) - np.log(q))).sum(-1)


def _reference(student: np.ndarray, teacher: np.ndarray, mask: np.ndarray, beta: float, t: float) -> float:
    """Generalized JSD (Agarwal et al., 2024, eq. 1) by hand with numpy, mean over kept positions."""
    p, q = _softmax(teacher / t), _softmax(student / t)
    if beta == 0:
        d = _kl(p, q)
    elif beta == 1:
        d = _kl(q, p)
    else:
        m = beta * p + (1 - beta) * q
        d = beta * _kl(p, m) + (1 - beta) * _kl(q, m)
    return float(d[mask].mean())


def test_kd_loss_on_a_two_token_vocabulary_by_hand():
    # teacher p = (3/4, 1/4) (logits ln 3, 0), student q = (1/2, 1/2)
    s = torch.tensor([[[0.0, 0.0]]])
    t = torch.tensor([[[math.log(3.0), 0.0]]])
    forward = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL(p || q) = 0.130812
    reverse = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # KL(q || p) = 0.143841
    assert kd_loss(s, t, beta=0.0).item() == pytest.approx(0.130812, abs=1e-6) == pytest.approx(forward)
    assert kd_loss(s, t, beta=1.0).item() == pytest.approx(0.143841, abs=1e-6) == pytest.approx(reverse)
    # JSD(0.5): m = (5/8, 3/8)
    jsd = 0.5 * (0.75 * math.log(0.75 / 0.625) + 0.25 * math.log(0.25 / 0.375)) + 0.5 * (
        0.5 * math.log(0.5 / 0.625) + 0.5 * math.log(0.5 / 0.375))
    assert kd_loss(s, t, beta=0.5).item() == pytest.approx(jsd, rel=1e-6)
    # temperature 2: teacher logits halved -> p = (sqrt 3, 1) / (sqrt 3 + 1)
    p0 = math.sqrt(3) / (math.sqrt(3) + 1)
    hot = p0 * math.log(p0 / 0.5) + (1 - p0) * math.log((1 - p0) / 0.5)
    assert kd_loss(s, t, beta=0.0, temperature=2.0).item() == pytest.approx(hot, rel=1e-6)


@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5, 0.2, 0.9])
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_kd_loss_matches_numpy_with_mask_and_temperature(beta, temperature):
    rng = np.random.default_rng(7)
    student = rng.normal(size=(2, 5, 7)) * 2
    teacher = rng.normal(size=(2, 5, 7)) * 2
    labels = rng.integers(0, 7, size=(2, 5))
    labels[0, :2] = -100  # prompt positions
    labels[1, 4] = -100  # padding
    got = kd_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(labels), beta=beta, temperature=temperature)
    assert got.item() == pytest.approx(_reference(student, teacher, labels != -100, beta, temperature), rel=1e-6)
    # a fixed divisor (tokens over gradient-accumulation steps) replaces the local count
    summed = kd_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(labels), beta=beta,
                     temperature=temperature, num_items_in_batch=1)
    assert summed.item() == pytest.approx(got.item() * int((labels != -100).sum()), rel=1e-6)


def test_divergence_names_map_to_beta():
    assert divergence_beta("forward") == 0.0 and divergence_beta("reverse") == 1.0
    assert divergence_beta("jsd") == 0.5 and divergence_beta("jsd", 0.1) == 0.1
    for bad in (("sideways", None), ("jsd", 1.5), ("forward", 0.5)):
        with pytest.raises(TrainOptionError):
            divergence_beta(*bad)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), temperature=0.0)


# -- data from the run -------------------------------------------------------------------------------


def test_preference_pairs_use_only_verifier_and_filter_rejections(run_dir: Path):
    run = load_run(run_dir)
    kinds = {}
    for r in run.rejected:
        kinds[reject_kind(r)] = kinds.get(reject_kind(r), 0) + 1
    assert kinds == {"verify": 12, "filter": 6, "generate": 4, "dedup": 4}
    pairs, stats = dpo_pairs(run.accepted, run.rejected)
    # one pair per question that has a wrong or too-short candidate: every second or fourth one
    assert stats.pairs == len(pairs) == 12 == stats.prompts_with_pairs
    assert stats.rejected_usable == 18 and stats.rejected_skipped == {"generate": 4, "dedup": 4}
    accepted = {r["seed_id"]: r for r in run.accepted}
    for pair in pairs:
        question = pair["prompt"][-1]["content"]
        source = next(r for r in accepted.values() if r["prompt"][-1]["content"] == question)
        assert pair["chosen"][0]["content"] == source["response"]
        assert pair["rejected"][0]["content"] != source["response"] and pair["rejected"][0]["content"].strip()
    more, stats2 = dpo_pairs(run.accepted, run.rejected, pairs_per_prompt=2)
    assert len(more) == len(pairs)  # one accepted candidate per question: zip stops there


# -- training ----------------------------------------------------------------------------------------


def test_sft_loss_falls_and_the_student_loads_and_generates(run_dir: Path, student: str, tmp_path: Path):
    out = tmp_path / "sft"
    metrics = distill(run_dir, student, "sft", out, steps=24, lr=3e-3, **FAST)
    first, last = _falls(metrics)
    assert metrics["steps"] == 24 and metrics["examples"] == 24 and metrics["data"]["accepted_records"] == 24
    assert metrics["hyperparameters"]["packing"] is False and metrics["hyperparameters"]["learning_rate"] == 3e-3
    _check_saved_student(out, run_dir, "sft")


def test_the_student_is_written_beside_the_run_directory_by_default(run_dir: Path, student: str, tmp_path: Path):
    import shutil

    run = tmp_path / "myrun"
    shutil.copytree(run_dir, run)
    metrics = distill(run, student, "sft", steps=1, **FAST)
    assert Path(metrics["out_dir"]) == tmp_path / "myrun-student-sft"
    assert not any(p.name.startswith("student") for p in run.iterdir())  # the dataset folder holds no model


def test_sft_from_python_examples_is_deterministic(student: str, tmp_path: Path):
    rows = read_jsonl(GSM8K_TRAIN, 8)
    examples = [{"prompt": r["question"], "completion": r["answer"]} for r in rows]
    a = sft_train(student, examples, tmp_path / "a", steps=3, lr=1e-3, seed=3, **FAST)
    b = sft_train(student, examples, tmp_path / "b", steps=3, lr=1e-3, seed=3, **FAST)
    assert [c["loss"] for c in a["loss_curve"]] == [c["loss"] for c in b["loss_curve"]]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert "no run directory" in (tmp_path / "a" / "README.md").read_text()


@pytest.mark.parametrize("kl,beta", [("forward", None), ("reverse", None), ("jsd", 0.5)])
def test_kd_loss_falls(kl, beta, run_dir: Path, student: str, tiny_gsm8k_model: Path, tmp_path: Path):
    out = tmp_path / f"kd-{kl}"
    metrics = distill(run_dir, student, "kd", out, teacher=str(tiny_gsm8k_model), kl=kl, beta=beta, steps=24,
                      lr=3e-3, temperature=1.0, **FAST)
    _falls(metrics)
    hyper = metrics["hyperparameters"]
    assert hyper["beta"] == {"forward": 0.0, "reverse": 1.0, "jsd": 0.5}[kl] and hyper["lmbda"] == 0.0
    assert hyper["teacher"] == str(tiny_gsm8k_model)
    if kl == "forward":
        _check_saved_student(out, run_dir, "kd")


def test_kd_on_policy_samples_from_the_student(run_dir: Path, student: str, tiny_gsm8k_model: Path, tmp_path: Path):
    metrics = distill(run_dir, student, "kd", tmp_path / "gkd", teacher=str(tiny_gsm8k_model), kl="jsd", lmbda=1.0,
                      temperature=0.8, max_new_tokens=12, steps=3, lr=3e-3, **{**FAST, "batch_size": 4})
    assert metrics["steps"] == 3 and all(math.isfinite(c["loss"]) for c in metrics["loss_curve"])
    assert metrics["hyperparameters"]["lmbda"] == 1.0 and metrics["hyperparameters"]["temperature"] == 0.8


def test_dpo_loss_falls_from_log_2(run_dir: Path, student: str, tmp_path: Path):
    out = tmp_path / "dpo"
    metrics = distill(run_dir, student, "dpo", out, steps=20, lr=1e-3, **{**FAST, "batch_size": 4})
    assert metrics["loss_curve"][0]["loss"] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at start
    _falls(metrics)
    assert metrics["data"]["pairs"] == 12 and metrics["pairs"] == 12
    assert metrics["loss_curve"][-1]["rewards/margins"] > 0
    _check_saved_student(out, run_dir, "dpo")


def test_kd_teacher_defaults_to_the_runs_teacher(tiny_gsm8k_model: Path, student: str, tmp_path: Path):
    """A generate-mode run (the tiny model as in-process teacher, cut at the first newline):
    KD without --teacher uses the recipe's teacher.model."""
    recipe = Recipe.from_yaml(REPO / "recipes" / "gsm8k.yaml", {
        "teacher": {"backend": "transformers", "model": str(tiny_gsm8k_model), "device": "cpu",
                    "sampling": {"temperature": 0.8, "max_tokens": 24, "seed": 0, "stop": ["\n"]}},
        "seeds.limit": 6, "generation.samples_per_prompt": 1, "generation.accept_per_prompt": None,
        "verifiers": [], "filters": [], "dedup": [], "decontamination": None, "output.dir": str(tmp_path / "gen"),
        "report.embedding_model": None,
    })
    report = Pipeline(recipe, progress=False).run()
    if report["accepted"] == 0:
        pytest.skip("the tiny teacher wrote no response that ended within 24 tokens")
    metrics = distill(tmp_path / "gen", student, "kd", tmp_path / "kd", steps=2, **FAST)
    assert metrics["hyperparameters"]["teacher"] == str(tiny_gsm8k_model)
    assert f"`{tiny_gsm8k_model}`" in (tmp_path / "kd" / "README.md").read_text()


# -- errors ------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(run_dir: Path, student: str, tiny_gsm8k_model: Path, tmp_path: Path):
    with pytest.raises(RunDirError, match="not found"):
        distill(tmp_path / "nope", student, "sft")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="no accepted.parquet"):
        distill(tmp_path / "empty", student, "sft")
    with pytest.raises(TrainError, match="no teacher"):  # curate run: no teacher to distil from
        distill(run_dir, student, "kd")
    with pytest.raises(TrainOptionError, match="do not apply"):
        distill(run_dir, student, "sft", kl="reverse")
    with pytest.raises(TrainOptionError, match="unknown method"):
        distill(run_dir, student, "ppo")

    rows = read_jsonl(GSM8K_TRAIN, 3)
    # every response too short: nothing accepted, and no pair either
    nothing = _curate_run(tmp_path / "nothing", [
        {"qid": f"q{i}", "question": r["question"], "answer": r["answer"], "solution": "ok"} for i, r in enumerate(rows)])
    with pytest.raises(NoTrainingDataError, match="no accepted records"):
        distill(nothing, student, "sft")
    # all accepted: no rejected candidate to pair with
    only_good = _curate_run(tmp_path / "good", [
        {"qid": f"q{i}", "question": r["question"], "answer": r["answer"], "solution": r["answer"].split("####")[0]}
        for i, r in enumerate(rows)])
    with pytest.raises(NoTrainingDataError, match="no DPO preference pairs.*3 prompts with accepted"):
        distill(only_good, student, "dpo")

    # a teacher with another tokenizer
    from distillery.builtin.modelling import build_llama, save_model, train_tokenizer

    tok = train_tokenizer(["a b c d e f g"] * 50 + [r["question"] for r in rows], vocab_size=300)
    other = save_model(build_llama(tok, hidden=16, layers=1, heads=2), tok, tmp_path / "other")
    with pytest.raises(TokenizerMismatchError, match="do not share a tokenizer"):
        distill(run_dir, student, "kd", teacher=str(other), steps=1, **FAST)


def test_cli_command(run_dir: Path, student: str, tmp_path: Path):
    from distillery.train.cli import distill_command

    app = typer.Typer(add_completion=False)
    app.command("distill")(distill_command)
    app.command("noop")(lambda: None)  # a second command so `distill` stays a subcommand
    runner = CliRunner()
    bad = runner.invoke(app, ["distill", str(tmp_path / "missing"), "--student", student])
    assert bad.exit_code == 1 and "run directory not found" in bad.output
    out = tmp_path / "cli-sft"
    ok = runner.invoke(app, ["distill", str(run_dir), "--student", student, "--method", "sft", "--out", str(out),
                             "--steps", "2", "--batch-size", "4", "--threads", "1", "--no-progress", "--seed", "1"])
    assert ok.exit_code == 0, ok.output
    assert "sft: 2 steps on 24 examples" in ok.output and (out / "model.safetensors").exists()
    assert json.loads((out / "metrics.json").read_text())["hyperparameters"]["seed"] == 1
