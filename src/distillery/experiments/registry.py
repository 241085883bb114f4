"""Running a registered experiment by name (kind ``experiment`` of :mod:`distillery.registry`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillery import registry


def run_experiment(name: str, out: str | Path, quick: bool = False) -> dict[str, Any]:
    """Run experiment ``name`` into ``out``; ``quick`` shrinks it to a smoke test.

    Raises:
        UnknownName: no experiment of that name (lists the registered ones).
    """
    return registry.get("experiment", name)(out, quick=quick)
