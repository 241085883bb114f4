"""Checkpoint shards: merged accepted and rejected files share one seed schema."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from distillery.io.shards import ShardStore
from distillery.records import new_record


def _rec(i: int, seed: dict) -> dict:
    return new_record(id=f"r{i}", seed=seed)


def test_empty_accepted_still_concatenates_with_rejected(tmp_path):
    store = ShardStore(tmp_path / "shards")
    store.write(0, [], [_rec(0, {"question": "q0", "answer": 3})], {"n": 1})
    store.write(1, [], [_rec(1, {"question": "q1", "answer": 4.5})], {"n": 1})
    seed_type = store.seed_type("accepted", "rejected")
    assert seed_type == pa.struct([("question", pa.string()), ("answer", pa.float64())])
    assert store.merge("accepted", tmp_path / "a.parquet", seed_type=seed_type) == 0
    assert store.merge("rejected", tmp_path / "r.parquet", seed_type=seed_type) == 2
    table = pa.concat_tables([pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "r.parquet")])
    assert table.column("seed").to_pylist() == [{"question": "q0", "answer": 3.0}, {"question": "q1", "answer": 4.5}]
