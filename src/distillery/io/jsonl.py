"""JSONL files of settings a recipe names — a benchmark, a constitution, constraints, a persona
pool, a judge's calibration set — read one object a line, every fault named by file and line."""

from __future__ import annotations

import gzip
import json
import zlib
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
        RecipeError: the file is missing, a folder or unreadable (a truncated ``.gz``), a line
            is not UTF-8 (naming its byte offset), not JSON (naming the column) or not a JSON
            object (``<what>: <path>:<line>: ...``). A UTF-8 byte-order mark is accepted.
    """
    path = Path(path)
    prefix = f"{what}: " if what else ""
    if path.is_dir():
        raise RecipeError(f"{prefix}{path}: is a folder, not a JSONL file")
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    n = 0
    try:
        with opener(path, "rb") as fh:
            for n, raw in enumerate(fh, start=1):
                if n == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a byte-order mark, as every reader accepts it
                    raw = raw[3:]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise RecipeError(f"{prefix}{path}:{n}: not valid UTF-8 at byte offset {e.start} of the line") from None
                text = line.strip()
                if not text or (comments and text.startswith("#")):
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecipeError(f"{prefix}{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
                except RecursionError:
                    raise RecipeError(f"{prefix}{path}:{n}: not valid JSON (nested too deeply)") from None
                except ValueError as e:  # an integer of more than 4300 digits
                    raise RecipeError(f"{prefix}{path}:{n}: not valid JSON ({str(e).splitlines()[0][:120]})") from None
                if not isinstance(obj, dict):
                    raise RecipeError(f"{prefix}{path}:{n}: expected a JSON object per line, got {type(obj).__name__}")
                yield n, obj
    except FileNotFoundError:
        raise RecipeError(f"{prefix}file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as e:
        shown = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise RecipeError(f"{prefix}cannot read {path} after line {n}: {shown}") from None
