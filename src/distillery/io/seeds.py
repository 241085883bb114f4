"""Reading seeds: JSONL (optionally gzipped), Parquet, CSV, a saved Hugging Face
``datasets`` folder, or a Hub dataset name; plus sources registered by name
(``builtin:<name>``, see :func:`register_seed_source`).

Every row comes out as a :class:`SeedRow` (position, line, fields) or a :class:`BadRow`
(position, line, reason). Bad rows stop the run by default with an
:class:`~distillery.errors.InputError` naming file, line and field; the runner can instead
keep going and record each bad row as rejected (``--skip-bad-rows``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.errors import InputError, RecipeError

FORMATS = ("auto", "jsonl", "parquet", "csv", "hf", "hub", "builtin")


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

# name -> function(options: dict) -> iterator of dicts
_SEED_SOURCES: dict[str, Callable[[dict[str, Any]], Iterator[dict[str, Any]]]] = {}


def register_seed_source(name: str, loader: Callable[[dict[str, Any]], Iterator[dict[str, Any]]]) -> None:
    """Make ``builtin:<name>`` usable as ``seeds.path``; ``loader(options)`` yields seed dicts."""
    _SEED_SOURCES[name] = loader


def seed_sources() -> list[str]:
    """Names of the registered ``builtin:`` seed sources."""
    _load_builtin_sources()
    return sorted(_SEED_SOURCES)


def _load_builtin_sources() -> None:
    # The built-in task registers itself on import; import lazily to keep start-up cheap.
    try:
        import distillery.builtin.sources  # noqa: F401
    except ImportError:
        pass


def detect_format(path: str, fmt: str = "auto") -> str:
    """The reader to use for ``path``: ``fmt`` unless ``"auto"``, else by prefix/extension.

    Raises:
        RecipeError: the format cannot be told from the name.
    """
    if fmt != "auto":
        return fmt
    if path.startswith("builtin:"):
        return "builtin"
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return "hf"
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    raise RecipeError(
        f"seeds.path: cannot tell the format of {path!r}; set seeds.format to one of {', '.join(FORMATS[1:])}"
    )


@dataclass
class SeedReader:
    """Reads seeds from one source and applies field mapping, limit and shuffle.

    Args:
        path: file, folder, Hub dataset name (``format="hub"``) or ``builtin:<name>``.
        fmt: one of :data:`FORMATS`.
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
        if self.fmt in ("builtin", "hub"):
            return self.path.replace("builtin:", "").replace("/", "_")
        name = Path(self.path).name
        for ext in (".gz", ".jsonl", ".ndjson", ".json", ".parquet", ".csv"):
            if name.endswith(ext):
                name = name[: -len(ext)]
        return name

    def __iter__(self) -> Iterator[SeedItem]:
        items = self._raw()
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

    # -- readers: yield (line, dict | BadRow) ----------------------------------------------
    def _raw(self) -> Iterator[tuple[int | None, Any]]:
        reader = {
            "jsonl": self._jsonl,
            "parquet": self._parquet,
            "csv": self._csv,
            "hf": self._hf,
            "hub": self._hub,
            "builtin": self._builtin,
        }.get(self.fmt)
        if reader is None:
            raise RecipeError(f"seeds.format: unknown format {self.fmt!r}; use one of {', '.join(FORMATS)}")
        return reader()

    def _open_binary(self) -> io.BufferedIOBase:
        path = Path(self.path)
        if not path.exists():
            raise InputError(path, None, None, "file not found")
        if path.name.endswith(".gz"):
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return path.open("rb")

    def _jsonl(self) -> Iterator[tuple[int | None, Any]]:
        with self._open_binary() as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield lineno, BadRow(0, lineno, f"not_utf8: byte {e.start} of the line is not valid UTF-8")
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    yield lineno, BadRow(0, lineno, f"bad_json: {e.msg} at column {e.colno}", raw=text[:500])
                    continue
                if not isinstance(obj, dict):
                    yield lineno, BadRow(0, lineno, f"bad_json: expected an object, got {type(obj).__name__}")
                    continue
                yield lineno, obj

    def _csv(self) -> Iterator[tuple[int | None, Any]]:
        with self._open_binary() as fh:
            data = fh.read()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            raise InputError(self.path, line, None, "not valid UTF-8 (the whole CSV must be UTF-8)") from e
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for row in reader:
            line = reader.line_num
            if None in row:
                yield line, BadRow(0, line, "bad_csv: more values than header columns")
                continue
            yield line, dict(row)

    def _parquet(self) -> Iterator[tuple[int | None, Any]]:
        import pyarrow.parquet as pq

        path = Path(self.path)
        if not path.exists():
            raise InputError(path, None, None, "file not found")
        row = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for obj in batch.to_pylist():
                row += 1
                yield row, obj

    def _hf(self) -> Iterator[tuple[int | None, Any]]:
        import datasets

        path = Path(self.path)
        if not path.exists():
            raise InputError(path, None, None, "folder not found")
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if self.split is None:
                raise RecipeError(f"seeds.split: {path} holds splits {list(ds)}; name one")
            if self.split not in ds:
                raise RecipeError(f"seeds.split: {path} has no split {self.split!r} (has {list(ds)})")
            ds = ds[self.split]
        yield from self._dataset_rows(ds)

    def _hub(self) -> Iterator[tuple[int | None, Any]]:
        import datasets

        ds = datasets.load_dataset(self.path, self.subset, split=self.split or "train", streaming=True)
        yield from self._dataset_rows(ds)

    @staticmethod
    def _dataset_rows(ds: Any) -> Iterator[tuple[int | None, Any]]:
        for row, obj in enumerate(ds, start=1):
            yield row, dict(obj)

    def _builtin(self) -> Iterator[tuple[int | None, Any]]:
        _load_builtin_sources()
        name = self.path.removeprefix("builtin:")
        if name not in _SEED_SOURCES:
            raise RecipeError(f"seeds.path: no built-in seed source {name!r}; have {sorted(_SEED_SOURCES)}")
        yield from enumerate(_SEED_SOURCES[name](dict(self.options)), start=1)
