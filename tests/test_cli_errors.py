"""Bad input through the real command line: a clear message naming file, line and field,
a non-zero exit, nothing half-written; or, with --skip-bad-rows, a recorded rejection."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from tests.helpers import free_port, run_cli

GOOD = [{"id": f"s{i}", "question": f"What is {i} + 1?", "answer": f"#### {i + 1}", "solution": f"{i} + 1 = {i + 1}"} for i in range(6)]


def write_recipe(tmp_path: Path, seeds: Path, **extra) -> Path:
    recipe = {
        "seeds": {"path": str(seeds), "response_field": "solution"},
        "prompt": {"template": "{{ question }}"},
        "verifiers": [{"type": "math_answer", "reference": "answer"}],
        "output": {"dir": str(tmp_path / "run"), "batch_size": 2},
        "report": {"embedding_model": None},
    }
    for key, value in extra.items():
        recipe[key] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def seeds_with(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "seeds.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def good_lines(rows=GOOD) -> list[bytes]:
    return [json.dumps(r).encode() for r in rows]


def assert_nothing_written(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for name in ("accepted.parquet", "rejected.parquet", "report.json", "README.md"):
        assert not (run / name).exists(), name
    assert not list(run.rglob(".*.tmp"))


def test_good_curate_run_exits_zero(tmp_path: Path):
    result = run_cli("run", str(write_recipe(tmp_path, seeds_with(tmp_path, good_lines()))), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "run" / "report.json").read_text())["accepted"] == 6


def test_missing_recipe_file(tmp_path: Path):
    result = run_cli("run", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1 and "nope.yaml: recipe not found" in result.stderr


def test_missing_seed_file(tmp_path: Path):
    result = run_cli("run", str(write_recipe(tmp_path, tmp_path / "missing.jsonl")))
    assert result.returncode == 1 and "seeds.path: file not found" in result.stderr and "missing.jsonl" in result.stderr
    assert_nothing_written(tmp_path)


def test_unknown_recipe_key(tmp_path: Path):
    path = write_recipe(tmp_path, seeds_with(tmp_path, good_lines()), outptu={"dir": "x"})
    result = run_cli("run", str(path))
    assert result.returncode == 1 and "outptu: unknown key (did you mean 'output'?)" in result.stderr
    assert_nothing_written(tmp_path)


def test_malformed_jsonl_line_fails_fast_with_file_and_line(tmp_path: Path):
    lines = good_lines()
    lines.insert(3, b'{"id": "broken", "question": ')
    seeds = seeds_with(tmp_path, lines)
    result = run_cli("run", str(write_recipe(tmp_path, seeds)), "--no-progress")
    assert result.returncode == 1
    assert f"{seeds}:4: bad_json" in " ".join(result.stderr.split())
    assert "--skip-bad-rows" in result.stderr
    assert_nothing_written(tmp_path)


def test_skip_bad_rows_records_each_with_its_reason(tmp_path: Path):
    lines = good_lines()
    lines.insert(1, b"{not json")
    lines.insert(3, b'{"id": "latin1", "question": "caf\xe9", "answer": "1", "solution": "1"}')
    lines.insert(5, json.dumps({"id": "noq", "answer": "#### 1", "solution": "1"}).encode())
    seeds = seeds_with(tmp_path, lines)
    result = run_cli("run", str(write_recipe(tmp_path, seeds)), "--no-progress", "--skip-bad-rows")
    assert result.returncode == 0, result.stderr
    rejected = pq.read_table(tmp_path / "run" / "rejected.parquet").to_pylist()
    reasons = sorted(r["reject_reason"] for r in rejected)
    assert reasons == [
        "bad_json: line 2: Expecting property name enclosed in double quotes at column 2",
        "missing_field: line 6: no field 'question'",
        "not_utf8: line 4: byte 33 of the line is not valid UTF-8",
    ]
    assert all(r["reject_stage"] == "read" for r in rejected)
    assert any(r["seed"].get("_raw") == "{not json\n" for r in rejected)  # the raw row is kept
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["accepted"] == 6 and report["funnel"][0] == {"stage": "seeds", "kind": "read", "in": 9, "out": 6}
    assert report["failures"] == {"bad_json": 1, "not_utf8": 1, "missing_field": 1}


def test_missing_field_fails_fast_naming_the_field(tmp_path: Path):
    seeds = seeds_with(tmp_path, good_lines() + [json.dumps({"id": "x", "question": "q", "solution": "1"}).encode()])
    result = run_cli("run", str(write_recipe(tmp_path, seeds)), "--no-progress")
    assert result.returncode == 1
    assert f"{seeds}:7: field 'answer': missing_field" in " ".join(result.stderr.split())


def test_non_utf8_row_fails_fast(tmp_path: Path):
    seeds = seeds_with(tmp_path, [b'{"id": "a", "question": "caf\xe9", "answer": "1", "solution": "1"}'])
    result = run_cli("run", str(write_recipe(tmp_path, seeds)), "--no-progress")
    assert result.returncode == 1 and f"{seeds}:1: not_utf8" in " ".join(result.stderr.split())


def test_unreachable_server_is_a_clear_error(tmp_path: Path):
    seeds = seeds_with(tmp_path, good_lines())
    path = write_recipe(tmp_path, seeds, teacher={"model": "m", "base_url": f"http://127.0.0.1:{free_port()}/v1"})
    recipe = yaml.safe_load(path.read_text())
    del recipe["seeds"]["response_field"]
    path.write_text(yaml.safe_dump(recipe))
    result = run_cli("run", str(path), "--no-progress")
    assert result.returncode == 1
    assert "cannot reach the server at http://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr
    assert_nothing_written(tmp_path)


def test_other_recipe_in_the_same_run_dir_is_refused(tmp_path: Path):
    seeds = seeds_with(tmp_path, good_lines())
    assert run_cli("run", str(write_recipe(tmp_path, seeds)), "--no-progress").returncode == 0
    path = write_recipe(tmp_path, seeds, prompt={"template": "Q: {{ question }}"})
    result = run_cli("run", str(path), "--no-progress")
    assert result.returncode == 1 and "holds a run of a different recipe" in result.stderr
    assert run_cli("run", str(path), "--no-progress", "--fresh").returncode == 0


def test_report_command(tmp_path: Path):
    assert run_cli("run", str(write_recipe(tmp_path, seeds_with(tmp_path, good_lines()))), "--no-progress").returncode == 0
    shown = run_cli("report", str(tmp_path / "run"))
    assert shown.returncode == 0 and "math_answer" in shown.stdout and "accepted 6 of 6" in shown.stdout
    as_json = run_cli("report", str(tmp_path / "run"), "--json")
    assert json.loads(as_json.stdout)["accepted"] == 6
    missing = run_cli("report", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "no report.json" in missing.stderr


def test_help_is_whole_at_80_columns():
    """Plain help (no boxes): nothing is cut off with an ellipsis, arguments read in capitals."""
    from tests.helpers import run_cli

    for command in (["distill", "--help"], ["run", "--help"], ["plan", "--help"]):
        done = run_cli(*command, env={"COLUMNS": "80"})
        assert done.returncode == 0, done.stderr
        assert "…" not in done.stdout and "╭" not in done.stdout
        assert all(len(line) <= 80 for line in done.stdout.splitlines())
    assert "RUN_DIR" in run_cli("distill", "--help", env={"COLUMNS": "80"}).stdout
