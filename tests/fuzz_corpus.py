"""A corpus of malformed seed files, recipes and command lines (issue 12: bad input).

Each :class:`Case` is what a hostile or careless user could hand ``distillery``: truncated and
garbled JSONL, wrong encodings, byte-order marks, CRLF and CR line ends, NUL bytes, nesting
100,000 deep, integers beyond 64 bits, lone surrogates, CSV fields over 128 KiB, corrupt gzip
and Parquet files, directories where files belong, broken YAML, wrong types and out-of-range
values in the recipe, ``--set`` overrides that go nowhere, and commands naming things that do
not exist. :func:`corpus` returns them all (about 270); :func:`materialize` writes one into a
folder (``{dir}`` in its recipe and command line stands for that folder) and returns the
command line to run.

What each case expects (``Case.expect``):

- ``"error"``: exit status 1, one line ``error: ...`` that contains every string of
  ``Case.names`` (the file and line, the field, or the recipe key), no traceback, and nothing
  half-written in the run directory (no dataset, no report, no temporary file, every shard
  with its marker).
- ``"ok"``: the input is fine (a BOM, CRLF, a valid surrogate pair, ``2**63 - 1``): exit 0.
- ``"skip"``: run with ``--skip-bad-rows``: exit 0, and the bad row is a rejected ``read``
  record (``write`` for a value Parquet cannot store) that keeps (the start of) its raw text
  (``Case.raw`` is a piece of it).

Run it by hand: ``.venv/bin/python -m tests.fuzz_corpus /tmp/corpus`` writes every case into
its own folder and prints the command lines.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

GOOD_ROWS = [
    {"id": f"s{i}", "question": f"What is {i} + 1?", "answer": f"#### {i + 1}", "solution": f"{i} + 1 = {i + 1}"}
    for i in range(3)
]
"""Rows every seed file starts with; a bad row goes after them (so its line is 4)."""

BAD_LINE = 4


def good_jsonl() -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in GOOD_ROWS)


def base_recipe(seeds_path: str = "seeds.jsonl", **extra: Any) -> dict[str, Any]:
    """A curate recipe (no teacher): the seeds' own solutions, checked against their answers;
    ``extra`` replaces whole sections."""
    recipe: dict[str, Any] = {
        "seeds": {"path": seeds_path, "response_field": "solution"},
        "prompt": {"template": "{{ question }}"},
        "verifiers": [{"type": "math_answer", "reference": "answer"}],
        "dedup": [{"type": "exact"}],
        "output": {"dir": "run", "batch_size": 2},
        "report": {"embedding_model": None, "diversity_sample": 0},
    }
    recipe.update(extra)
    return recipe


@dataclass
class Case:
    """One malformed input.

    Attributes:
        name: unique, for test ids.
        files: relative path -> bytes (or ``None``: make a directory) written before the run.
        recipe: the recipe (a dict, dumped as YAML, or raw bytes), written to ``recipe.yaml``.
        args: the command line after ``distillery``; ``{dir}`` is replaced by the case's folder.
        expect: ``error``, ``ok`` or ``skip`` (see the module doc).
        names: strings the error line must contain (``{dir}`` replaced), e.g. ``seeds.jsonl:4``.
        raw: a piece of the raw text a ``skip`` case's rejected record keeps.
        needs: what the case still needs, where a fix lies outside the readers, the recipe
            loader and the command line (the test marks it an expected failure).
    """

    name: str
    files: dict[str, bytes | None] = field(default_factory=dict)
    recipe: dict[str, Any] | bytes | None = None
    args: list[str] = field(default_factory=lambda: ["run", "{dir}/recipe.yaml", "--no-progress"])
    expect: str = "error"
    names: tuple[str, ...] = ()
    raw: str | None = None
    needs: str | None = None


def materialize(case: Case, folder: Path) -> list[str]:
    """Write ``case``'s files and recipe into ``folder``; return its command line."""
    folder.mkdir(parents=True, exist_ok=True)
    for rel, content in case.files.items():
        p = folder / rel
        if content is None:
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
    if case.recipe is not None:
        recipe = case.recipe
        if isinstance(recipe, bytes):
            recipe = recipe.replace(b"{dir}", str(folder).encode())
        else:
            recipe = json.loads(json.dumps(recipe).replace("{dir}", str(folder)))
            seeds = recipe.get("seeds")
            if isinstance(seeds, dict) and isinstance(seeds.get("path"), str) and not seeds["path"].startswith(("builtin:", "/")):
                seeds["path"] = str(folder / seeds["path"])
            out = recipe.get("output")
            if isinstance(out, dict) and out.get("dir") == "run":
                out["dir"] = str(folder / "run")
            recipe = yaml.safe_dump(recipe).encode()
        (folder / "recipe.yaml").write_bytes(recipe)
    return [a.replace("{dir}", str(folder)) for a in case.args]


# -- seed rows --------------------------------------------------------------------------------


def nested(depth: int, kind: str = "list") -> str:
    """JSON text of a value nested ``depth`` levels deep."""
    if kind == "list":
        return "[" * depth + "1" + "]" * depth
    return '{"a": ' * depth + "1" + "}" * depth


def jsonl_with(bad: bytes, tail: bool = True) -> bytes:
    """The good rows, the bad line, and (``tail``) one more good row after it."""
    after = json.dumps({"id": "s9", "question": "What is 9 + 1?", "answer": "#### 10", "solution": "9 + 1 = 10"}).encode()
    return good_jsonl() + bad + b"\n" + (after + b"\n" if tail else b"")


def row(**fields: Any) -> dict[str, Any]:
    out = {"id": "bad", "question": "What is 1 + 1?", "answer": "#### 2", "solution": "1 + 1 = 2"}
    out.update(fields)
    return out


def _bad_jsonl_lines() -> dict[str, bytes]:
    """name -> one bad JSONL line (bytes, without its newline)."""
    full = json.dumps(row()).encode()
    lines: dict[str, bytes] = {f"truncated_at_{k}": full[:k] for k in (1, 2, 5, 9, 14, 20, 27, 33, 41, len(full) - 1)}
    lines.update({
        "array": b"[1, 2, 3]", "string": b'"a string"', "number": b"42", "null": b"null", "true": b"true",
        "trailing_comma": b'{"id": "x", "question": "q",}', "single_quotes": b"{'id': 'x', 'question': 'q'}",
        "comment": b'{"id": "x"} // comment', "two_objects": b'{"id": "x"} {"id": "y"}',
        "bad_escape": b'{"id": "x", "question": "a \\q b"}', "bad_unicode_escape": b'{"id": "x", "question": "\\uZZZZ"}',
        "control_char": b'{"id": "x", "question": "a\tb\x01"}', "nul_in_string": b'{"id": "x", "question": "a\x00b"}',
        "nul_outside": b'{"id": "x"}\x00', "unquoted_key": b'{id: "x"}', "missing_colon": b'{"id" "x"}',
        "missing_value": b'{"id": }', "fault_at_column_30": b'{"id": "x", "question": "q", ]',
        "leading_spaces_fault": b" " * 29 + b'{"id": ]', "only_brace": b"{", "only_close": b"}",
        "latin1": b'{"id": "x", "question": "caf\xe9"}', "cp1252_quote": b'{"id": "x", "question": "\x93hi\x94"}',
        "lone_continuation": b'{"id": "x", "question": "\x80"}', "overlong_slash": b'{"id": "x", "question": "\xc0\xaf"}',
        "truncated_multibyte": b'{"id": "x", "question": "\xe2\x82"}', "surrogate_utf8": b'{"id": "x", "question": "\xed\xa0\x80"}',
        "invalid_byte_ff": b'\xff{"id": "x"}',
        "deep_list_100k": nested(100_000).encode(), "deep_dict_100k": nested(100_000, "dict").encode(),
        "deep_list_500": json.dumps(row(question=None)).encode()[:-1] + b', "deep": ' + nested(500).encode() + b"}",
        "deep_field_200": json.dumps(row()).encode()[:-1] + b', "deep": ' + nested(200, "dict").encode() + b"}",
        "deep_field_1000": json.dumps(row()).encode()[:-1] + b', "deep": ' + nested(1000).encode() + b"}",
        "deep_question": b'{"id": "x", "answer": "#### 2", "solution": "2", "question": ' + nested(300, "dict").encode() + b"}",
        "int_2_63": json.dumps(row(n=2**63)).encode(), "int_2_64": json.dumps(row(n=2**64)).encode(),
        "int_neg": json.dumps(row(n=-(2**63) - 1)).encode(), "int_huge": json.dumps(row(n=10**400)).encode(),
        "int_id_2_70": json.dumps(row(id=2**70)).encode(), "int_nested": json.dumps(row(meta={"x": [1, 2**65]})).encode(),
        "int_answer_huge": json.dumps(row(answer=10**30)).encode(),
        "int_5000_digits": b'{"id": "x", "n": ' + b"9" * 5000 + b"}",
        "surrogate_question": json.dumps(row(question="a \ud800 b")).encode(),
        "surrogate_low": json.dumps(row(solution="\udfff")).encode(),
        "surrogate_key": json.dumps({**row(), "k\ud800": 1}).encode(),
        "surrogate_nested": json.dumps(row(meta=["\udbff"])).encode(),
        "surrogate_id": json.dumps(row(id="\ud800")).encode(),
        "missing_question": json.dumps({"id": "x", "answer": "#### 1", "solution": "1"}).encode(),
        "null_question": json.dumps(row(question=None)).encode(),
        "duplicate_id": json.dumps(row(id="s0")).encode(),
    })
    return lines


def seed_cases() -> list[Case]:
    """Bad JSONL rows: each stops a run naming file and line, and with ``--skip-bad-rows``
    becomes a rejected record keeping its raw text."""
    cases = []
    for name, line in _bad_jsonl_lines().items():
        files = {"seeds.jsonl": jsonl_with(line)}
        names = ("seeds.jsonl:4",)
        if name in ("missing_question", "null_question"):
            names += ("'question'",)
        if name == "duplicate_id":
            names += ("line 1",)
        cases.append(Case(f"jsonl_{name}", files, base_recipe(), names=names, expect="error"))
        keep = line[:40].decode("utf-8", "replace").replace("\ufffd", "")
        cases.append(Case(f"jsonl_{name}_skip", files, base_recipe(),
                          args=["run", "{dir}/recipe.yaml", "--no-progress", "--skip-bad-rows"], expect="skip",
                          raw=keep[:8] if keep.strip() and name not in ("missing_question", "null_question") else None))
    return cases


def _gz(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as fh:
        fh.write(data)
    return buf.getvalue()


def _csv(rows: list[dict[str, Any]], header: list[str] | None = None) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header or list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


def _parquet(rows: list[dict[str, Any]] | None = None, table: Any = None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table if table is not None else pa.Table.from_pylist(rows or GOOD_ROWS), sink)
    return sink.getvalue().to_pybytes()


def format_cases() -> list[Case]:
    """Whole files: encodings, line ends, gzip, CSV, Parquet, empty files, directories."""
    good = good_jsonl()
    gz = _gz(good)
    c: list[Case] = []
    j = base_recipe()
    # encodings and line ends of a whole JSONL file
    c += [
        Case("jsonl_bom", {"seeds.jsonl": b"\xef\xbb\xbf" + good}, j, expect="ok"),
        Case("jsonl_crlf", {"seeds.jsonl": good.replace(b"\n", b"\r\n")}, j, expect="ok"),
        Case("jsonl_bom_crlf", {"seeds.jsonl": b"\xef\xbb\xbf" + good.replace(b"\n", b"\r\n")}, j, expect="ok"),
        Case("jsonl_cr_only", {"seeds.jsonl": good.replace(b"\n", b"\r")}, j, names=("seeds.jsonl:1",)),
        Case("jsonl_no_final_newline", {"seeds.jsonl": good.rstrip(b"\n")}, j, expect="ok"),
        Case("jsonl_blank_lines", {"seeds.jsonl": b"\n\n" + good.replace(b"\n", b"\n\n")}, j, expect="ok"),
        Case("jsonl_valid_surrogate_pair", {"seeds.jsonl": good + json.dumps(row(question="smile \U0001f600")).encode() + b"\n"}, j, expect="ok"),
        Case("jsonl_int_2_63_minus_1", {"seeds.jsonl": good + json.dumps(row(n=2**63 - 1)).encode() + b"\n"}, j, expect="ok"),
        Case("jsonl_deep_ok", {"seeds.jsonl": good + json.dumps(row(meta=json.loads(nested(20, "dict")))).encode() + b"\n"}, j, expect="ok"),
        Case("jsonl_utf16le", {"seeds.jsonl": b"\xff\xfe" + good.decode().encode("utf-16-le")}, j, names=("seeds.jsonl:1",)),
        Case("jsonl_utf16be", {"seeds.jsonl": b"\xfe\xff" + good.decode().encode("utf-16-be")}, j, names=("seeds.jsonl:1",)),
        Case("jsonl_bom_midfile", {"seeds.jsonl": good + b"\xef\xbb\xbf" + json.dumps(row()).encode() + b"\n"}, j, names=("seeds.jsonl:4",)),
        Case("jsonl_all_nul", {"seeds.jsonl": b"\x00" * 64}, j, names=("seeds.jsonl:1",)),
        Case("jsonl_random_binary", {"seeds.jsonl": bytes(range(256)) * 4}, j, names=("seeds.jsonl:1",)),
        Case("jsonl_empty", {"seeds.jsonl": b""}, j, names=("seeds.jsonl", "no seed")),
        Case("jsonl_blank_only", {"seeds.jsonl": b"\n  \n\t\n"}, j, names=("seeds.jsonl", "no seed")),
        Case("jsonl_bom_only", {"seeds.jsonl": b"\xef\xbb\xbf\n"}, j, names=("seeds.jsonl", "no seed")),
        Case("jsonl_huge_string_ok", {"seeds.jsonl": good + json.dumps(row(question="x " * 300_000)).encode() + b"\n"}, j, expect="ok"),
    ]
    # gzip
    g = base_recipe("seeds.jsonl.gz")
    c += [
        Case("gz_ok", {"seeds.jsonl.gz": gz}, g, expect="ok"),
        Case("gz_concatenated_members_ok", {"seeds.jsonl.gz": _gz(good) + _gz(json.dumps(row()).encode() + b"\n")}, g, expect="ok"),
        Case("gz_truncated_half", {"seeds.jsonl.gz": gz[: len(gz) // 2]}, g, names=("seeds.jsonl.gz",)),
        Case("gz_truncated_tail", {"seeds.jsonl.gz": gz[:-4]}, g, names=("seeds.jsonl.gz",)),
        Case("gz_header_only", {"seeds.jsonl.gz": gz[:10]}, g, names=("seeds.jsonl.gz",)),
        Case("gz_corrupt_body", {"seeds.jsonl.gz": gz[:12] + bytes(b ^ 0x5A for b in gz[12:-8]) + gz[-8:]}, g, names=("seeds.jsonl.gz",)),
        Case("gz_bad_crc", {"seeds.jsonl.gz": gz[:-8] + b"\0\0\0\0" + gz[-4:]}, g, names=("seeds.jsonl.gz",)),
        Case("gz_not_gzip", {"seeds.jsonl.gz": good}, g, names=("seeds.jsonl.gz",)),
        Case("gz_zero_bytes", {"seeds.jsonl.gz": b""}, g, names=("seeds.jsonl.gz",)),
        Case("gz_empty_content", {"seeds.jsonl.gz": _gz(b"")}, g, names=("seeds.jsonl.gz", "no seed")),
        Case("gz_trailing_garbage", {"seeds.jsonl.gz": gz + b"garbage!"}, g, names=("seeds.jsonl.gz",)),
        Case("gz_bad_row_inside", {"seeds.jsonl.gz": _gz(jsonl_with(b"{broken"))}, g, names=("seeds.jsonl.gz:4",)),
        Case("gz_latin1_inside", {"seeds.jsonl.gz": _gz(jsonl_with(b'{"q": "caf\xe9"}'))}, g, names=("seeds.jsonl.gz:4",)),
        Case("gz_deep_inside", {"seeds.jsonl.gz": _gz(jsonl_with(nested(100_000).encode()))}, g, names=("seeds.jsonl.gz:4",)),
    ]
    # CSV
    cr = base_recipe("seeds.csv")
    big = "x" * (200 * 1024)
    csv_good = _csv(GOOD_ROWS)
    c += [
        Case("csv_ok", {"seeds.csv": csv_good}, cr, expect="ok"),
        Case("csv_bom_ok", {"seeds.csv": b"\xef\xbb\xbf" + csv_good}, cr, expect="ok"),
        Case("csv_crlf_ok", {"seeds.csv": csv_good.replace(b"\n", b"\r\n")}, cr, expect="ok"),
        Case("csv_field_over_128k_ok", {"seeds.csv": _csv([*GOOD_ROWS, row(question=big)])}, cr, expect="ok"),
        Case("csv_field_over_128k_unclosed", {"seeds.csv": csv_good + f'bad,"{big}'.encode()}, cr, names=("seeds.csv:5",)),
        Case("csv_unclosed_quote", {"seeds.csv": csv_good + b'bad,"what is 1,#### 2,2\n'}, cr, names=("seeds.csv:5",)),
        Case("csv_nul_byte", {"seeds.csv": csv_good + b"bad,wh\x00at,#### 2,2\n"}, cr, expect="ok"),
        Case("csv_latin1", {"seeds.csv": csv_good + b"bad,caf\xe9,#### 2,2\n"}, cr, names=("seeds.csv:5", "byte")),
        Case("csv_utf16", {"seeds.csv": b"\xff\xfe" + csv_good.decode().encode("utf-16-le")}, cr, names=("seeds.csv:1", "byte")),
        Case("csv_extra_values", {"seeds.csv": csv_good + b"bad,q,#### 2,2,extra\n"}, cr, names=("seeds.csv:5",)),
        Case("csv_missing_values", {"seeds.csv": csv_good + b"bad,q\n"}, cr, names=("seeds.csv:5", "answer")),
        Case("csv_header_only", {"seeds.csv": b"id,question,answer,solution\n"}, cr, names=("seeds.csv", "no seed")),
        Case("csv_empty", {"seeds.csv": b""}, cr, names=("seeds.csv", "no seed")),
        Case("csv_no_question_column", {"seeds.csv": _csv([{"id": "a", "answer": "#### 1", "solution": "1"}])}, cr,
             names=("seeds.csv:2", "question")),
        Case("csv_misspelled_column", {"seeds.csv": _csv([{"id": "a", "questoin": "q", "answer": "#### 1", "solution": "1"}])}, cr,
             names=("seeds.csv", "questoin")),
        Case("csv_duplicate_header", {"seeds.csv": b"id,question,question,answer,solution\na,q,q2,#### 1,1\n"}, cr,
             names=("seeds.csv:1", "question")),
        Case("csv_gz_truncated", {"seeds.csv.gz": _gz(csv_good)[:20]}, base_recipe("seeds.csv.gz"), names=("seeds.csv.gz",)),
        Case("csv_skip_extra_values", {"seeds.csv": csv_good + b"bad,q,#### 2,2,extra\n"}, cr,
             args=["run", "{dir}/recipe.yaml", "--no-progress", "--skip-bad-rows"], expect="skip", raw="bad,q"),
        Case("csv_skip_unclosed", {"seeds.csv": csv_good + b'bad,"oops\n'}, cr,
             args=["run", "{dir}/recipe.yaml", "--no-progress", "--skip-bad-rows"], expect="skip", raw="bad,"),
    ]
    # Parquet
    import pyarrow as pa

    pr = base_recipe("seeds.parquet")
    pq_good = _parquet()
    c += [
        Case("parquet_ok", {"seeds.parquet": pq_good}, pr, expect="ok"),
        Case("parquet_random_bytes", {"seeds.parquet": bytes(range(256)) * 8}, pr, names=("seeds.parquet",)),
        Case("parquet_text", {"seeds.parquet": good}, pr, names=("seeds.parquet",)),
        Case("parquet_zero_bytes", {"seeds.parquet": b""}, pr, names=("seeds.parquet",)),
        Case("parquet_truncated", {"seeds.parquet": pq_good[: len(pq_good) // 2]}, pr, names=("seeds.parquet",)),
        Case("parquet_truncated_footer", {"seeds.parquet": pq_good[:-3]}, pr, names=("seeds.parquet",)),
        Case("parquet_corrupt_middle", {"seeds.parquet": pq_good[:8] + b"\xff" * 64 + pq_good[72:]}, pr, names=("seeds.parquet",)),
        Case("parquet_no_rows", {"seeds.parquet": _parquet(table=pa.Table.from_pylist(GOOD_ROWS).slice(0, 0))}, pr,
             names=("seeds.parquet", "no seed")),
        Case("parquet_uint64_overflow", {"seeds.parquet": _parquet(table=pa.table({
            "id": ["a", "b"], "question": ["q1", "q2"], "answer": ["#### 1", "#### 2"], "solution": ["1", "2"],
            "n": pa.array([1, 2**64 - 1], pa.uint64())}))}, pr, names=("seeds.parquet:2", "'n'")),
        Case("parquet_question_missing", {"seeds.parquet": _parquet([{"id": "a", "answer": "#### 1", "solution": "1"}])}, pr,
             names=("seeds.parquet:1", "question")),
        Case("parquet_binary_column_ok", {"seeds.parquet": _parquet(table=pa.table({
            "id": ["a"], "question": ["q"], "answer": ["#### 1"], "solution": ["1"], "blob": pa.array([b"\x00\xff"])}))}, pr,
             expect="ok"),
    ]
    # directories and paths
    c += [
        Case("seeds_path_is_directory", {"seeds.jsonl": None}, j, names=("seeds.path", "seeds.jsonl")),
        Case("seeds_path_empty_dir", {"seeds": None}, base_recipe("seeds"), names=("seeds.path",)),
        Case("seeds_path_dir_with_junk", {"seeds/x.txt": b"hello"}, base_recipe("seeds"), names=("seeds.path",)),
        Case("seeds_path_fake_dataset", {"seeds/dataset_info.json": b"{bad", "seeds/state.json": b"[]"}, base_recipe("seeds"),
             names=("seeds",)),
        Case("seeds_unknown_suffix", {"seeds.txt": good}, base_recipe("seeds.txt"), names=("seeds.path", "seeds.format")),
        Case("seeds_missing", {}, base_recipe("nope.jsonl"), names=("seeds.path", "nope.jsonl")),
        Case("seeds_builtin_unknown", {}, base_recipe("builtin:nope"), names=("seeds.path", "nope")),
        Case("seeds_format_mismatch_csv_as_jsonl", {"seeds.jsonl": csv_good}, j, names=("seeds.jsonl:1",)),
        Case("seeds_format_forced_parquet_on_jsonl", {"seeds.jsonl": good},
             base_recipe(seeds={"path": "seeds.jsonl", "format": "parquet", "response_field": "solution"}), names=("seeds.jsonl",)),
        Case("seeds_format_forced_csv_on_gz", {"seeds.jsonl.gz": gz},
             base_recipe(seeds={"path": "seeds.jsonl.gz", "format": "csv", "response_field": "solution"}), expect="error",
             names=("seeds.jsonl.gz",)),
    ]
    return c


def _yaml_nested(depth: int, flow: bool) -> bytes:
    if flow:
        return b"seeds: {path: seeds.jsonl}\nx: " + b"[" * depth + b"]" * depth + b"\n"
    return b"seeds:\n  path: seeds.jsonl\nx:\n" + b"".join(b"  " * (i + 1) + b"a:\n" for i in range(depth)) + b"  " * (depth + 1) + b"1\n"


def recipe_cases() -> list[Case]:
    """Bad recipes: YAML, structure, types, values, files, templates, ``--set``."""
    seeds = {"seeds.jsonl": good_jsonl()}
    r = base_recipe
    c: list[Case] = []
    raw_yaml = {
        "yaml_unclosed_bracket": (b"seeds: {path: [\n", ("recipe.yaml:",)),
        "yaml_tab_indent": (b"seeds:\n\tpath: x\n", ("recipe.yaml:2",)),
        "yaml_bad_indent": (b"seeds:\n  path: x\n bad: 1\n", ("recipe.yaml:",)),
        "yaml_duplicate_anchor_missing": (b"seeds: *nope\n", ("recipe.yaml:1",)),
        "yaml_list_top": (b"- seeds\n- prompt\n", ("recipe.yaml",)),
        "yaml_scalar_top": (b"hello\n", ("recipe.yaml",)),
        "yaml_empty": (b"", ("recipe.yaml",)),
        "yaml_null": (b"null\n", ("recipe.yaml",)),
        "yaml_latin1": (b"name: caf\xe9\nseeds: {path: seeds.jsonl}\n", ("recipe.yaml", "byte")),
        "yaml_utf16": ("seeds: {path: seeds.jsonl}\n".encode("utf-16"), ("recipe.yaml",)),
        "yaml_nul": (b"seeds: {path: seeds.jsonl}\x00\n", ("recipe.yaml",)),
        "yaml_python_tag": (b"seeds: !!python/object/apply:os.system ['true']\n", ("recipe.yaml:1",)),
        "yaml_flow_deep_500": (_yaml_nested(500, True), ("recipe.yaml",)),
        "yaml_flow_deep_3k": (_yaml_nested(3_000, True), ("recipe.yaml",)),
        "yaml_flow_deep_20k": (_yaml_nested(20_000, True), ("recipe.yaml",)),
        "yaml_block_deep_3k": (_yaml_nested(3_000, False), ("recipe.yaml",)),
        "yaml_dict_deep_options": (b"seeds: {path: seeds.jsonl, response_field: solution, options: " + b"{a: " * 2000 + b"1" + b"}" * 2000 + b"}\n",
                                   ("recipe.yaml",)),
        "yaml_big_limit_ok": (b"seeds: {path: seeds.jsonl, response_field: solution, limit: 100000000000000000000000000000}\n"
                              b"report: {embedding_model: null}\noutput: {dir: run}\n", ()),
        "yaml_int_5000_digits": (b"seeds: {path: seeds.jsonl, limit: " + b"9" * 5000 + b"}\n", ("recipe.yaml",)),
        "yaml_seeds_string": (b"seeds: seeds.jsonl\n", ("seeds",)),
        "yaml_seeds_list": (b"seeds: [seeds.jsonl]\n", ("seeds",)),
        "yaml_seeds_missing": (b"prompt: {template: x}\n", ("seeds",)),
        "yaml_key_not_string": (b"seeds: {path: seeds.jsonl}\n1: 2\n", ("recipe.yaml", "1")),
        "yaml_bom_ok": (b"\xef\xbb\xbf" + yaml.safe_dump(r("seeds.jsonl")).encode(), ()),
        "yaml_crlf_ok": (yaml.safe_dump(r("seeds.jsonl")).replace("\n", "\r\n").encode(), ()),
    }
    for name, (text, names) in raw_yaml.items():
        ok = name.endswith("_ok")
        # relative seed paths resolve against the recipe's folder, output.dir against the current one
        text = text.replace(b"dir: run", b"dir: {dir}/run")
        case = Case(name, seeds, text, expect="ok" if ok else "error", names=names)
        if ok:
            case.files = dict(seeds)
        c.append(case)
    for case in c:  # output.dir inside the case folder
        if isinstance(case.recipe, bytes) and b"{dir}" in case.recipe:
            case.args = ["run", "{dir}/recipe.yaml", "--no-progress", "--output", "{dir}/run"]
    values = {
        "limit_zero": ({"seeds": {"path": "seeds.jsonl", "response_field": "solution", "limit": 0}}, ("seeds.limit",)),
        "limit_negative": ({"seeds": {"path": "seeds.jsonl", "response_field": "solution", "limit": -5}}, ("seeds.limit",)),
        "limit_string": ({"seeds": {"path": "seeds.jsonl", "response_field": "solution", "limit": "ten"}}, ("seeds.limit",)),
        "limit_float": ({"seeds": {"path": "seeds.jsonl", "response_field": "solution", "limit": 2.5}}, ("seeds.limit",)),
        "path_int": ({"seeds": {"path": 5, "response_field": "solution"}}, ("seeds.path",)),
        "path_null": ({"seeds": {"path": None, "response_field": "solution"}}, ("seeds.path",)),
        "path_list": ({"seeds": {"path": ["a"], "response_field": "solution"}}, ("seeds.path",)),
        "format_unknown": ({"seeds": {"path": "seeds.jsonl", "format": "xml", "response_field": "solution"}}, ("seeds.format",)),
        "fields_not_mapping": ({"seeds": {"path": "seeds.jsonl", "fields": ["a"], "response_field": "solution"}}, ("seeds.fields",)),
        "both_response_keys": ({"seeds": {"path": "seeds.jsonl", "response_field": "solution", "response_template": "{{ solution }}"}},
                               ("response_field",)),
        "shuffle_seed_string": ({"seeds": {"path": "seeds.jsonl", "response_field": "solution", "shuffle_seed": "x"}}, ("seeds.shuffle_seed",)),
        "batch_size_huge": ({"output": {"dir": "run", "batch_size": 10**20}}, ("output.batch_size",)),
        "batch_size_2_63": ({"output": {"dir": "run", "batch_size": 2**63}}, ("output.batch_size",)),
        "batch_size_zero": ({"output": {"dir": "run", "batch_size": 0}}, ("output.batch_size",)),
        "batch_size_negative": ({"output": {"dir": "run", "batch_size": -1}}, ("output.batch_size",)),
        "batch_size_bool": ({"output": {"dir": "run", "batch_size": True}}, ("output.batch_size",)),
        "batch_size_string": ({"output": {"dir": "run", "batch_size": "big"}}, ("output.batch_size",)),
        "output_not_mapping": ({"output": "run"}, ("output",)),
        "output_unknown_key": ({"output": {"dir": "run", "batchsize": 2}}, ("output.batchsize", "batch_size")),
        "prompt_not_mapping": ({"prompt": "{{ question }}"}, ("prompt",)),
        "template_syntax": ({"prompt": {"template": "{{ question "}}, ("prompt",)),
        "template_unknown_filter": ({"prompt": {"template": "{{ question | nofilter }}"}}, ("prompt",)),
        "template_zero_division": ({"prompt": {"template": "{{ 1/0 }} {{ question }}"}}, ("prompt.template",)),
        "template_raises_on_field": ({"prompt": {"template": "{{ question / 0 }}"}}, ("seeds.jsonl:1", "prompt.template")),
        "template_include": ({"prompt": {"template": "{% include 'x.jinja' %}{{ question }}"}}, ("prompt.template",)),
        "template_misspelled": ({"prompt": {"template": "{{ questoin }}"}}, ("questoin", "did you mean 'question'?")),
        "system_misspelled": ({"prompt": {"template": "{{ question }}", "system": "{{ answr }}"}}, ("answr", "did you mean 'answer'?")),
        "response_template_raises": ({"seeds": {"path": "seeds.jsonl", "response_template": "{{ 1/0 }}"}}, ("response_template",)),
        "response_template_syntax": ({"seeds": {"path": "seeds.jsonl", "response_template": "{% if %}"}}, ("response_template",)),
        "response_field_misspelled": ({"seeds": {"path": "seeds.jsonl", "response_field": "soluton"}}, ("soluton", "did you mean 'solution'?")),
        "few_shot_string": ({"prompt": {"template": "{{ question }}", "few_shot": "x"}}, ("prompt.few_shot",)),
        "few_shot_missing_key": ({"prompt": {"template": "{{ question }}", "few_shot": [{"user": "u"}]}}, ("prompt.few_shot.0.assistant",)),
        "verifiers_not_list": ({"verifiers": {"type": "math_answer"}}, ("verifiers",)),
        "verifier_unknown": ({"verifiers": [{"type": "magic"}]}, ("verifiers.0", "magic")),
        "verifier_no_type": ({"verifiers": [{"reference": "answer"}]}, ("verifiers.0",)),
        "verifier_reference_misspelled": ({"verifiers": [{"type": "math_answer", "reference": "anwser"}]}, ("anwser", "did you mean 'answer'?")),
        "verifier_entry_string": ({"verifiers": ["math_answer"]}, ("verifiers.0",)),
        "filter_min_tokens_negative": ({"filters": [{"type": "length", "min_tokens": -1}]}, ("filters.0.min_tokens",)),
        "filter_min_gt_max_tokens": ({"filters": [{"type": "length", "min_tokens": 10, "max_tokens": 5}]}, ("filters.0", "min_tokens", "max_tokens")),
        "filter_min_gt_max_chars": ({"filters": [{"type": "length", "min_chars": 10, "max_chars": 5}]}, ("filters.0", "min_chars", "max_chars")),
        "filter_max_tokens_negative": ({"filters": [{"type": "length", "max_tokens": -3}]}, ("filters.0.max_tokens",)),
        "filter_min_chars_negative": ({"filters": [{"type": "length", "min_chars": -3}]}, ("filters.0.min_chars",)),
        "filter_unknown": ({"filters": [{"type": "lenght"}]}, ("filters.0", "lenght")),
        "dedup_unknown": ({"dedup": [{"type": "fuzzy"}]}, ("dedup.0", "fuzzy")),
        "dedup_fields_string": ({"dedup": [{"type": "exact", "fields": 5}]}, ("dedup.0.fields",)),
        "decontam_unknown_benchmark": ({"decontamination": {"type": "ngram", "benchmarks": ["nope_test"]}}, ("decontamination",)),
        "decontam_missing_file": ({"decontamination": {"type": "ngram", "benchmarks": [{"path": "/nonexistent/b.jsonl"}]}},
                                  ("decontamination.benchmarks.0",)),
        "decontam_unknown_type": ({"decontamination": {"type": "exactish"}}, ("decontamination",)),
        "executor_unknown": ({"executor": "cluster"}, ("executor",)),
        "executor_int": ({"executor": 5}, ("executor",)),
        "strategy_unknown": ({"generation": {"strategy": "magic"}}, ("generation", "magic")),
        "generation_list": ({"generation": ["curate"]}, ("generation",)),
        "teacher_needed": ({"seeds": {"path": "seeds.jsonl"}}, ("teacher",)),
        "teacher_string": ({"teacher": "gpt"}, ("teacher",)),
        "stage_order_bad": ({"stage_order": "random"}, ("stage_order",)),
        "report_negative_sample": ({"report": {"diversity_sample": -1}}, ("report.diversity_sample",)),
        "pricing_string": ({"pricing": {"input_per_million": "cheap"}}, ("pricing.input_per_million",)),
        "budget_negative": ({"budget": {"max_requests": -1}}, ("budget.max_requests",)),
        "name_list": ({"name": ["a"]}, ("name",)),
        "unknown_top_key": ({"seedz": {}}, ("seedz",)),
        "two_stages_same_name": ({"verifiers": [{"type": "math_answer", "reference": "answer"},
                                                {"type": "math_answer", "reference": "answer"}]}, ("verifiers.1",)),
        "output_dir_under_file": ({"output": {"dir": "afile/run"}}, ("output.dir", "afile")),
        "output_dir_is_file": ({"output": {"dir": "afile"}}, ("output.dir", "afile")),
    }
    for name, (extra, names) in values.items():
        recipe = r(**extra)
        if "seeds" in extra and isinstance(extra["seeds"], dict) and "path" not in extra["seeds"]:
            recipe["seeds"]["path"] = "seeds.jsonl"
        files = dict(seeds)
        if "afile" in json.dumps(extra):
            files["afile"] = b"a file, not a folder\n"
            for key in ("dir", "cache"):
                v = recipe["output"].get(key)
                if isinstance(v, str) and v.startswith("afile"):
                    recipe["output"][key] = "{dir}/" + v
        case = Case(f"recipe_{name}", files, recipe, names=names)
        c.append(case)
    recipe_arg = [
        Case("recipe_arg_is_directory", {"recipe.yaml": None}, None, names=("recipe.yaml",)),
        Case("recipe_arg_missing", {}, None, names=("recipe.yaml",)),
        Case("recipe_arg_dev_null", {}, None, args=["run", "/dev/null", "--no-progress"], names=("/dev/null",)),
        Case("output_option_under_file", {**seeds, "afile": b"x"}, r(),
             args=["run", "{dir}/recipe.yaml", "--no-progress", "--output", "{dir}/afile/run"], names=("afile",)),
        Case("output_option_is_file", {**seeds, "afile": b"x"}, r(),
             args=["run", "{dir}/recipe.yaml", "--no-progress", "--output", "{dir}/afile"], names=("afile",)),
        Case("limit_option_zero", seeds, r(), args=["run", "{dir}/recipe.yaml", "--no-progress", "--limit", "0"], names=("seeds.limit",)),
        Case("limit_option_negative", seeds, r(), args=["run", "{dir}/recipe.yaml", "--no-progress", "--limit", "-2"], names=("seeds.limit",)),
    ]
    c += recipe_arg
    sets = {
        "seeds.path.x=1": ("seeds.path.x",),
        "verifiers.7.reference=answer": ("verifiers.7",),
        "verifiers.x.reference=answer": ("verifiers.x",),
        "verifiers.-1.reference=answer": ("verifiers.-1",),
        "noequals": ("noequals",),
        "=1": ("--set",),
        ".seeds=1": ("--set",),
        "seeds..path=1": ("--set",),
        "seeds.limit=abc": ("seeds.limit",),
        "seeds.limit=1e999": ("seeds.limit",),
        "output.batch_size=99999999999999999999999": ("output.batch_size",),
        "prompt=null": ("prompt",),
        "seeds=[]": ("seeds",),
        "seeds.path=": ("seeds.path",),
        "seeds.limit=-1": ("seeds.limit",),
        "name.first=x": ("name",),
        "filters.0.min_tokens=-1": ("filters.0",),
        "verifiers.0.reference.x=1": ("verifiers.0.reference.x",),
        "verifiers.0.type=nope": ("verifiers.0", "nope"),
        "output.batch_size=[1]": ("output.batch_size",),
        "seeds.path=" + "x" * 5000: ("seeds.path",),
    }
    for i, (item, names) in enumerate(sets.items()):
        c.append(Case(f"set_{i}_{item[:24]}", seeds, r(), args=["run", "{dir}/recipe.yaml", "--no-progress", "--set", item], names=names))
    c += [
        Case("set_list_index_works", seeds, r(verifiers=[{"type": "math_answer", "reference": "nothere"}]),
             args=["run", "{dir}/recipe.yaml", "--no-progress", "--set", "verifiers.0.reference=answer"], expect="ok"),
        Case("set_list_append_index", seeds, r(),
             args=["run", "{dir}/recipe.yaml", "--no-progress", "--set", 'verifiers.1={"type": "math_answer", "reference": "answer", "name": "m2"}'],
             expect="ok"),
        Case("set_new_section_ok", seeds, r(), args=["run", "{dir}/recipe.yaml", "--no-progress", "--set", "filters.0.type=length"],
             expect="ok"),
        Case("plan_bad_recipe", seeds, r(output={"dir": "run", "batch_size": 10**20}), args=["plan", "{dir}/recipe.yaml"],
             names=("output.batch_size",)),
        Case("plan_set_bad", seeds, r(), args=["plan", "{dir}/recipe.yaml", "--set", "seeds.path.x=1"], names=("seeds.path.x",)),
    ]
    return c


def command_cases() -> list[Case]:
    """Other commands naming things that do not exist."""
    return [
        Case("eval_builtin_nope", args=["eval", "builtin:nope"], names=("'nope'",)),
        Case("eval_task_nope", args=["eval", "builtin:teacher", "--task", "nope"], names=("nope",)),
        Case("eval_split_nope", args=["eval", "builtin:teacher", "--split", "nope"], names=("nope",)),
        Case("eval_missing_folder", args=["eval", "{dir}/no-model"], names=("no-model",)),
        Case("eval_folder_not_model", {"m/x.txt": b"hi"}, args=["eval", "{dir}/m"], names=("m",)),
        Case("report_missing", args=["report", "{dir}/nowhere"], names=("nowhere",)),
        Case("report_corrupt", {"run/report.json": b"{not json"}, args=["report", "{dir}/run"], names=("report.json",)),
        Case("report_is_file", {"run": b"x"}, args=["report", "{dir}/run"], names=("run",)),
        Case("report_not_utf8", {"run/report.json": b"\xff\xfe{}"}, args=["report", "{dir}/run"], names=("report.json",)),
        Case("experiment_nope", args=["experiment", "nope", "--out", "{dir}/x"], names=("nope",)),
        Case("distill_missing_run", args=["distill", "{dir}/nowhere", "--student", "builtin:student"], names=("nowhere",)),
        Case("distill_method_nope", {"run/report.json": b"{}"}, args=["distill", "{dir}/run", "--student", "builtin:student", "--method", "nope"],
             names=("nope",)),
        Case("builtin_eval_nope", args=["builtin", "eval", "builtin:nope"], names=("'nope'",)),
        Case("improve_restart_bad", args=["improve", "--restart", "sideways", "--out", "{dir}/x"], names=("--restart",)),
    ]


def corpus() -> list[Case]:
    """Every case (names are unique)."""
    cases = seed_cases() + format_cases() + recipe_cases() + command_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    return cases


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz-corpus")
    for case in corpus():
        print(case.name, case.expect, " ".join(materialize(case, root / case.name)))
