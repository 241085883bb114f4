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
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillery import registry
from distillery.errors import InputError, RecipeError

if TYPE_CHECKING:
    from distillery.io.seeds import SeedReader

Rows = Iterator[tuple[int | None, Any]]
_CSV_FIELD_LIMIT = 1 << 30


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


_BOM = b"\xef\xbb\xbf"


def _open_binary(path_text: str) -> io.BufferedIOBase:
    path = Path(path_text)
    if not path.exists():
        raise InputError(path, None, None, "file not found")
    if path.is_dir():
        raise InputError(path, None, None, "seeds.path: is a folder, not a file (a saved datasets folder needs format: hf)")
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _read_fault(path: Path, e: BaseException) -> str:
    """What a failed read of ``path`` means, in words (gzip faults are named as such)."""
    text = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    if path.name.lower().endswith(".gz"):
        if isinstance(e, EOFError):
            return f"the gzip file is truncated ({text})"
        if isinstance(e, gzip.BadGzipFile) and "Not a gzipped file" in text:
            return f"not a gzip file, or garbage after its end ({text})"
        return f"the gzip file is corrupt ({text})"
    return f"cannot read the file ({text})"


def _lines(path_text: str) -> Iterator[tuple[int, bytes]]:
    """``(1-based line, bytes)`` of a file (gunzipped when its name ends in ``.gz``); a fault
    while reading (a truncated or corrupt ``.gz``, an I/O error) is an :class:`InputError`
    naming the line that could not be read."""
    path = Path(path_text)
    lineno = 0
    try:
        with _open_binary(path_text) as fh:
            for lineno, raw in enumerate(fh, start=1):
                yield lineno, raw
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(path, lineno + 1, None, _read_fault(path, e)) from None


def read_jsonl(reader: SeedReader) -> Rows:
    """One JSON object per line (``.jsonl``, ``.jsonl.gz``, ``.ndjson``, ``.json``); blank lines
    skipped, a UTF-8 byte-order mark at the start accepted. A line that is not UTF-8, not JSON,
    not an object, or nested too deep for the parser is a bad row keeping its raw text."""
    from distillery.io.seeds import BadRow

    for lineno, raw in _lines(reader.path):
        if lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            shown = raw.decode("utf-8", "backslashreplace")[:500]
            yield lineno, BadRow(0, lineno, f"not_utf8: byte {e.start} of the line is not valid UTF-8", raw=shown)
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield lineno, BadRow(0, lineno, f"bad_json: {e.msg} at column {e.colno}", raw=text[:500])
            continue
        except RecursionError:
            yield lineno, BadRow(0, lineno, "too_deep: nested too deeply to parse", raw=text[:500])
            continue
        except ValueError as e:  # an integer of more than 4300 digits (Python's limit on int(str))
            yield lineno, BadRow(0, lineno, f"int_overflow: {str(e).splitlines()[0][:120]}", raw=text[:500])
            continue
        if not isinstance(obj, dict):
            yield lineno, BadRow(0, lineno, f"bad_json: expected an object, got {type(obj).__name__}", raw=text[:500])
            continue
        yield lineno, obj


class _TrackedLines:
    """The lines of a text, counted, remembering those read since :meth:`take` (a row's raw text)."""

    def __init__(self, text: str) -> None:
        self._lines = iter(io.StringIO(text, newline=""))
        self.count = 0
        self._taken: list[str] = []

    def __iter__(self) -> _TrackedLines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.count += 1
        self._taken.append(line)
        return line

    def take(self) -> str:
        out, self._taken = "".join(self._taken), []
        return out


def read_csv(reader: SeedReader) -> Rows:
    """A CSV file with a header row (``.csv``, ``.csv.gz``); values are strings, a missing
    trailing value is ``None``; a UTF-8 byte-order mark is accepted, fields may be of any size.

    A row with more values than the header, or malformed quoting, is a bad row keeping its raw
    text; its line is the row's first line.

    Raises:
        InputError: the file is not UTF-8 (naming the line and the byte offset), or its header
            names a column twice.
    """
    from distillery.io.seeds import BadRow

    path = Path(reader.path)
    data = b"".join(raw for _, raw in _lines(reader.path))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        offset = e.start - (data.rfind(b"\n", 0, e.start) + 1)
        raise InputError(path, line, None, f"not valid UTF-8 at byte offset {offset} of the line (byte offset "
                                           f"{e.start} of the file; the whole CSV must be UTF-8)") from None
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))  # the default 128 KiB is no limit for a document
    lines = _TrackedLines(text)
    rows = csv.reader(lines, strict=True)
    try:
        header = next(rows, None)
    except csv.Error as e:
        raise InputError(path, 1, None, f"bad_csv: the header row cannot be read: {e}") from None
    if header is None:
        return
    lines.take()
    twice = next((name for i, name in enumerate(header) if name in header[:i]), None)
    if twice is not None:
        raise InputError(path, 1, twice, "the header names this column twice")
    while True:
        before = lines.count
        try:
            values = next(rows)
        except StopIteration:
            return
        except csv.Error as e:
            yield before + 1, BadRow(0, before + 1, f"bad_csv: {e}", raw=lines.take()[:500])
            if lines.count == before:
                return
            continue
        raw = lines.take()
        if not values:  # a blank line
            continue
        line = before + 1
        if len(values) > len(header):
            yield line, BadRow(0, line, f"bad_csv: {len(values)} values but {len(header)} header columns", raw=raw[:500])
            continue
        yield line, dict(zip(header, values + [None] * (len(header) - len(values)), strict=True))


def read_parquet(reader: SeedReader) -> Rows:
    """A Parquet file, streamed in record batches of 1024 rows.

    Raises:
        InputError: not a Parquet file, or one that is truncated or corrupt (naming the first
            row that could not be read).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(reader.path)
    if not path.exists():
        raise InputError(path, None, None, "file not found")
    if path.is_dir():
        raise InputError(path, None, None, "seeds.path: is a folder, not a Parquet file")
    row = 0
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        for batch in batches:
            for obj in batch.to_pylist():
                row += 1
                yield row, obj
    except (pa.ArrowException, OSError) as e:
        text = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise InputError(path, row + 1 if row else None, None, f"not a readable Parquet file ({text})") from None


def _dataset_rows(ds: Any) -> Rows:
    for row, obj in enumerate(ds, start=1):
        yield row, dict(obj)


def read_saved_dataset(reader: SeedReader) -> Rows:
    """A folder written by ``datasets``' ``save_to_disk`` (``seeds.split`` picks a split of a ``DatasetDict``)."""
    import datasets

    path = Path(reader.path)
    if not path.exists():
        raise InputError(path, None, None, "folder not found")
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 (datasets' many ways to refuse a folder are all "not a dataset")
        text = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise InputError(path, None, None, f"seeds.path: not a folder written by datasets' save_to_disk ({text})") from None
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
