"""Reading seeds: one :class:`SeedReader` over any registered seed format.

The formats (kind ``seed_format`` of :mod:`distillery.registry`, see
:mod:`distillery.io.readers`) are JSONL (optionally gzipped), Parquet, CSV, a saved Hugging
Face ``datasets`` folder, a Hub dataset name, and ``builtin:<name>`` sources (kind
``seed_source``). A format yields ``(line, dict | BadRow)``; the reader renames fields,
checks required ones, applies shuffle and limit.

Every row comes out as a :class:`SeedRow` (position, line, fields) or a :class:`BadRow`
(position, line, reason). Bad rows stop the run by default with an
:class:`~distillery.errors.InputError` naming file, line and field; the runner can instead
keep going and record each bad row as rejected (``--skip-bad-rows``).

The reader contract, the same for every format (a plugin's too): a row is a mapping with text
keys whose values distillery can process. :func:`check_row` makes any other row a bad row
naming the field: nesting deeper than :data:`MAX_DEPTH` levels (``too_deep``; Python's own
parsers fail near 1000), an integer outside the signed 64-bit range (``int_overflow``: Arrow,
SQLite and most JSON readers cannot hold it), a string with a lone surrogate such as
``"\\ud800"`` (``bad_unicode``: it has no UTF-8 form, so it can be neither sent nor stored), a
key that is not text (``bad_key``). A value that can be processed but not stored in Parquet
(nested more than about 100 levels) passes, and the shard store keeps its record as a rejected
``unwritable`` one with its text (:mod:`distillery.io.shards`). A source with no rows at all is
an :class:`~distillery.errors.InputError` (``no seed rows``); a first row lacking a required
field that it has under a close spelling is a :class:`~distillery.errors.RecipeError` before
any work (``did you mean 'question'?``).
"""

from __future__ import annotations

import difflib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from distillery import registry
from distillery.errors import InputError, RecipeError

MAX_DEPTH = 64
"""Most levels of lists and dicts inside a seed row's value (see the module doc): deep enough
for any real data, shallow enough that every recursive walk downstream stays far from Python's
recursion limit."""
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_RAW_CHARS = 500


@dataclass
class SeedRow:
    """One usable seed.

    Attributes:
        index: 0-based position in the source (after shuffling, the position in the shuffled order).
        line: 1-based line (JSONL, CSV) or row number (other formats) in the source file.
        data: the row's fields, renamed by the recipe's field mapping.
    """

    index: int
    line: int | None
    data: dict[str, Any]


@dataclass
class BadRow:
    """A row that could not be read; ``reason`` says why (``"<category>: <text>"``)."""

    index: int
    line: int | None
    reason: str
    field: str | None = None
    raw: str | None = None


SeedItem = SeedRow | BadRow


def _where(path: list[Any]) -> str:
    return ".".join(str(p) for p in path)


def check_row(row: Any) -> tuple[str | None, str] | None:
    """Why ``row`` breaks the reader contract (see the module doc), or ``None`` if it keeps it.

    Returns:
        ``(field, reason)``: the offending field as a dotted path (``meta.x.1``; ``None`` for
        the row itself) and ``"<category>: <text>"``.

    The walk is iterative (a row nested 100,000 deep is measured, not recursed into) and stops
    at the first fault.
    """
    if not isinstance(row, dict):
        return None, f"bad_row: expected a mapping of fields, got {type(row).__name__}"
    stack: list[tuple[Any, list[Any]]] = [(row, [])]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH + 1:
            return _where(path[:1]), f"too_deep: nested more than {MAX_DEPTH} levels"
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as e:
                    return _where(path), (f"bad_unicode: lone surrogate {ascii(value[e.start])[1:-1]} at character "
                                          f"{e.start + 1} (it has no UTF-8 form)")
        elif isinstance(value, bool) or value is None or isinstance(value, float):
            continue
        elif isinstance(value, int):
            if not _INT_MIN <= value <= _INT_MAX:
                digits = len(str(abs(value))) if abs(value) < 10**4000 else "over 4000"
                return _where(path), (f"int_overflow: an integer of {digits} digits does not fit in 64 bits "
                                      "(quote it to keep it as text)")
        elif isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    return _where(path), f"bad_key: key {k!r} is not a string"
                try:
                    k.encode("utf-8")
                except UnicodeEncodeError:
                    return _where(path), f"bad_unicode: key {ascii(k)} has a lone surrogate (it has no UTF-8 form)"
                stack.append((v, [*path, k]))
        elif isinstance(value, list | tuple):
            stack.extend((v, [*path, i]) for i, v in enumerate(value))
    return None


def raw_text(row: Any) -> str:
    """``row`` as (the start of) its JSON text, for a rejected record: ASCII escapes keep a lone
    surrogate as its ``\\udXXX`` text; a row too deep to print says so."""
    try:
        return json.dumps(row, ensure_ascii=True, default=str)[:_RAW_CHARS]
    except (ValueError, RecursionError, TypeError):
        try:
            return ascii(row)[:_RAW_CHARS]
        except (RecursionError, ValueError):
            return "<a value nested too deeply to print>"


def detect_format(path: str, fmt: str = "auto") -> str:
    """The reader to use for ``path``: ``fmt`` unless ``"auto"``, else by prefix/extension.

    Raises:
        RecipeError: the format cannot be told from the name.
    """
    formats = registry.items("seed_format")
    if fmt != "auto":
        if fmt not in formats:
            raise RecipeError(f"seeds.format: {registry.unknown_message('seed_format', fmt)}")
        return fmt
    for name, spec in formats.items():
        if spec.claims(path):
            return name
    raise RecipeError(
        f"seeds.path: cannot tell the format of {path!r}; set seeds.format to one of {', '.join(formats)}"
    )


@dataclass
class SeedReader:
    """Reads seeds from one source and applies field mapping, limit and shuffle.

    Args:
        path: file, folder, Hub dataset name (``format="hub"``) or ``builtin:<name>``.
        fmt: a registered seed format, or ``auto`` (from the path).
        fields: seed field name -> source column (unmapped columns are kept as they are).
        required: seed fields every row must have (after mapping); a row without one is bad.
        limit: stop after this many rows (good or bad).
        shuffle_seed: if set, rows are read whole and shuffled with this seed
            (memory: the whole source); otherwise rows stream.
        split, subset: the split / configuration of a ``datasets`` folder or Hub dataset.
        options: keyword options of a ``builtin:`` source.
    """

    path: str
    fmt: str = "auto"
    fields: dict[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    limit: int | None = None
    shuffle_seed: int | None = None
    split: str | None = None
    subset: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fmt = detect_format(self.path, self.fmt)
        self._rename = {src: dst for dst, src in self.fields.items()}

    @property
    def source_name(self) -> str:
        """A short name for ids: the file's stem, or the builtin / hub name."""
        return registry.get("seed_format", self.fmt).source_name(self.path)

    def __iter__(self) -> Iterator[SeedItem]:
        """The rows, in order (or shuffled), at most ``limit``.

        Raises:
            InputError: the source cannot be read, or holds no rows at all.
            RecipeError: the first row lacks a required field it has under a close spelling.
        """
        items = registry.get("seed_format", self.fmt).read(self)
        if self.shuffle_seed is not None:
            pool = list(items)
            random.Random(self.shuffle_seed).shuffle(pool)
            items = iter(pool)
        index = -1
        for index, item in enumerate(items):
            if self.limit is not None and index >= self.limit:
                break
            line, row = item
            if isinstance(row, BadRow):
                row.index = index
                yield row
                continue
            yield self._finish(index, line, row)
        if index < 0:
            raise InputError(self.path, None, None, "no seed rows (the source is empty)")

    def _finish(self, index: int, line: int | None, row: dict[str, Any]) -> SeedItem:
        fault = check_row(row)
        if fault is not None:
            where, reason = fault
            return BadRow(index, line, reason, field=where, raw=raw_text(row))
        data = {self._rename.get(k, k): v for k, v in row.items()}
        for name in self.required:
            if data.get(name) is None:
                source = self.fields.get(name, name)
                close = difflib.get_close_matches(source, [k for k in row if k != source and isinstance(k, str)], n=1, cutoff=0.8)
                if close and index == 0 and source not in row:
                    raise RecipeError(
                        f"the recipe reads seed field {source!r}, which {self.path}:{line or 1} does not have "
                        f"(did you mean {close[0]!r}? its fields are {', '.join(map(str, row))})"
                    )
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                return BadRow(index, line, f"missing_field: no field {source!r}{hint}", field=source, raw=raw_text(row))
        return SeedRow(index, line, data)
