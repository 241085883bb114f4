"""Checkpoint shards: the records of each finished seed batch, and the marker that says so.

Batch ``k`` is done exactly when ``shards/batch-<k>.json`` exists. Its records are in
``batch-<k>.accepted.parquet`` and ``batch-<k>.rejected.parquet``, written (atomically)
before the marker. A crash between the two leaves shard files without a marker; they are
rewritten when the batch is redone, so no record is ever counted twice.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distillery.io.arrow import EMPTY_SEED, coerce, records_to_table, unify_types
from distillery.io.atomic import atomic_path, atomic_write_text, remove_stale_temporaries
from distillery.records import FIXED_TYPES, RECORD_FIELDS

_MARKER = re.compile(r"batch-(\d+)\.json$")


class ShardStore:
    """The ``shards/`` folder of a run directory.

    Args:
        folder: the shards folder (created if missing).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.folder)

    def _path(self, batch: int, part: str) -> Path:
        return self.folder / f"batch-{batch:06d}.{part}"

    def done(self) -> dict[int, dict[str, Any]]:
        """Finished batches: index -> the marker's content."""
        out = {}
        for p in sorted(self.folder.glob("batch-*.json")):
            m = _MARKER.search(p.name)
            if m:
                out[int(m.group(1))] = json.loads(p.read_text(encoding="utf-8"))
        return out

    def write(self, batch: int, accepted: list[dict[str, Any]], rejected: list[dict[str, Any]], marker: dict[str, Any]) -> None:
        """Write a batch's records, then its marker (each file atomically)."""
        for part, records in (("accepted", accepted), ("rejected", rejected)):
            path = self._path(batch, f"{part}.parquet")
            if records:
                table = records_to_table(records)
                with atomic_path(path) as tmp:
                    pq.write_table(table, tmp)
            else:
                path.unlink(missing_ok=True)
        atomic_write_text(self._path(batch, "json"), json.dumps(marker, sort_keys=True))

    def clear(self) -> None:
        """Delete every shard and marker."""
        for p in self.folder.glob("batch-*"):
            p.unlink()

    def paths(self, part: str) -> list[Path]:
        """The ``part`` (accepted / rejected) shard files of finished batches, in batch order."""
        return [p for b in sorted(self.done()) if (p := self._path(b, f"{part}.parquet")).exists()]

    def iter_records(self, part: str) -> Iterator[dict[str, Any]]:
        """Records of every finished batch's ``part`` shard, in order, one shard in memory at a time."""
        for path in self.paths(part):
            yield from pq.read_table(path).to_pylist()

    def seed_type(self, *parts: str) -> pa.DataType:
        """The ``seed`` column type that fits every shard of ``parts`` (see :func:`unify_types`).

        Shards without seed fields (or without rows) do not constrain it; :data:`EMPTY_SEED`
        when none has any.
        """
        seed_type: pa.DataType | None = None
        for part in parts:
            for path in self.paths(part):
                meta = pq.read_metadata(path)
                t = meta.schema.to_arrow_schema().field("seed").type
                if meta.num_rows == 0 or t == EMPTY_SEED:
                    continue
                seed_type = t if seed_type is None else unify_types(seed_type, t)
        return seed_type or EMPTY_SEED

    def merge(self, part: str, out: str | Path, jsonl: str | Path | None = None,
              seed_type: pa.DataType | None = None) -> int:
        """Concatenate the ``part`` shards into one Parquet file (and optionally JSONL).

        Seed types are unified across shards (or ``seed_type`` is used, e.g. one shared by
        the accepted and rejected files so they concatenate); memory holds one shard at a
        time. Returns the number of records written. Both outputs are written atomically.
        """
        paths = self.paths(part)
        seed_type = seed_type or self.seed_type(part)
        schema = pa.schema([(n, seed_type if n == "seed" else FIXED_TYPES[n]) for n in RECORD_FIELDS])
        count = 0
        with contextlib.ExitStack() as stack:
            tmp_parquet = stack.enter_context(atomic_path(out))
            jfh = None
            if jsonl:
                jfh = stack.enter_context(open(stack.enter_context(atomic_path(jsonl)), "w", encoding="utf-8"))
            writer = stack.enter_context(pq.ParquetWriter(tmp_parquet, schema))
            for path in paths:
                table = pq.read_table(path)
                if table.schema.field("seed").type != seed_type:
                    seeds = [coerce(s, seed_type) for s in table.column("seed").to_pylist()]
                    idx = table.schema.get_field_index("seed")
                    table = table.set_column(idx, "seed", pa.array(seeds, type=seed_type))
                writer.write_table(table.select(list(RECORD_FIELDS)).cast(schema))
                count += table.num_rows
                if jfh:
                    for rec in table.to_pylist():
                        jfh.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
        return count
