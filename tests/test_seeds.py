from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillery.errors import InputError
from distillery.io.seeds import BadRow, SeedReader, SeedRow

ROWS = [{"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(10)]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def good(reader) -> list[SeedRow]:
    return [r for r in reader if isinstance(r, SeedRow)]


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "parquet", "csv", "hf"])
def test_every_format_reads_the_same_rows(tmp_path: Path, fmt: str):
    if fmt == "jsonl":
        path = write_jsonl(tmp_path / "s.jsonl", ROWS)
    elif fmt == "jsonl.gz":
        path = tmp_path / "s.jsonl.gz"
        with gzip.open(path, "wt") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in ROWS)
    elif fmt == "parquet":
        path = tmp_path / "s.parquet"
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    elif fmt == "csv":
        path = tmp_path / "s.csv"
        path.write_text("id,question,answer\n" + "".join(f'{r["id"]},"{r["question"]}",{r["answer"]}\n' for r in ROWS))
    else:
        import datasets

        path = tmp_path / "ds"
        datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(path))
    reader = SeedReader(str(path), split="train" if fmt == "hf" else None)
    rows = good(reader)
    assert [r.data for r in rows] == ROWS
    assert [r.index for r in rows] == list(range(10))


def test_field_mapping_limit_and_shuffle(tmp_path: Path):
    path = write_jsonl(tmp_path / "s.jsonl", ROWS)
    rows = good(SeedReader(str(path), fields={"problem": "question"}, limit=3))
    assert len(rows) == 3 and rows[0].data["problem"] == ROWS[0]["question"] and "question" not in rows[0].data
    a = [r.data["id"] for r in good(SeedReader(str(path), shuffle_seed=1))]
    b = [r.data["id"] for r in good(SeedReader(str(path), shuffle_seed=1))]
    assert a == b and sorted(a) == sorted(r["id"] for r in ROWS) and a != [r["id"] for r in ROWS]


def test_malformed_json_line_is_a_bad_row_with_its_line(tmp_path: Path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{not json\n" + json.dumps(ROWS[1]) + "\n")
    items = list(SeedReader(str(path)))
    assert isinstance(items[1], BadRow) and items[1].line == 2 and items[1].reason.startswith("bad_json")
    assert items[1].raw == "{not json\n"
    assert [type(i) for i in items] == [SeedRow, BadRow, SeedRow]


def test_non_utf8_line(tmp_path: Path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(json.dumps(ROWS[0]).encode() + b"\n" + b'{"question": "caf\xe9"}\n')
    bad = list(SeedReader(str(path)))[1]
    assert isinstance(bad, BadRow) and bad.line == 2 and bad.reason.startswith("not_utf8")


def test_non_utf8_csv_names_the_line(tmp_path: Path):
    path = tmp_path / "s.csv"
    path.write_bytes(b"question,answer\nok,1\ncaf\xe9,2\n")
    with pytest.raises(InputError) as e:
        list(SeedReader(str(path)))
    assert e.value.line == 3 and "s.csv:3" in str(e.value)


def test_missing_required_field_names_the_field(tmp_path: Path):
    path = write_jsonl(tmp_path / "s.jsonl", [ROWS[0], {"id": "x", "answer": "1"}])
    items = list(SeedReader(str(path), required=("question", "answer")))
    assert isinstance(items[1], BadRow) and items[1].field == "question" and items[1].line == 2


def test_missing_file_raises_input_error(tmp_path: Path):
    with pytest.raises(InputError, match="file not found"):
        list(SeedReader(str(tmp_path / "none.jsonl")))
