"""Peak memory of a run as the seed count grows (the runner streams: it should stay flat).

Each size runs in a fresh process (peak RSS from ``getrusage``), on GSM8K train solutions
repeated with a variant marker so no two seeds are identical:

- ``curate``: the GSM8K curate recipe (verify, length, decontaminate, exact + MinHash dedup);
- ``generate``: the same seeds through the generation path (sampler, cache, shards) against
  an OpenAI-compatible server that answers instantly (to measure our memory, not a model's).

    python benchmarks/memory.py --sizes 1000 10000
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_seeds(path: Path, n: int) -> None:
    with gzip.open(REPO / "data/gsm8k/train.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for line in fh]
    with open(path, "w") as out:
        for i in range(n):
            r = rows[i % len(rows)]
            k = i // len(rows)
            prefix = f"(variant {k}) " if k else ""
            out.write(json.dumps({"id": f"g{i}", "question": prefix + r["question"], "answer": prefix + r["answer"]}) + "\n")


def child(mode: str, seeds: str, out: str) -> None:
    from distillery.pipeline.runner import Pipeline
    from distillery.recipe import Recipe

    overrides = {"seeds.path": seeds, "output.dir": out, "output.batch_size": 256}
    if mode == "curate":
        recipe = Recipe.from_yaml(REPO / "recipes/gsm8k-curate.yaml", overrides)
        server = None
    else:
        sys.path.insert(0, str(REPO))
        from tests.fault_server import FaultServer

        server = FaultServer(lambda n, body: ("ok", "Step one. 2 + 2 = 4.\n#### 4"))
        overrides.update({"teacher.base_url": server.base_url, "teacher.model": server.model, "seeds.limit": None,
                          "seeds.shuffle_seed": None, "generation.samples_per_prompt": 1, "teacher.concurrency": 64})
        recipe = Recipe.from_yaml(REPO / "recipes/gsm8k.yaml", overrides)
    start = time.perf_counter()
    report = Pipeline(recipe, progress=False).run()
    elapsed = time.perf_counter() - start
    if server:
        server.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": round(peak_mb, 1), "seconds": round(elapsed, 2), "accepted": report["accepted"],
                      "candidates": report["candidates"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--modes", nargs="+", default=["curate", "generate"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            for n in args.sizes:
                seeds = Path(tmp) / f"seeds-{n}.jsonl"
                if not seeds.exists():
                    make_seeds(seeds, n)
                out = Path(tmp) / f"run-{mode}-{n}"
                proc = subprocess.run([sys.executable, __file__, "--child", mode, str(seeds), str(out)],
                                      capture_output=True, text=True, check=True)
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append((mode, n, result))
    print("| mode | seeds | peak RSS (MB) | time (s) | candidates | accepted |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode, n, r in rows:
        print(f"| {mode} | {n} | {r['peak_rss_mb']} | {r['seconds']} | {r['candidates']} | {r['accepted']} |")
    for mode in args.modes:
        peaks = [r["peak_rss_mb"] for m, _, r in rows if m == mode]
        print(f"{mode}: peak RSS ratio largest/smallest size = {max(peaks) / min(peaks):.2f}")


if __name__ == "__main__":
    main()
