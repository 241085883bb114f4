"""``filter-lift``: what the verifier buys.

The teacher samples programs for training problems (one pipeline run, verifier on, every
candidate kept in ``accepted`` or ``rejected``). Three datasets of equal size are drawn:

- (a) ``unfiltered``: teacher samples regardless of the verdict;
- (b) ``verified``: teacher samples the verifier accepted;
- (c) ``gold``: the problems' gold programs.

The student is fine-tuned on each with the same steps, for several seeds, and evaluated
greedily on held-out test problems; the result is mean ± std accuracy per dataset. The claim
under test (e.g. Zelikman et al., 2022; Yuan et al., 2023; the "generation is cheap, the filter
is the product" lesson): (b) beats (a).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from distillery.experiments.common import mean_std, save_plot, train_and_eval, write_result
from distillery.registry import register


def teacher_pool(out: Path, teacher: str, problems: int, samples: int, seed: int, *, temperature: float = 0.8,
                 difficulties: tuple[int, ...] = (1, 2, 3, 4, 5)) -> list[dict[str, Any]]:
    """Run the pipeline (teacher, python_program verifier, nothing else) and return every candidate
    with a response: accepted ones and those the verifier rejected."""
    import pyarrow.parquet as pq

    from distillery.pipeline.runner import Pipeline
    from distillery.recipe import Recipe

    recipe = Recipe.from_dict(
        {
            "name": "filter-lift-pool",
            "seeds": {"path": "builtin:arith", "options": {"n": problems, "split": "train", "seed": seed,
                                                           "difficulties": list(difficulties)}},
            "prompt": {"template": "{{ question }}"},
            "teacher": {
                "backend": "transformers", "model": teacher, "batch_size": 64, "device": "cpu",
                "sampling": {"temperature": temperature, "top_p": 1.0, "max_tokens": 192, "seed": seed},
            },
            "generation": {"samples_per_prompt": samples},
            "verifiers": [{"type": "python_program", "reference": "answer"}],
            "output": {"dir": str(out), "batch_size": 200},
            "report": {"embedding_model": None},
        }
    )
    Pipeline(recipe, progress=False).run()
    records = pq.read_table(out / "accepted.parquet").to_pylist() + pq.read_table(out / "rejected.parquet").to_pylist()
    return [r for r in records if r["response"] and r["reject_stage"] in (None, "python_program")]


def run(
    out_dir: str | Path,
    *,
    teacher: str = "builtin:teacher",
    student: str = "builtin:student",
    problems: int = 600,
    samples: int = 2,
    size: int | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    steps: int = 200,
    eval_problems: int = 200,
    threads: int | None = None,
    temperature: float = 1.0,
    difficulties: tuple[int, ...] = (1, 2),
    lr: float | None = 5e-4,
) -> dict[str, Any]:
    """Run the experiment; write ``filter-lift.json`` and ``filter-lift.png`` under ``out_dir``.

    Args:
        problems, samples: training problems and teacher samples per problem for the pool.
        size: examples per dataset (default: as many as the verifier accepted, at most 600).
        seeds: training seeds (each dataset is trained once per seed).
        steps: SFT steps for every student.
        eval_problems: held-out test problems, stratified by difficulty.
        temperature: the teacher's sampling temperature for the pool (higher: more wrong
            samples for the verifier to catch).
        difficulties: the levels of the training and test problems. The default keeps to
            1-2: the 0.4M-parameter student cannot learn 3-5-step programs from a few
            hundred examples (trained on all levels it scores ~0 there whatever the data,
            and the arms cannot differ).
        lr: the students' peak learning rate (``None``: the SFT default).

    Returns:
        ``{"datasets": {name: {"size", "correct_fraction", "accuracy": {mean, std, values}}}, "lift", ...}``.
    """
    from distillery.builtin.arith import generate

    out = Path(out_dir)
    started = time.perf_counter()
    pool = teacher_pool(out / "pool", teacher, problems, samples, seeds[0], temperature=temperature,
                        difficulties=difficulties)
    verified = [r for r in pool if r["accepted"]]
    n = size or min(len(verified), 600)
    if n == 0:
        raise RuntimeError("the teacher produced no verified sample; nothing to compare")
    rng = random.Random(0)
    gold_by_id = {p.id: p for p in generate(problems, split="train", seed=seeds[0], difficulties=difficulties)}
    datasets = {
        "unfiltered": rng.sample(pool, n),
        "verified": rng.sample(verified, n),
    }
    gold_ids = rng.sample(sorted(gold_by_id), min(n, len(gold_by_id)))
    datasets["gold"] = [
        {"prompt": [{"role": "user", "content": gold_by_id[i].question}], "response": gold_by_id[i].program}
        for i in gold_ids
    ]
    result: dict[str, Any] = {
        "config": {"teacher": teacher, "student": student, "problems": problems, "samples": samples, "size": n,
                   "seeds": list(seeds), "steps": steps, "eval_problems": eval_problems, "temperature": temperature,
                   "difficulties": list(difficulties), "lr": lr},
        "pool": {"candidates": len(pool), "verified": len(verified),
                 "teacher_sample_accuracy": len(verified) / len(pool) if pool else 0.0},
        "datasets": {},
    }
    from distillery.evaluate.harness import evaluate

    before = evaluate(student, "arith", "test", eval_problems, batch_size=64, device="cpu", difficulties=difficulties)
    result["student_before"] = before["greedy"]["accuracy"]
    for name, records in datasets.items():
        examples = [{"prompt": r["prompt"], "completion": r["response"]} for r in records]
        correct = sum(r.get("accepted", True) for r in records) / len(records)
        runs = [
            train_and_eval(student, examples, out / f"{name}-seed{s}", steps=steps, seed=s,
                           eval_problems=eval_problems, threads=threads, lr=lr, difficulties=difficulties)
            for s in seeds
        ]
        result["datasets"][name] = {
            "size": len(examples),
            "correct_fraction": round(correct, 4),
            "accuracy": mean_std([r["accuracy"] for r in runs]),
            "runs": runs,
        }
        write_result(out, "filter-lift", result)
    a, b = result["datasets"]["unfiltered"]["accuracy"], result["datasets"]["verified"]["accuracy"]
    result["lift"] = {
        "verified_minus_unfiltered_points": round(100 * (b["mean"] - a["mean"]), 2),
        "non_overlapping_1std": (b["mean"] - b["std"]) > (a["mean"] + a["std"]),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_result(out, "filter-lift", result)
    plot(result, out / "filter-lift.png")
    return result


def plot(result: dict[str, Any], path: Path) -> Path:
    """Bar chart of mean ± std held-out accuracy per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["datasets"])
    means = [100 * result["datasets"][k]["accuracy"]["mean"] for k in names]
    stds = [100 * result["datasets"][k]["accuracy"]["std"] for k in names]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(names, means, yerr=stds, capsize=6, color=["#c44e52", "#55a868", "#4c72b0"])
    ax.set_ylabel("held-out accuracy (%)")
    cfg = result["config"]
    ax.set_title(f"filter-lift: student SFT on {cfg['size']} examples, {len(cfg['seeds'])} seeds")
    for i, (m, s) in enumerate(zip(means, stds, strict=True)):
        ax.text(i, m + s + 0.5, f"{m:.1f}±{s:.1f}", ha="center", fontsize=9)
    return save_plot(fig, path)


@register("experiment", name="filter-lift")
def experiment(out: str | Path, quick: bool = False) -> dict[str, Any]:
    """``distillery experiment filter-lift``: :func:`run` with its defaults, or a smoke-test size."""
    kw: dict[str, Any] = {"problems": 40, "size": 20, "seeds": (0, 1), "steps": 4, "eval_problems": 10} if quick else {}
    return run(out, **kw)
