"""``star``: held-out accuracy per round of ``distillery improve`` (STaR, Zelikman et al., 2022)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from distillery.experiments.common import save_plot, write_result
from distillery.registry import register
from distillery.train.improve import ImproveConfig, improve

DEFAULT_CONFIG = ImproveConfig(rounds=3, problems=800, samples=4, restart="previous", steps=100, lr=5e-4,
                               eval_problems=400, difficulties=(1, 2))


def run(out_dir: str | Path, config: ImproveConfig | None = None) -> dict[str, Any]:
    """Run the loop with ``config``; write ``star.json`` and ``star.png``.

    The default: the built-in student, 3 rounds on difficulties 1-2 (the levels a 0.4M-parameter
    model can learn), 800 problems x 4 samples per round, each round continuing from the last
    one's model (``restart="previous"``, expert iteration / iterated RFT: with ~100-200 verified
    examples a round, fine-tuning the base model afresh each round, as STaR does, overfits them
    and the rounds do not build on each other), 100 steps at learning rate 5e-4, all 400
    held-out test problems of levels 1-2 evaluated each round.
    """
    out = Path(out_dir)
    started = time.perf_counter()
    result = improve(config or DEFAULT_CONFIG, out / "loop")
    rounds = result["rounds"]
    summary = {
        "config": result["config"],
        "rounds": [{k: r.get(k) for k in ("round", "accuracy", "per_difficulty", "accept_rate", "problems_solved",
                                           "examples", "gold", "rationalized", "diversity", "tokens", "seconds")}
                   for r in rounds],
        "improved_rounds": sum(1 for a, b in zip(rounds, rounds[1:], strict=False) if b["accuracy"] > a["accuracy"]),
        "gain_points": round(100 * (rounds[-1]["accuracy"] - rounds[0]["accuracy"]), 2),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_result(out, "star", summary)
    plot(summary, out / "star.png")
    return summary


def plot(summary: dict[str, Any], path: Path) -> Path:
    """Accuracy (overall and per difficulty) and accept rate per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = summary["rounds"]
    xs = [r["round"] for r in rounds]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.3))
    ax1.plot(xs, [100 * r["accuracy"] for r in rounds], "o-", color="black", label="all")
    levels = sorted({d for r in rounds for d in (r.get("per_difficulty") or {})}, key=str)
    for d in levels:
        ax1.plot(xs, [100 * (r.get("per_difficulty") or {}).get(d, float("nan")) for r in rounds], ".--", label=f"d{d}")
    ax1.set_xlabel("round")
    ax1.set_ylabel("held-out greedy accuracy (%)")
    ax1.legend(fontsize=7)
    ax2.plot(xs[1:], [100 * r["accept_rate"] for r in rounds[1:]], "s-")
    ax2.set_xlabel("round")
    ax2.set_ylabel("accept rate of samples (%)")
    fig.suptitle("star: verified self-training of the student")
    return save_plot(fig, path)


@register("experiment", name="star")
def experiment(out: str | Path, quick: bool = False) -> dict[str, Any]:
    """``distillery experiment star``: :func:`run` with :data:`DEFAULT_CONFIG`, or a smoke-test size."""
    cfg = ImproveConfig(rounds=1, problems=16, samples=2, steps=4, eval_problems=10, embedding_model=None,
                        difficulties=(1, 2)) if quick else None
    return run(out, cfg)
