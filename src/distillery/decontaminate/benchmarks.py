"""Benchmarks to decontaminate against: a registry of named loaders and a reader for files.

A benchmark is a loader: a callable with no arguments returning an iterable of
``(item_id, text)`` pairs, the text being what the index matches against (an id may
repeat when an item has several texts). Built-in, shipped with the package (see
``data/SOURCES.md``):

- ``gsm8k_test``: GSM8K test split (Cobbe et al., 2021), 1,319 items, ids ``gsm8k-test-<row>``;
  text = question + worked answer (calculator annotations ``<<...>>`` removed).
- ``math500``: MATH-500 (Hendrycks et al., 2021; the PRM800K subset), 500 items, ids =
  ``unique_id``; text = problem + solution.
- ``humaneval``: HumanEval (Chen et al., 2021), 164 items, ids = ``task_id``; text =
  prompt + canonical solution.

Benchmarks live in the one registry (kind ``benchmark``): other modules and plugins add
theirs with ``@register("benchmark", name="my_eval")`` on a loader, or
:func:`register_benchmark`; recipes may also name a file (:func:`read_benchmark_file`).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from distillery import registry
from distillery.errors import RecipeError
from distillery.io.jsonl import read_objects
from distillery.registry import register

BenchmarkLoader = Callable[[], Iterable[tuple[str, str]]]
"""A callable returning ``(item_id, text)`` pairs."""

_CALCULATOR = re.compile(r"<<[^<>]*>>")


def register_benchmark(name: str, loader: BenchmarkLoader, *, replace: bool = False) -> None:
    """Make ``loader`` available under ``name`` (in recipes: ``benchmarks: [<name>]``);
    the same as ``registry.add("benchmark", name, loader)``.

    Raises:
        ValueError: ``name`` is empty, or already names another loader and ``replace`` is false.
    """
    registry.add("benchmark", name, loader, replace=replace)


def unregister_benchmark(name: str) -> None:
    """Remove ``name`` from the registry (no-op when absent)."""
    registry.remove("benchmark", name)


def registered_benchmarks() -> list[str]:
    """Names of the registered benchmarks, sorted."""
    return registry.names("benchmark")


def load_benchmark(name: str) -> list[tuple[str, str]]:
    """The ``(item_id, text)`` pairs of the registered benchmark ``name``.

    Raises:
        UnknownName: no benchmark of that name (the message lists the registered ones).
    """
    return [(str(item_id), text) for item_id, text in registry.get("benchmark", name)()]


def packaged_rows(*parts: str) -> Iterator[dict[str, Any]]:
    """Rows of a benchmark file shipped in the package, e.g. ``packaged_rows("gsm8k", "test.jsonl.gz")``."""
    path = resources.files("distillery.decontaminate").joinpath("data", *parts)
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


@register("benchmark", name="gsm8k_test")
def _gsm8k_test() -> Iterator[tuple[str, str]]:
    for row in packaged_rows("gsm8k", "test.jsonl.gz"):
        yield row["id"], row["question"] + "\n" + _CALCULATOR.sub("", row["answer"])


@register("benchmark", name="math500")
def _math500() -> Iterator[tuple[str, str]]:
    for row in packaged_rows("math500", "test.jsonl.gz"):
        yield row["unique_id"], row["problem"] + "\n" + row["solution"]


@register("benchmark", name="humaneval")
def _humaneval() -> Iterator[tuple[str, str]]:
    for row in packaged_rows("humaneval", "HumanEval.jsonl.gz"):
        yield row["task_id"], row["prompt"] + row["canonical_solution"]


@register("benchmark", name="arith_test")
def _arith_test() -> Iterator[tuple[str, str]]:
    # the built-in task's held-out questions (its gold programs are not searched: programs of
    # one template differ only in numbers and would match each other's 13-grams by shape)
    from distillery.builtin.arith import test_set

    for problem in test_set():
        yield problem.id, problem.question



def read_benchmark_file(
    path: str | Path, text_fields: list[str], id_field: str | None = None, name: str | None = None
) -> list[tuple[str, str]]:
    """Read a benchmark from a JSONL, JSONL.gz or Parquet file.

    Args:
        path: the file (``.jsonl``, ``.jsonl.gz`` or ``.parquet``).
        text_fields: fields whose values, joined by ``"\\n"``, form an item's text
            (``None`` values count as empty).
        id_field: field holding the item id; default ``"<name>-<row>"`` (0-based row).
        name: prefix of default ids; default the file name without its suffixes.

    Returns:
        ``(item_id, text)`` pairs in file order.

    Raises:
        RecipeError: the file is missing, has an unsupported suffix, cannot be parsed, or
            a row lacks a field (message names the file, line and field).
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"decontamination benchmark file not found: {path}")
    if not text_fields:
        raise RecipeError(f"{path}: text_fields must name at least one field")
    prefix = name or path.name.split(".")[0]
    suffix = path.name.lower()
    if suffix.endswith(".parquet"):
        rows: Iterable[tuple[int, dict[str, Any]]] = _parquet_rows(
            path, [*text_fields, *([id_field] if id_field else [])]
        )
    elif suffix.endswith((".jsonl", ".jsonl.gz")):
        rows = _jsonl_rows(path)
    else:
        raise RecipeError(f"{path}: benchmark files must be .jsonl, .jsonl.gz or .parquet")
    items = []
    for line, row in rows:
        for key in (*text_fields, *([id_field] if id_field else [])):
            if key not in row:
                raise RecipeError(
                    f"{path}:{line}: benchmark row has no field {key!r} (fields: {sorted(row)})"
                )
        text = "\n".join("" if row[k] is None else str(row[k]) for k in text_fields)
        item_id = str(row[id_field]) if id_field else f"{prefix}-{len(items)}"
        items.append((item_id, text))
    return items


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    return read_objects(path)


def _parquet_rows(path: Path, columns: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for unreadable files
        raise RecipeError(f"{path}: cannot read Parquet: {e}") from e
    missing = [c for c in columns if c not in pf.schema_arrow.names]
    if missing:
        raise RecipeError(
            f"{path}: benchmark file has no column {missing[0]!r} (columns: {pf.schema_arrow.names})"
        )
    row_no = 0
    for batch in pf.iter_batches(columns=list(dict.fromkeys(columns))):
        for row in batch.to_pylist():
            row_no += 1
            yield row_no, row
