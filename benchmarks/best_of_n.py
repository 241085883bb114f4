"""Teacher tokens per accepted example of best-of-N rejection sampling on the embedded default
(``recipes/arith.yaml``): uniform best-of-N, adaptive best-of-N (stop at the first accepted
sample) and ``allocation: posterior`` (also stop a prompt whose posterior chance of passing
the next sample is not worth its tokens; :mod:`distillery.generate.rejection_sampling`).

Each run starts from an empty run directory and cache, through the ``distillery`` command;
the methods are interleaved (ABCABC... with ``--repeats`` > 1). From each run's
``accepted.parquet`` and ``rejected.parquet`` (one record per teacher call, with ``tokens_in``,
``tokens_out``, ``seed_id`` and ``sample_index``):

- tokens per solved problem = (tokens in + out of every teacher call) / prompts with >= 1
  accepted record;
- yield = prompts with >= 1 accepted record / prompts;
- the oracle bound, from the uniform run's per-prompt verdicts: a prompt costs the tokens of its
  samples up to and including its first verified one (accepted, or dropped only as a
  duplicate), and nothing when none is verified.

    .venv/bin/python benchmarks/best_of_n.py                       # 300 seeds, builtin:arith seed 0
    .venv/bin/python benchmarks/best_of_n.py --seeds 300 --repeats 2
    .venv/bin/python benchmarks/best_of_n.py --arith-seed 1 --stop-below 0.05   # tuning seeds
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DISTILLERY = Path(sys.executable).parent / "distillery"
COLUMNS = ["seed_id", "sample_index", "tokens_in", "tokens_out", "accepted", "verdicts", "response"]


def method_sets(method: str, n: int, stop_below: float | None) -> list[str]:
    """``--set`` overrides of the arith recipe for ``method`` (``uniform``, ``adaptive``, ``posterior``)."""
    sets = [f"generation.samples_per_prompt={n}"]
    if method == "uniform":
        return sets + ["generation.accept_per_prompt=null"]
    sets.append("generation.accept_per_prompt=1")
    if method == "posterior":
        sets.append("generation.allocation=posterior")
        if stop_below is not None:
            sets.append(f"generation.stop_below={stop_below}")
    return sets


def run_once(method: str, args: argparse.Namespace, out: Path) -> float:
    """Run the arith recipe with ``method`` into ``out`` (empty); return its wall time (s)."""
    seeds = {"n": args.seeds, "split": args.split, "seed": args.arith_seed}
    cmd = [str(DISTILLERY), "run", str(REPO / "recipes/arith.yaml"), "--no-progress", "--output", str(out),
           "--set", f"seeds.options={json.dumps(seeds)}", "--set", "report.embedding_model=null"]
    for s in method_sets(method, args.n, args.stop_below):
        cmd += ["--set", s]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{method} run failed:\n{done.stderr[-3000:]}")
    return wall


def per_prompt(run: Path) -> dict[str, list[dict]]:
    """seed id -> its records (teacher calls) in sample order."""
    prompts: dict[str, list[dict]] = defaultdict(list)
    for part in ("accepted", "rejected"):
        for r in pq.read_table(run / f"{part}.parquet", columns=COLUMNS).to_pylist():
            if r["sample_index"] is not None:
                prompts[r["seed_id"]].append(r)
    for records in prompts.values():
        records.sort(key=lambda r: r["sample_index"])
    return prompts


def tokens(r: dict) -> int:
    return (r["tokens_in"] or 0) + (r["tokens_out"] or 0)


def summarize(run: Path, seeds: int) -> dict:
    """Tokens, yield, per-prompt outcomes and the allocation's stops of one finished run."""
    prompts = per_prompt(run)
    total = sum(tokens(r) for records in prompts.values() for r in records)
    solved = sum(1 for records in prompts.values() if any(r["accepted"] for r in records))
    stopped = 0
    for marker in sorted((run / "state" / "allocation").glob("batch-*.json")):
        stopped += json.loads(marker.read_text())["stopped"]
    samples = sum(len(records) for records in prompts.values())
    return {"tokens": total, "solved": solved, "yield": solved / seeds, "per_solved": total / max(solved, 1),
            "samples": samples, "stopped": stopped, "prompts": prompts,
            "fingerprint": sorted((r["seed_id"], r["sample_index"], r["accepted"], r["response"])
                                  for records in prompts.values() for r in records)}


def oracle(prompts: dict[str, list[dict]]) -> tuple[float, int]:
    """(tokens per solved, solved) of the oracle that stops at the first verified sample and never
    samples a prompt none of whose samples is verified (from a uniform run)."""
    cost, solved = 0, 0
    for records in prompts.values():
        spent = 0
        for r in records:
            spent += tokens(r)
            if r["accepted"] or all(v["passed"] or v["stage"] == "dedup" for v in r["verdicts"]):
                cost += spent
                solved += 1
                break
    return cost / max(solved, 1), solved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=300, help="builtin:arith problems")
    ap.add_argument("--n", type=int, default=4, help="samples_per_prompt (best-of-N)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--split", default="train")
    ap.add_argument("--arith-seed", type=int, default=0, help="the seed option of builtin:arith")
    ap.add_argument("--stop-below", type=float, default=None, help="allocation: posterior threshold (default: its own)")
    ap.add_argument("--methods", default="uniform,adaptive,posterior")
    args = ap.parse_args()
    methods = args.methods.split(",")
    if "uniform" not in methods:
        raise SystemExit("--methods must include uniform (the reference and the oracle's source)")
    results: dict[str, list[dict]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory(prefix="best-of-n-") as tmp:
        for i in range(args.repeats):
            for method in methods:
                out = Path(tmp) / f"{method}-{i}"
                wall = run_once(method, args, out)
                s = summarize(out, args.seeds)
                s["wall_s"] = wall
                results[method].append(s)
                print(f"run {i} {method:9s}: {wall:6.1f} s, {s['samples']} samples, yield {s['yield']:.3f}, "
                      f"{s['per_solved']:.1f} tokens/solved", flush=True)
    first = {m: r[0] for m, r in results.items()}
    uniform = first["uniform"]
    o_cost, o_solved = oracle(uniform["prompts"])
    print(f"\nbuiltin:arith {args.split} seed {args.arith_seed}, {args.seeds} prompts, best-of-{args.n}, "
          f"{args.repeats} run(s) of each method (interleaved)")
    print(f"{'method':12} {'tokens/solved':>13} {'ratio':>7} {'yield':>7} {'Δyield':>7} {'samples':>8} {'stopped':>8}")
    for m in methods:
        s = first[m]
        print(f"{m:12} {s['per_solved']:13.1f} {s['per_solved'] / uniform['per_solved']:7.3f} {s['yield']:7.3f} "
              f"{100 * (s['yield'] - uniform['yield']):+6.1f}p {s['samples']:8d} {s['stopped']:8d}")
    print(f"{'oracle':12} {o_cost:13.1f} {o_cost / uniform['per_solved']:7.3f} {o_solved / args.seeds:7.3f}")
    if args.repeats > 1:
        same = {m: all(r["fingerprint"] == runs[0]["fingerprint"] for r in runs[1:]) for m, runs in results.items()}
        print("repeats gave the same records:", same)


if __name__ == "__main__":
    main()
