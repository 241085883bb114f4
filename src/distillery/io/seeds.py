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
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from distillery import registry
from distillery.errors import RecipeError


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
        items = registry.get("seed_format", self.fmt).read(self)
        if self.shuffle_seed is not None:
            pool = list(items)
            random.Random(self.shuffle_seed).shuffle(pool)
            items = iter(pool)
        for index, item in enumerate(items):
            if self.limit is not None and index >= self.limit:
                break
            line, row = item
            if isinstance(row, BadRow):
                row.index = index
                yield row
                continue
            yield self._finish(index, line, row)

    def _finish(self, index: int, line: int | None, row: dict[str, Any]) -> SeedItem:
        data = {self._rename.get(k, k): v for k, v in row.items()}
        for name in self.required:
            if data.get(name) is None:
                source = self.fields.get(name, name)
                return BadRow(index, line, f"missing_field: no field {source!r}", field=source)
        return SeedRow(index, line, data)
