"""The seed formats: one reader per format, registered under kind ``seed_format``.

A format is a :class:`SeedFormat`: a name, the paths it claims when ``seeds.format`` is
``auto``, and ``read(reader)``, which yields ``(line, row)`` pairs where ``row`` is a dict of
the source's columns or a :class:`~distillery.io.seeds.BadRow` saying why it could not be
read (``line`` is the 1-based line or row number). Renaming, required fields, shuffle and
limit are the :class:`~distillery.io.seeds.SeedReader`'s, not the format's.

Add a format by registering an instance::

    registry.add("seed_format", "tsv", SeedFormat("tsv", read=read_tsv, suffixes=(".tsv",)))

``builtin:<name>`` paths read the seed sources registered under kind ``seed_source``: a
function ``options -> iterator of dicts``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillery import registry
from distillery.errors import InputError, RecipeError

if TYPE_CHECKING:
    from distillery.io.seeds import SeedReader

Rows = Iterator[tuple[int | None, Any]]


@dataclass(frozen=True)
class SeedFormat:
    """A registered seed format.

    Attributes:
        name: the ``seeds.format`` value.
        read: ``reader -> iterator of (line, dict | BadRow)``.
        suffixes: file name endings (lower case) this format claims under ``format: auto``.
        directories: claims folders under ``format: auto``.
        prefix: claims paths starting with it (``builtin:``).
        local: its paths are local files (resolved against the recipe's folder, checked to exist).
    """

    name: str
    read: Callable[[SeedReader], Rows]
    suffixes: tuple[str, ...] = ()
    directories: bool = False
    prefix: str | None = None
    local: bool = True

    def claims(self, path: str) -> bool:
        """Whether ``path`` is this format's under ``format: auto``."""
        if self.prefix is not None:
            return path.startswith(self.prefix)
        if self.directories and Path(path).is_dir():
            return True
        return bool(self.suffixes) and path.lower().endswith(self.suffixes) and not Path(path).is_dir()

    def source_name(self, path: str) -> str:
        """A short name for ids: the file's stem, or the source / dataset name."""
        if not self.local:
            return path.removeprefix(self.prefix or "").replace("/", "_")
        name = Path(path).name
        for ext in (".gz", *sorted(self.suffixes, key=len, reverse=True)):
            if name.lower().endswith(ext):
                name = name[: -len(ext)]
        return name


def _open_binary(path_text: str) -> io.BufferedIOBase:
    path = Path(path_text)
    if not path.exists():
        raise InputError(path, None, None, "file not found")
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def read_jsonl(reader: SeedReader) -> Rows:
    """One JSON object per line (``.jsonl``, ``.jsonl.gz``, ``.ndjson``, ``.json``); blank lines skipped."""
    from distillery.io.seeds import BadRow

    with _open_binary(reader.path) as fh:
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


def read_csv(reader: SeedReader) -> Rows:
    """A CSV file with a header row (``.csv``, ``.csv.gz``); values are strings."""
    from distillery.io.seeds import BadRow

    with _open_binary(reader.path) as fh:
        data = fh.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(reader.path, line, None, "not valid UTF-8 (the whole CSV must be UTF-8)") from e
    rows = csv.DictReader(io.StringIO(text, newline=""))
    for row in rows:
        line = rows.line_num
        if None in row:
            yield line, BadRow(0, line, "bad_csv: more values than header columns")
            continue
        yield line, dict(row)


def read_parquet(reader: SeedReader) -> Rows:
    """A Parquet file, streamed in record batches of 1024 rows."""
    import pyarrow.parquet as pq

    path = Path(reader.path)
    if not path.exists():
        raise InputError(path, None, None, "file not found")
    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for obj in batch.to_pylist():
            row += 1
            yield row, obj


def _dataset_rows(ds: Any) -> Rows:
    for row, obj in enumerate(ds, start=1):
        yield row, dict(obj)


def read_saved_dataset(reader: SeedReader) -> Rows:
    """A folder written by ``datasets``' ``save_to_disk`` (``seeds.split`` picks a split of a ``DatasetDict``)."""
    import datasets

    path = Path(reader.path)
    if not path.exists():
        raise InputError(path, None, None, "folder not found")
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if reader.split is None:
            raise RecipeError(f"seeds.split: {path} holds splits {list(ds)}; name one")
        if reader.split not in ds:
            raise RecipeError(f"seeds.split: {path} has no split {reader.split!r} (has {list(ds)})")
        ds = ds[reader.split]
    yield from _dataset_rows(ds)


def read_hub(reader: SeedReader) -> Rows:
    """A Hugging Face Hub dataset, streamed (``seeds.subset``, ``seeds.split``, default ``train``)."""
    import datasets

    ds = datasets.load_dataset(reader.path, reader.subset, split=reader.split or "train", streaming=True)
    yield from _dataset_rows(ds)


def read_builtin(reader: SeedReader) -> Rows:
    """A registered seed source (kind ``seed_source``), called with ``seeds.options``."""
    name = reader.path.removeprefix("builtin:")
    try:
        source = registry.get("seed_source", name)
    except registry.UnknownName as e:
        raise RecipeError(f"seeds.path: {e}") from None
    yield from enumerate(source(dict(reader.options)), start=1)


for _format in (
    SeedFormat("builtin", read_builtin, prefix="builtin:", local=False),
    SeedFormat("jsonl", read_jsonl, suffixes=(".jsonl", ".jsonl.gz", ".ndjson", ".json")),
    SeedFormat("parquet", read_parquet, suffixes=(".parquet",)),
    SeedFormat("csv", read_csv, suffixes=(".csv", ".csv.gz")),
    SeedFormat("hf", read_saved_dataset, directories=True),
    SeedFormat("hub", read_hub, local=False),
):
    registry.add("seed_format", _format.name, _format)
