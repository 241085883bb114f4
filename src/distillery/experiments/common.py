"""Shared pieces of the experiments: SFT + evaluation of a student, statistics, plots."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from distillery.io.atomic import atomic_write_text
from distillery.text import words


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct-n (Li et al., 2016): unique word n-grams / all word n-grams over ``texts``."""
    from distillery.report.diversity import distinct_n as _distinct

    return _distinct([words(t) for t in texts], n)


def token_entropy(texts: list[str], tokenizer: Any) -> float:
    """Shannon entropy (bits) of the empirical distribution of the model's tokens in ``texts``."""
    counts: Counter = Counter()
    for t in texts:
        counts.update(tokenizer(t, add_special_tokens=False)["input_ids"])
    total = sum(counts.values())
    if not total:
        return 0.0
    return -sum(c / total * math.log2(c / total) for c in counts.values())


def train_and_eval(
    base: str, examples: list[dict[str, Any]], out: Path, *, steps: int, seed: int, eval_problems: int,
    batch_size: int = 16, lr: float | None = None, threads: int | None = None,
    difficulties: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """SFT ``base`` on ``examples`` into ``out`` and return its greedy accuracy on ``eval_problems``
    held-out arith test problems (stratified; only ``difficulties`` if given)."""
    from distillery.evaluate.harness import evaluate
    from distillery.train.sft import sft_train

    options: dict[str, Any] = {"steps": steps, "batch_size": batch_size, "seed": seed, "progress": False}
    if lr is not None:
        options["lr"] = lr
    if threads is not None:
        options["threads"] = threads
    metrics = sft_train(base, examples, out, **options)
    result = evaluate(str(out), "arith", "test", eval_problems, batch_size=64, device="cpu", difficulties=difficulties)
    return {
        "accuracy": result["greedy"]["accuracy"],
        "per_difficulty": {d: r["accuracy"] for d, r in result["greedy"].get("per_difficulty", {}).items()},
        "train_seconds": metrics.get("train_runtime_s"),
        "final_loss": metrics["loss_curve"][-1].get("loss") if metrics.get("loss_curve") else None,
    }


def write_result(out: Path, name: str, result: dict[str, Any]) -> Path:
    """Write ``<out>/<name>.json`` atomically and return its path."""
    path = out / f"{name}.json"
    atomic_write_text(path, json.dumps(result, indent=2))
    return path


def save_plot(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure as PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    from distillery.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
