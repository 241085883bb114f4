"""The run directory never loses data: one run at a time (a lock naming its holder, taken over
from a killed run), outputs readable by others (the user's umask), duplicate seed ids refused,
and records that cannot be stored kept as rejected records.

The slow teacher of the lock test is a real local HTTP server that holds its answers
(``tests/fault_server.py``): a model server cannot be made to stall on demand."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq

from tests.fault_server import FaultServer
from tests.helpers import REPO, VENV_BIN, run_cli


def _seeds(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _curate_recipe(tmp_path: Path, seeds: Path, out: str = "run") -> Path:
    path = tmp_path / f"{out}.yaml"
    path.write_text(json.dumps({
        "seeds": {"path": str(seeds), "response_field": "answer"},
        "filters": [{"type": "length", "min_chars": 1}],
        "dedup": [{"type": "exact"}],
        "output": {"dir": str(tmp_path / out), "batch_size": 2},
        "report": {"embedding_model": None},
    }))
    return path


def test_a_second_run_on_a_directory_in_use_refuses_and_a_killed_runs_lock_is_taken_over(tmp_path: Path):
    hold = {"seconds": 60.0}
    server = FaultServer(lambda n, body: ("hang", hold["seconds"]) if hold["seconds"] else ("ok", "#### 1"))
    try:
        seeds = _seeds(tmp_path / "s.jsonl", [{"id": f"s{i}", "question": f"q{i}", "answer": "#### 1"} for i in range(4)])
        recipe = tmp_path / "r.yaml"
        recipe.write_text(json.dumps({
            "seeds": {"path": str(seeds)},
            "teacher": {"model": server.model, "base_url": server.base_url, "timeout_s": 300},
            "verifiers": [{"type": "math_answer"}],
            "dedup": [{"type": "exact"}],
            "output": {"dir": str(tmp_path / "run"), "batch_size": 2},
            "report": {"embedding_model": None},
        }))
        cmd = [str(VENV_BIN / "distillery"), "run", str(recipe), "--no-progress"]
        first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        deadline = time.time() + 300
        while server.requests == 0:  # the first run holds the lock and waits for its teacher
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.1)
        second = run_cli("run", str(recipe), "--no-progress")
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert f"is in use by pid {first.pid}" in second.stderr
        assert not (tmp_path / "run" / "shards" / "batch-000000.json").exists()

        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        hold["seconds"] = 0.0
        third = run_cli("run", str(recipe), "--no-progress")
        assert third.returncode == 0, third.stderr[-3000:]
        assert f"taking over the lock left by pid {first.pid}" in " ".join(third.stderr.split())
        accepted = pq.read_table(tmp_path / "run" / "accepted.parquet").column("id").to_pylist()
        assert sorted(accepted) == [f"s{i}#0" for i in range(4)]  # nothing rejected as a duplicate of itself
        # a run that ended normally leaves no holder behind: the next one says nothing about a lock
        fourth = run_cli("run", str(recipe), "--no-progress")
        assert fourth.returncode == 0 and "taking over" not in fourth.stderr
    finally:
        server.close()


def _run_with_umask(recipe: Path, umask: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "distillery"), "run", str(recipe), "--no-progress"], capture_output=True, text=True,
        cwd=REPO, timeout=600, preexec_fn=lambda: os.umask(umask),
    )


def test_outputs_are_created_with_the_users_umask(tmp_path: Path):
    seeds = _seeds(tmp_path / "s.jsonl", [{"id": f"s{i}", "question": f"q{i}", "answer": f"a{i}"} for i in range(3)])
    for umask, mode in ((0o022, 0o644), (0o007, 0o660)):
        out = f"run{umask:o}"
        done = _run_with_umask(_curate_recipe(tmp_path, seeds, out), umask)
        assert done.returncode == 0, done.stderr[-3000:]
        run = tmp_path / out
        files = [run / n for n in ("accepted.parquet", "rejected.parquet", "report.json", "README.md", "recipe.yaml",
                                   "run.json")]
        files += list((run / "shards").iterdir())
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == mode, (f, oct(f.stat().st_mode))


def test_duplicate_seed_ids_are_an_error_naming_both_lines(tmp_path: Path):
    seeds = _seeds(tmp_path / "s.jsonl", [
        {"id": 1, "question": "a", "answer": "x"},
        {"id": 2, "question": "b", "answer": "y"},
        {"id": "1", "question": "c", "answer": "z"},
    ])
    recipe = _curate_recipe(tmp_path, seeds)
    done = run_cli("run", str(recipe), "--no-progress")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"{seeds}:3: field 'id': seed id '1' is also on line 1" in " ".join(done.stderr.split())
    assert not (tmp_path / "run" / "accepted.parquet").exists()
    skipped = run_cli("run", str(recipe), "--no-progress", "--skip-bad-rows")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    accepted = pq.read_table(tmp_path / "run" / "accepted.parquet").column("id").to_pylist()
    (dup,) = pq.read_table(tmp_path / "run" / "rejected.parquet").to_pylist()
    assert accepted == ["1", "2"]
    assert dup["reject_reason"] == "duplicate_id: line 3: seed id '1' is also on line 1"
    assert json.loads(dup["seed"]["_raw"]) == {"id": "1", "question": "c", "answer": "z"}


def test_a_seed_nested_too_deep_is_bad_input_or_with_skip_a_rejected_record(tmp_path: Path):
    """A seed nested 200 deep (Parquet cannot hold it): without --skip-bad-rows one line naming
    the file, line and field, exit 1, no dataset; with it, a rejected record keeping its raw text."""
    deep: dict = {"leaf": 1}
    for _ in range(200):
        deep = {"x": deep}
    seeds = _seeds(tmp_path / "s.jsonl", [
        {"id": "a", "question": "q", "answer": "fine"},
        {"id": "b", "question": "q2", "answer": "deep", "tree": deep},
        {"id": "c", "question": "q3", "answer": "also fine"},
    ])
    done = run_cli("run", str(_curate_recipe(tmp_path, seeds)), "--no-progress")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "s.jsonl:2" in done.stderr and "tree" in done.stderr and "too_deep" in done.stderr
    run = tmp_path / "run"
    assert not (run / "accepted.parquet").exists()
    done = run_cli("run", str(_curate_recipe(tmp_path, seeds)), "--no-progress", "--skip-bad-rows")
    assert done.returncode == 0, done.stderr[-3000:]
    accepted = pq.read_table(run / "accepted.parquet").column("id").to_pylist()
    (bad,) = pq.read_table(run / "rejected.parquet").to_pylist()
    assert accepted == ["a", "c"] and bad["reject_stage"] == "read" and "too_deep" in bad["reject_reason"]
    assert bad["seed"]["_raw"].startswith('{"id": "b"') and '"tree": {"x": {"x"' in bad["seed"]["_raw"]  # its text, capped
    for shard in (run / "shards").glob("*.parquet"):
        pq.read_table(shard)  # every shard reads back
