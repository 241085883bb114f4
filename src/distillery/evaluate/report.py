"""Printing an evaluation result as a table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_eval(result: dict[str, Any], console: Console) -> None:
    """Print greedy accuracy, pass@k and the per-difficulty breakdown of :func:`~distillery.evaluate.harness.evaluate`."""
    greedy, sampled = result["greedy"], result.get("sampled")
    table = Table(title=f"{result['model']} · {result['task']} {result['split']} · {result['n_problems']} problems")
    table.add_column("difficulty")
    table.add_column("n", justify="right")
    table.add_column("greedy accuracy", justify="right")
    pass_keys = list(sampled["pass_at_k"]) if sampled else []
    for key in pass_keys:
        table.add_column(f"{key} (T={sampled['temperature']})", justify="right")
    levels = greedy.get("per_difficulty", {})
    for level, row in levels.items():
        cells = [level, str(row["n"]), f"{row['accuracy']:.1%}"]
        if sampled:
            srow = sampled["per_difficulty"][level]
            cells += [f"{srow[key]:.1%}" for key in pass_keys]
        table.add_row(*cells)
    total = ["all", str(result["n_problems"]), f"{greedy['accuracy']:.1%}"]
    if sampled:
        total += [f"{sampled['pass_at_k'][key]:.1%}" for key in pass_keys]
    table.add_row(*total, style="bold")
    console.print(table)
    console.print(f"{result['seconds']} s, {result['tokens_out']} tokens generated")
