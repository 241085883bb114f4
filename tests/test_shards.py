"""Checkpoint shards and the reduce: accepted and rejected files share one seed schema, and a
record that cannot be stored becomes a rejected record instead of an unreadable shard."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pyarrow.parquet as pq

from distillery.io.shards import ShardStore, storable
from distillery.pipeline.plan import Plan
from distillery.pipeline.reduce import reduce
from distillery.recipe import Recipe
from distillery.records import add_verdict, new_record


def _rejected(i: int, seed: dict) -> dict:
    record = new_record(id=f"r{i}", seed_id=f"r{i}", seed=seed)
    add_verdict(record, "filter", "length", False, {"reason": "too_short: 0 < 1"})
    return record


def test_empty_accepted_still_concatenates_with_rejected(tmp_path):
    recipe = Recipe.from_dict({"seeds": {"path": "builtin:arith", "response_field": "program"},
                               "output": {"dir": str(tmp_path)}})
    plan = Plan.make(recipe, tmp_path)
    store = ShardStore(tmp_path / "shards")
    store.write(0, [_rejected(0, {"question": "q0", "answer": 3})], {"n": 1})
    store.write(1, [_rejected(1, {"question": "q1", "answer": 4.5})], {"n": 1})
    assert store.seed_type() == pa.struct([("question", pa.string()), ("answer", pa.float64())])
    reduced = asyncio.run(reduce(plan, store, "hash"))
    assert (reduced["accepted"], reduced["rejected"]) == (0, 2)
    table = pa.concat_tables([pq.read_table(tmp_path / "accepted.parquet"), pq.read_table(tmp_path / "rejected.parquet")])
    assert table.column("seed").to_pylist() == [{"question": "q0", "answer": 3.0}, {"question": "q1", "answer": 4.5}]
    # a re-run over the same finished batches reuses the dataset it wrote
    assert asyncio.run(reduce(plan, store, "hash"))["reused"]


def _deep(depth: int) -> dict:
    node: dict = {"leaf": 1}
    for _ in range(depth):
        node = {"x": node}
    return node


def test_unstorable_records_become_rejected_records(tmp_path):
    """A seed nested 200 deep writes but cannot be read back by Parquet; an integer beyond
    64 bits cannot be written at all. Both are kept, rejected, with their text."""
    good = new_record(id="ok", seed={"question": "fine"}, response="r")
    deep = new_record(id="deep", seed={"question": "q", "tree": _deep(200)}, response="r")
    huge = new_record(id="huge", seed={"question": "q", "n": 2**64}, response="r")
    records = [good, deep, huge]
    table = storable(records)
    assert table.num_rows == 3 and good["accepted"]
    for r in (deep, huge):
        assert not r["accepted"] and r["reject_stage"] == "write" and r["reject_reason"].startswith("unwritable: ")
        assert set(r["seed"]) == {"_raw"}
    assert '"leaf": 1' in deep["seed"]["_raw"] and str(2**64) in huge["seed"]["_raw"]
    store = ShardStore(tmp_path / "shards")
    store.write(0, records, {"batch": 0})
    assert [r["id"] for r in store.read(0)] == ["ok", "deep", "huge"]
    assert store.done()[0]["accepted"] == 1 and store.done()[0]["rejected"] == 2
