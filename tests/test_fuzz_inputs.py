"""Bad input never ends in a traceback (issue 12).

The corpus of :mod:`tests.fuzz_corpus` (malformed seed files, recipes and command lines) runs
through the real command line in this process (``typer.testing.CliRunner`` on the real app:
real files, real SQLite, real Parquet; one process, so the corpus takes seconds, not the
minutes of ~300 interpreter starts). Each case ends in exit 1 with one line naming the file
and line, the field or the recipe key, and nothing half-written; or, with
``--skip-bad-rows``, in rejected records that keep their raw text; or is accepted.

Then hypothesis: random bytes and random JSON values as seed files, random YAML values and
random ``--set`` overrides as recipes, each read through the real reader / loader, which must
give valid rows or :class:`~distillery.errors.DistilleryError`, never another exception.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from distillery.cli import app
from distillery.errors import DistilleryError
from distillery.io.arrow import records_to_table
from distillery.io.seeds import BadRow, SeedReader, SeedRow
from distillery.io.shards import storable
from distillery.recipe import Recipe
from distillery.records import new_record
from tests.fuzz_corpus import GOOD_ROWS, Case, base_recipe, corpus, good_jsonl, materialize

CASES = corpus()
FINAL_OUTPUTS = ("accepted.parquet", "rejected.parquet", "accepted.jsonl", "rejected.jsonl", "report.json", "README.md")


def invoke(argv: list[str]):
    return CliRunner().invoke(app, argv, catch_exceptions=True)


def describe(result) -> str:
    tb = ""
    if result.exc_info and not isinstance(result.exception, SystemExit):
        tb = "".join(traceback.format_exception(*result.exc_info))[-3000:]
    return f"exit {result.exit_code}\nstdout: {result.stdout[-1500:]}\nstderr: {result.stderr[-1500:]}\n{tb}"


def assert_nothing_half_written(folder: Path) -> None:
    """No dataset or report, no temporary file, and every shard has its marker and reads back."""
    assert not list(folder.rglob(".*.tmp")), list(folder.rglob(".*.tmp"))
    for name in FINAL_OUTPUTS:
        assert not list(folder.rglob(f"run/{name}")), name
    for shard in folder.rglob("shards/batch-*.parquet"):
        assert shard.with_suffix(".json").exists(), shard
        pq.read_table(shard)


def check(case: Case, folder: Path) -> None:
    argv = materialize(case, folder)
    result = invoke(argv)
    shown = describe(result)
    assert result.exception is None or isinstance(result.exception, SystemExit), shown
    assert "Traceback" not in result.output, shown
    if case.expect == "ok":
        assert result.exit_code == 0, shown
        return
    if case.expect == "skip":
        assert result.exit_code == 0, shown
        rejected = pq.read_table(folder / "run" / "rejected.parquet").to_pylist()
        read = [r for r in rejected if r["reject_stage"] in ("read", "write")]
        assert read, shown
        if case.raw is not None:
            assert any(case.raw in (r["seed"].get("_raw") or "") for r in read), [r["seed"] for r in read]
        accepted = pq.read_table(folder / "run" / "accepted.parquet").num_rows
        assert accepted >= len(GOOD_ROWS) - 1, shown  # the good rows (one may be a duplicate of the bad one)
        return
    assert result.exit_code == 1, shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    for name in case.names:
        assert name.replace("{dir}", str(folder)) in lines[0], (name, shown)
    assert "internal error" not in lines[0], shown
    if argv[0] in ("run", "plan"):
        assert_nothing_half_written(folder)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.xfail(reason=c.needs, strict=False)]
                                               if c.needs else []) for c in CASES])
def test_corpus_case(case: Case, tmp_path: Path):
    check(case, tmp_path)


def test_corpus_is_large_and_varied():
    kinds = {c.expect for c in CASES}
    assert len(CASES) >= 267 and kinds == {"error", "ok", "skip"}


# -- properties -------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def read_all(path: Path, **kwargs) -> list:
    """Every item of a reader, or the DistilleryError it raised (anything else fails the test)."""
    try:
        items = list(SeedReader(str(path), **kwargs))
    except DistilleryError as e:
        assert str(e) and "\n" not in str(e)
        return [e]
    for item in items:
        assert isinstance(item, SeedRow | BadRow)
        if isinstance(item, SeedRow):  # a valid row goes into a shard (as it is, or as an unwritable record)
            record = new_record(id="x", seed=item.data, response="r")
            storable([record])
            if record["accepted"]:  # stored as it is: it reads back the same
                assert records_to_table([record]).column("seed").to_pylist()[0] is not None
    return items


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".csv", ".parquet", ".jsonl.gz", ".csv.gz"]))
def test_reader_on_random_bytes(tmp_path: Path, data: bytes, suffix: str):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    read_all(path, required=("question",))


@PROPERTY
@given(values=st.lists(JSON, max_size=5), cut=st.integers(min_value=0, max_value=2000))
def test_reader_on_random_json_lines(tmp_path: Path, values: list, cut: int):
    text = "".join(json.dumps(v) + "\n" for v in values)
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(text.encode("utf-8", "surrogatepass")[: cut or None])
    read_all(path)


@PROPERTY
@given(rows=st.lists(st.dictionaries(st.sampled_from(["id", "question", "n", "x"]), JSON, max_size=4), max_size=4))
def test_reader_rows_are_storable(tmp_path: Path, rows: list):
    path = tmp_path / "fuzz.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8", errors="surrogatepass")
    read_all(path)


def load(tmp_path: Path, data, overrides: dict | None = None) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8", errors="surrogatepass")
    try:
        Recipe.from_yaml(path, overrides)
    except DistilleryError as e:
        assert str(e)


@PROPERTY
@given(value=JSON)
def test_recipe_loader_on_random_values(tmp_path: Path, value):
    (tmp_path / "seeds.jsonl").write_bytes(good_jsonl())
    load(tmp_path, value)
    load(tmp_path, {**base_recipe(str(tmp_path / "seeds.jsonl")), "seeds": value})


@PROPERTY
@given(text=st.text(max_size=200))
def test_recipe_loader_on_random_text(tmp_path: Path, text: str):
    load(tmp_path, text)


SECTIONS = st.sampled_from(["seeds", "prompt", "verifiers", "filters", "output", "dedup", "report", "teacher", "0", "x"])


@PROPERTY
@given(keys=st.lists(SECTIONS | st.integers(-2, 3).map(str) | st.text(max_size=5), min_size=1, max_size=4), value=JSON)
def test_recipe_overrides_never_crash(tmp_path: Path, keys: list[str], value):
    (tmp_path / "seeds.jsonl").write_bytes(good_jsonl())
    load(tmp_path, base_recipe(str(tmp_path / "seeds.jsonl")), {".".join(keys): value})


# -- the shared mechanisms, directly ---------------------------------------------------------


def test_row_contract_is_iterative_and_names_the_field():
    from distillery.io.seeds import MAX_DEPTH, check_row

    deep: object = 1
    for _ in range(100_000):  # far past any recursion limit: measured, not recursed into
        deep = [deep]
    assert check_row({"q": "x", "tree": deep})[0] == "tree"
    ok: object = 1
    for _ in range(MAX_DEPTH - 1):
        ok = {"a": ok}
    assert check_row({"tree": ok}) is None
    assert check_row({"meta": {"n": [1, 2**63]}}) == ("meta.n.1", check_row({"meta": {"n": [1, 2**63]}})[1])
    assert check_row({"meta": {"n": [1, 2**63]}})[1].startswith("int_overflow:")
    assert check_row({"n": 2**63 - 1, "m": -(2**63)}) is None
    assert check_row({"q": "a\ud800"})[1].startswith("bad_unicode: lone surrogate \\ud800 at character 2")
    assert check_row({"q": "smile \U0001f600"}) is None


def test_exact_dedup_hashes_a_lone_surrogate():
    from distillery.dedup.exact import text_hash

    assert text_hash("a \ud800") != text_hash("a \udfff") and len(text_hash("a \ud800")) == 20


def test_set_indexes_lists_and_names_what_is_wrong(tmp_path: Path):
    (tmp_path / "seeds.jsonl").write_bytes(good_jsonl())
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(base_recipe(str(tmp_path / "seeds.jsonl"))))
    r = Recipe.from_yaml(path, {"verifiers.0.reference": "question", "filters.0.type": "length",
                                "filters.0.max_chars": 99})
    assert r.verifiers[0].reference == "question" and r.filters[0].max_chars == 99
    for key, words in (("seeds.path.x", "seeds.path is a str"), ("verifiers.3.reference", "verifiers has 1 entries"),
                       ("verifiers.x", "'x' is not an index"), ("seeds..path", "names joined by dots")):
        with pytest.raises(DistilleryError, match=words):
            Recipe.from_yaml(path, {key: 1})
