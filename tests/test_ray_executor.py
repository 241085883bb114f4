"""``executor: ray`` on a real local Ray cluster (``ray start --head --num-cpus 2``): the arith
recipe gives the same records (ids, responses, verdicts) as the local executor, and a Ray run
killed midway, run again, finishes with the same result."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import REPO, VENV_BIN, free_port, run_cli

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A head node with 2 CPUs on 127.0.0.1 (token authentication off, as for a test cluster)."""
    temp = Path(f"/tmp/ray-{os.getpid()}")  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    started = subprocess.run(
        [str(VENV_BIN / "ray"), "start", "--head", "--num-cpus", "2", "--port", str(port), "--temp-dir", str(temp),
         "--include-dashboard", "false", "--disable-usage-stats"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    yield {"RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_AUTH_MODE": "disabled"}
    subprocess.run([str(VENV_BIN / "ray"), "stop", "--force"], capture_output=True, env=env, timeout=300)
    shutil.rmtree(temp, ignore_errors=True)


def _recipe(tmp_path: Path, name: str, executor: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({
        "name": "arith-ray",
        "seeds": {"path": "builtin:arith", "options": {"n": 48, "seed": 2}},
        "teacher": {"backend": "transformers", "model": "builtin:teacher", "batch_size": 16, "device": "cpu",
                    "sampling": {"temperature": 0.8, "top_p": 0.95, "max_tokens": 192, "seed": 0}},
        "generation": {"samples_per_prompt": 4, "accept_per_prompt": 1},
        "verifiers": [{"type": "python_program", "workers": 1}],
        "filters": [{"type": "length", "min_tokens": 8, "max_tokens": 192}],
        "dedup": [{"type": "exact"}, {"type": "minhash", "threshold": 0.9}],
        "decontamination": {"type": "ngram", "benchmarks": ["arith_test"]},
        "executor": executor,
        "output": {"dir": str(tmp_path / name), "batch_size": 6},
        "report": {"embedding_model": None},
    }))
    return path


def _records(run: Path) -> dict[str, tuple]:
    out = {}
    for part in ("accepted", "rejected"):
        for r in pq.read_table(run / f"{part}.parquet").to_pylist():
            verdicts = [(v["stage"], v["name"], v["passed"], json.loads(v["detail"]).get("reason")) for v in r["verdicts"]]
            out[r["id"]] = (part, r["response"], verdicts)
    return out


def test_ray_and_local_executors_write_the_same_run(ray_cluster, tmp_path: Path):
    local = run_cli("run", str(_recipe(tmp_path, "local", "local")), "--no-progress")
    assert local.returncode == 0, local.stderr[-3000:]
    on_ray = run_cli("run", str(_recipe(tmp_path, "ray", "ray")), "--no-progress", env=ray_cluster)
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    want = _records(tmp_path / "local")
    assert len(want) > 48 and _records(tmp_path / "ray") == want
    report = json.loads((tmp_path / "ray" / "report.json").read_text())
    assert report["executor"] == "ray" and report["batches"] == 8

    # killed midway (some batches finished, others on the workers), then run again
    path = _recipe(tmp_path, "killed", "ray")
    cmd = [str(VENV_BIN / "distillery"), "run", str(path), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
                            env=dict(os.environ, **ray_cluster))
    shards = tmp_path / "killed" / "shards"
    deadline = time.time() + 600
    while len(list(shards.glob("batch-*.json"))) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list(shards.glob("batch-*.json"))) < 8 and not (tmp_path / "killed" / "accepted.parquet").exists()
    again = run_cli("run", str(path), "--no-progress", env=ray_cluster)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _records(tmp_path / "killed") == want


def test_a_bad_seed_row_on_a_ray_worker_is_the_same_clear_error(ray_cluster, tmp_path: Path):
    seeds = tmp_path / "s.jsonl"
    seeds.write_text('{"id": "a", "question": "q", "answer": "x"}\n{"id": "b", "question": \n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "seeds": {"path": str(seeds), "response_field": "answer"},
        "executor": "ray",
        "output": {"dir": str(tmp_path / "run")},
        "report": {"embedding_model": None},
    }))
    done = run_cli("run", str(recipe), "--no-progress", env=ray_cluster)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"{seeds}:2: bad_json: Expecting value" in " ".join(done.stderr.split())
