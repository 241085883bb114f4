"""Checkpoint shards: the records of each finished seed batch, and the marker that says so.

Batch ``k`` is done exactly when ``shards/batch-<k>.json`` exists. Its records (accepted and
rejected, in the order the batch made them, before deduplication) are in
``batch-<k>.parquet``, written atomically before the marker is written. A
crash between the two leaves a shard without a marker; it is rewritten when the batch is
redone, so no record is ever counted twice.

A record that cannot be stored (a seed nested deeper than Parquet reads back, an integer
beyond 64 bits, a lone surrogate in a string) is kept as a rejected record (``unwritable:
...``) whose seed is its JSON text (strings made encodable), so a run directory never holds
a shard that cannot be read back: every shard is round-tripped through Parquet in memory
before it is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distillery.io.arrow import EMPTY_SEED, records_to_table, unify_types
from distillery.io.atomic import atomic_path, atomic_write_text, remove_stale_temporaries
from distillery.records import add_verdict

_MARKER = re.compile(r"batch-(\d+)\.json$")
_RAW_CHARS = 100_000


def _roundtrip(table: pa.Table) -> None:
    """Write ``table`` to Parquet in memory and read it back (raises what a reader would).

    Arrow's own buffers, not a Python file object: with ``io.BytesIO`` pyarrow 26 aborts the
    interpreter at exit ("terminate called without an active exception") in most runs.
    """
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    pq.read_table(pa.BufferReader(sink.getvalue()))


def _raw_text(value: Any) -> str:
    try:  # ASCII escapes: a lone surrogate stays as its \\uXXXX text
        text = json.dumps(value, ensure_ascii=True, default=str)
    except (ValueError, RecursionError, TypeError):
        try:
            text = ascii(value)
        except (RecursionError, ValueError):
            text = "<a value nested too deeply to print>"
    return text[:_RAW_CHARS]


def _scrub(value: Any) -> Any:
    """``value`` with every string made encodable (a lone surrogate becomes its ``\\udXXX`` text)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def storable(records: list[dict[str, Any]], extra: dict[str, pa.DataType] | None = None) -> pa.Table:
    """The table of ``records``, after making every record that cannot be stored and read back
    a rejected ``unwritable`` record whose seed is ``{"_raw": <its JSON text>}`` (in place).

    Raises:
        pyarrow.ArrowException: the records cannot be stored even so (a bug, not bad data).
    """
    try:
        table = records_to_table(records, extra=extra)
        _roundtrip(table)
        return table
    except (pa.ArrowException, OverflowError, ValueError, RecursionError, OSError):
        pass
    for record in records:
        try:
            _roundtrip(records_to_table([record], extra=extra))
        except (pa.ArrowException, OverflowError, ValueError, RecursionError, OSError) as e:
            message = _scrub(str(e).splitlines()[0][:300] if str(e) else type(e).__name__)
            record["seed"] = {"_raw": _raw_text(record.get("seed"))}
            for name, value in record.items():
                record[name] = _scrub(value)
            add_verdict(record, "write", "write", False, {"reason": f"unwritable: {type(e).__name__}: {message}"})
    table = records_to_table(records, extra=extra)
    _roundtrip(table)
    return table


class ShardStore:
    """The ``shards/`` folder of a run directory.

    Args:
        folder: the shards folder (created if missing).
        extra: Arrow types of the fields the run's strategy adds to records.
    """

    def __init__(self, folder: str | Path, extra: dict[str, pa.DataType] | None = None) -> None:
        self.folder = Path(folder)
        self.extra = dict(extra or {})
        self.folder.mkdir(parents=True, exist_ok=True)

    def clean(self) -> int:
        """Delete temporary files a killed writer left (only while no one writes); return how many."""
        return remove_stale_temporaries(self.folder)

    def _path(self, batch: int, suffix: str) -> Path:
        return self.folder / f"batch-{batch:06d}.{suffix}"

    def done(self) -> dict[int, dict[str, Any]]:
        """Finished batches: index -> the marker's content."""
        out = {}
        for p in sorted(self.folder.glob("batch-*.json")):
            m = _MARKER.search(p.name)
            if m:
                out[int(m.group(1))] = json.loads(p.read_text(encoding="utf-8"))
        return out

    def write(self, batch: int, records: list[dict[str, Any]], marker: dict[str, Any]) -> None:
        """Write a batch's records (made storable, see :func:`storable`), then its marker
        (each file atomically). ``marker["accepted"]`` / ``["rejected"]`` are set from the
        records as stored."""
        table = storable(records, self.extra)
        with atomic_path(self._path(batch, "parquet")) as tmp:
            pq.write_table(table, tmp)
        marker["accepted"] = sum(r["accepted"] for r in records)
        marker["rejected"] = len(records) - marker["accepted"]
        atomic_write_text(self._path(batch, "json"), json.dumps(marker, sort_keys=True))

    def clear(self) -> None:
        """Delete every shard and marker."""
        for p in self.folder.glob("batch-*"):
            p.unlink()

    def paths(self) -> list[Path]:
        """The records files of finished batches, in batch order."""
        return [self._path(b, "parquet") for b in sorted(self.done())]

    def read(self, batch: int) -> list[dict[str, Any]]:
        """The records of a finished batch, in the order they were made."""
        return pq.read_table(self._path(batch, "parquet")).to_pylist()

    def iter_batches(self) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """``(batch, records)`` of every finished batch, in batch order, one in memory at a time."""
        for b in sorted(self.done()):
            yield b, self.read(b)

    def seed_type(self) -> pa.DataType:
        """The ``seed`` column type that fits every finished shard (see :func:`unify_types`).

        Shards without seed fields (or without rows) do not constrain it; :data:`EMPTY_SEED`
        when none has any.
        """
        seed_type: pa.DataType | None = None
        for path in self.paths():
            meta = pq.read_metadata(path)
            t = meta.schema.to_arrow_schema().field("seed").type
            if meta.num_rows == 0 or t == EMPTY_SEED:
                continue
            seed_type = t if seed_type is None else unify_types(seed_type, t)
        return seed_type or EMPTY_SEED
