"""Wall time of the arith recipe (``recipes/arith.yaml``, the embedded default) under the local
and the Ray executor, interleaved, each from an empty run directory and cache, and whether
both wrote the same records.

The Ray runs start their own local cluster (``executor: {type: ray, num_cpus: N}``: one actor
per CPU, each loading the built-in teacher and its own sandbox pool). On a 2-core machine the
point is the seam and its correctness, not speed: both executors share the same 2 cores.

    python benchmarks/executors.py --seeds 1000 --repeats 2 --cpus 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DISTILLERY = Path(sys.executable).parent / "distillery"


def records(run: Path) -> dict[str, tuple]:
    """id -> (part, response, verdict names and outcomes) of a finished run."""
    out = {}
    for part in ("accepted", "rejected"):
        for r in pq.read_table(run / f"{part}.parquet").to_pylist():
            out[r["id"]] = (part, r["response"], [(v["name"], v["passed"]) for v in r["verdicts"]])
    return out


def run_once(executor: str, seeds: int, cpus: int, out: Path) -> float:
    executor_value = json.dumps({"type": "ray", "num_cpus": cpus}) if executor == "ray" else "local"
    cmd = [str(DISTILLERY), "run", str(REPO / "recipes/arith.yaml"), "--no-progress", "--output", str(out),
           "--set", f"seeds.options.n={seeds}", "--set", f"executor={executor_value}",
           "--set", "report.embedding_model=null"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, RAY_AUTH_MODE="disabled"))
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{executor} run failed:\n{done.stderr[-3000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        first: dict[str, dict] = {}
        for i in range(args.repeats):
            for executor in (("local", "ray") if i % 2 == 0 else ("ray", "local")):
                out = Path(tmp) / f"{executor}-{i}"
                wall = run_once(executor, args.seeds, args.cpus, out)
                times[executor].append(wall)
                first.setdefault(executor, records(out))
                print(f"run {i} {executor:5s}: {wall:7.1f} s", flush=True)
        same = first["local"] == first["ray"]
    local, ray = statistics.median(times["local"]), statistics.median(times["ray"])
    print(f"\n{args.seeds} seeds, {args.repeats} runs each (interleaved), {os.cpu_count()} CPUs here")
    print(f"local executor: median {local:.1f} s   ray executor ({args.cpus} actors): median {ray:.1f} s")
    print(f"ray / local wall time: {ray / local:.2f}   same records: {same}")


if __name__ == "__main__":
    main()
