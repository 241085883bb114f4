"""Experiment names -> runners, with their default and quick configurations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillery.errors import DistilleryError
from distillery.experiments import EXPERIMENTS


def run_experiment(name: str, out: str | Path, quick: bool = False) -> dict[str, Any]:
    """Run experiment ``name`` into ``out``; ``quick`` shrinks it to a smoke test.

    Raises:
        DistilleryError: unknown experiment name.
    """
    if name == "filter-lift":
        from distillery.experiments import filter_lift

        kw: dict[str, Any] = {"problems": 40, "size": 20, "seeds": (0, 1), "steps": 4, "eval_problems": 10} if quick else {}
        return filter_lift.run(out, **kw)
    if name == "collapse":
        from distillery.experiments import collapse

        kw = {"generations": 2, "real_examples": 16, "problems": 8, "samples": 2, "steps": 4, "eval_problems": 10} if quick else {}
        return collapse.run(out, **kw)
    if name == "star":
        from distillery.experiments import star
        from distillery.train.improve import ImproveConfig

        cfg = ImproveConfig(rounds=1, problems=16, samples=2, steps=4, eval_problems=10, embedding_model=None,
                            difficulties=(1, 2)) if quick else None
        return star.run(out, cfg)
    raise DistilleryError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
