"""JSONL files of settings a recipe names — a benchmark, a constitution, constraints, a persona
pool, a judge's calibration set — read one object a line, every fault named by file and line."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillery.errors import RecipeError


def read_objects(path: str | Path, what: str = "", comments: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of the JSONL (or ``.jsonl.gz``) file.

    Args:
        path: the file.
        what: the recipe key that names the file, put before every message (``generation.constitution``).
        comments: skip lines starting with ``#``.

    Raises:
        RecipeError: the file is missing or unreadable, a line is not JSON, or not a JSON object
            (``<what>: <path>:<line>: ...``).
    """
    path = Path(path)
    prefix = f"{what}: " if what else ""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                text = line.strip()
                if not text or (comments and text.startswith("#")):
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    raise RecipeError(f"{prefix}{path}:{n}: not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise RecipeError(f"{prefix}{path}:{n}: expected a JSON object per line, got {type(obj).__name__}")
                yield n, obj
    except FileNotFoundError:
        raise RecipeError(f"{prefix}file not found: {path}") from None
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise RecipeError(f"{prefix}cannot read {path}: {e}") from None
