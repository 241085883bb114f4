"""``collapse``: recursive training on a model's own unfiltered samples, with and without real data.

Generation 0 is the base student fine-tuned on real (gold) examples. Each later generation
is the base student fine-tuned on samples drawn (temperature 1, no verifier) from the
previous generation — alone (``replace``: model collapse, Shumailov et al., 2023) or together
with the real examples (``mix``: accumulating real data avoids collapse, Gerstgrasser et al.,
2024). Per generation: held-out accuracy, distinct-1/2 of the samples, the share of distinct
samples per prompt, and the entropy of the sampled tokens.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from distillery.experiments.common import distinct_n, save_plot, token_entropy, train_and_eval, write_result
from distillery.registry import register


def sample_programs(model: str, out: Path, problems: int, samples: int, seed: int,
                    difficulties: tuple[int, ...] = (1, 2, 3, 4, 5), temperature: float = 0.7,
                    top_p: float = 0.9) -> list[dict[str, Any]]:
    """``samples`` unverified programs per training problem from ``model`` (through the pipeline, no verifier)."""
    import pyarrow.parquet as pq

    from distillery.pipeline.runner import Pipeline
    from distillery.recipe import Recipe

    recipe = Recipe.from_dict(
        {
            "name": out.name,
            "seeds": {"path": "builtin:arith", "options": {"n": problems, "split": "train", "seed": seed,
                                                           "difficulties": list(difficulties)}},
            "prompt": {"template": "{{ question }}"},
            "teacher": {
                "backend": "transformers", "model": model, "batch_size": 64, "device": "cpu",
                "sampling": {"temperature": temperature, "top_p": top_p, "max_tokens": 192, "seed": seed},
            },
            "generation": {"samples_per_prompt": samples},
            "output": {"dir": str(out), "batch_size": 500},
            "report": {"embedding_model": None, "diversity_sample": 0},
        }
    )
    Pipeline(recipe, progress=False).run()
    return pq.read_table(out / "accepted.parquet").to_pylist()


def sample_stats(records: list[dict[str, Any]], tokenizer: Any) -> dict[str, float]:
    """Diversity of a generation's samples."""
    texts = [r["response"] for r in records]
    by_prompt: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for r in records:
        by_prompt.setdefault(r["seed_id"], set()).add(r["response"])
        counts[r["seed_id"]] = counts.get(r["seed_id"], 0) + 1
    unique_share = sum(len(v) for v in by_prompt.values()) / max(1, sum(counts.values()))
    return {
        "samples": len(texts),
        "distinct_1": round(distinct_n(texts, 1), 4),
        "distinct_2": round(distinct_n(texts, 2), 4),
        "unique_per_prompt": round(unique_share, 4),
        "token_entropy_bits": round(token_entropy(texts, tokenizer), 4),
    }


def run(
    out_dir: str | Path,
    *,
    student: str = "builtin:student",
    generations: int = 5,
    real_examples: int = 300,
    problems: int = 100,
    samples: int = 4,
    steps: int = 100,
    eval_problems: int = 100,
    seed: int = 0,
    threads: int | None = None,
    difficulties: tuple[int, ...] = (1, 2),
    lr: float | None = 5e-4,
    temperature: float = 0.7,
    top_p: float = 0.9,
) -> dict[str, Any]:
    """Run both arms; write ``collapse.json`` and ``collapse.png`` under ``out_dir``.

    ``difficulties`` are the levels of the real, sampled and held-out problems (default 1-2, the
    levels the 0.4M-parameter student can learn); ``lr`` the students' peak learning rate.
    Each generation samples as one usually samples for data, at ``temperature`` with nucleus
    ``top_p``: the tails that truncation cuts are what recursive training loses (at T=1 without
    truncation a model this weak drifts toward noise rather than narrowing).

    Returns:
        ``{"config", "generation0", "arms": {"replace": [per generation], "mix": [...]}}``.
    """
    from transformers import AutoTokenizer

    from distillery.builtin.arith import generate
    from distillery.builtin.models import resolve_model

    out = Path(out_dir)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(student))
    real = [
        {"prompt": [{"role": "user", "content": p.question}], "completion": p.program}
        for p in generate(real_examples, split="train", seed=seed + 5000, difficulties=difficulties)
    ]
    result: dict[str, Any] = {
        "config": {"student": student, "generations": generations, "real_examples": real_examples, "problems": problems,
                   "samples": samples, "steps": steps, "eval_problems": eval_problems, "seed": seed,
                   "difficulties": list(difficulties), "lr": lr, "temperature": temperature, "top_p": top_p},
        "arms": {},
    }
    gen0_dir = out / "gen0"
    gen0 = train_and_eval(student, real, gen0_dir / "model", steps=steps, seed=seed, eval_problems=eval_problems,
                          threads=threads, lr=lr, difficulties=difficulties)
    drawn = sample_programs(str(gen0_dir / "model"), gen0_dir / "samples", problems, samples, seed, difficulties,
                            temperature, top_p)
    result["generation0"] = {"generation": 0, "accuracy": gen0["accuracy"], **sample_stats(drawn, tokenizer)}
    for arm in ("replace", "mix"):
        history = [result["generation0"]]
        current = drawn
        for g in range(1, generations + 1):
            gdir = out / arm / f"gen{g}"
            synthetic = [{"prompt": r["prompt"], "completion": r["response"]} for r in current]
            data = synthetic + (real if arm == "mix" else [])
            trained = train_and_eval(student, data, gdir / "model", steps=steps, seed=seed + g, eval_problems=eval_problems,
                                     threads=threads, lr=lr, difficulties=difficulties)
            current = sample_programs(str(gdir / "model"), gdir / "samples", problems, samples, seed + g, difficulties,
                                      temperature, top_p)
            history.append({"generation": g, "accuracy": trained["accuracy"], "train_examples": len(data),
                            **sample_stats(current, tokenizer)})
            result["arms"][arm] = history
            write_result(out, "collapse", result)
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_result(out, "collapse", result)
    plot(result, out / "collapse.png")
    return result


def plot(result: dict[str, Any], path: Path) -> Path:
    """Accuracy and diversity per generation, both arms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("accuracy", "held-out accuracy"), ("distinct_2", "distinct-2"),
               ("unique_per_prompt", "distinct samples / prompt"), ("token_entropy_bits", "token entropy (bits)")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2))
    for ax, (key, label) in zip(axes, metrics, strict=True):
        for arm, style in (("replace", "o-"), ("mix", "s--")):
            rows = result["arms"].get(arm, [])
            ax.plot([r["generation"] for r in rows], [r[key] for r in rows], style, label=arm)
        ax.set_xlabel("generation")
        ax.set_title(label)
    axes[0].legend()
    fig.suptitle("collapse: training on own samples (replace) vs with real data mixed in (mix)", y=1.05)
    return save_plot(fig, path)


@register("experiment", name="collapse")
def experiment(out: str | Path, quick: bool = False) -> dict[str, Any]:
    """``distillery experiment collapse``: :func:`run` with its defaults, or a smoke-test size."""
    kw: dict[str, Any] = {"generations": 2, "real_examples": 16, "problems": 8, "samples": 2, "steps": 4,
                          "eval_problems": 10} if quick else {}
    return run(out, **kw)
