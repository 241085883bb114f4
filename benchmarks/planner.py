"""How close ``distillery plan`` comes to the run that follows.

Runs ``distillery plan RECIPE --json`` then ``distillery run RECIPE`` into the same fresh run
directory (the run reuses the pilot's cached responses), and prints the estimate beside the
measured tokens, requests and wall time (the ``run`` process from start to exit), with the
relative error of each::

    .venv/bin/python benchmarks/planner.py                      # recipes/arith.yaml, 1000 seeds
    .venv/bin/python benchmarks/planner.py --n 300 --batch-size 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "distillery")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(REPO / "recipes" / "arith.yaml"))
    ap.add_argument("--n", type=int, default=None, help="builtin:arith problems (default: the recipe's)")
    ap.add_argument("--batch-size", type=int, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="planner-") as tmp:
        sets = ["-o", str(Path(tmp) / "run")]
        if args.n is not None:
            sets += ["--set", "seeds.options=" + json.dumps({"n": args.n, "split": "train", "seed": 0})]
        if args.batch_size is not None:
            sets += ["--set", f"output.batch_size={args.batch_size}"]
        started = time.perf_counter()
        planned = subprocess.run([CLI, "plan", args.recipe, *sets, "--json"], capture_output=True, text=True, check=True)
        plan_s = time.perf_counter() - started
        plan = json.loads(planned.stdout)
        started = time.perf_counter()
        subprocess.run([CLI, "run", args.recipe, *sets, "--no-progress"], capture_output=True, text=True, check=True)
        run_s = time.perf_counter() - started
        report = json.loads((Path(tmp) / "run" / "report.json").read_text())
    e = plan["estimate"]
    rows = [
        ("requests", e["requests"], report["candidates"]),
        ("tokens in", e["tokens_in"], report["tokens"]["in"]),
        ("tokens out", e["tokens_out"], report["tokens"]["out"]),
        ("wall time, s (run process)", e["wall_s_after_pilot"], run_s),
    ]
    print(f"{plan['recipe']}: {plan['seeds']} seeds, pilot {plan['pilot']['seeds']} seeds, plan took {plan_s:.1f} s")
    print(f"{'':28} {'estimate':>12} {'measured':>12} {'error':>8}")
    for name, est, real in rows:
        print(f"{name:28} {est:12.1f} {real:12.1f} {100 * (est - real) / real:+7.1f}%")


if __name__ == "__main__":
    main()
