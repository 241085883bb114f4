"""Run time and requests/s of the GSM8K recipe against a real local OpenAI-compatible server.

Builds the tests' tiny GSM8K model (a ~0.2M-parameter Llama with a BPE tokenizer trained on
GSM8K, briefly trained), starts ``transformers serve`` on 127.0.0.1 with it, and runs
``recipes/gsm8k.yaml`` on N seeds with concurrency 1 (the baseline: one request at a time)
and with the recipe's concurrency, each from an empty cache, then once more from the warm
cache (zero backend calls).

    python benchmarks/gsm8k_server.py --seeds 64 --concurrency 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import Server, build_tiny_gsm8k_model  # noqa: E402

from distillery.pipeline.runner import Pipeline  # noqa: E402
from distillery.recipe import Recipe  # noqa: E402


def run(server: Server, out: Path, seeds: int, concurrency: int, max_tokens: int, fresh: bool = False) -> tuple[dict, float]:
    recipe = Recipe.from_yaml(
        REPO / "recipes/gsm8k.yaml",
        {
            "teacher.base_url": server.base_url,
            "teacher.model": server.model,
            "teacher.concurrency": concurrency,
            "teacher.sampling.max_tokens": max_tokens,
            "seeds.limit": seeds,
            "output.dir": str(out),
        },
    )
    start = time.perf_counter()
    report = Pipeline(recipe, progress=False, fresh=fresh).run()
    return report, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_tiny_gsm8k_model(tmp / "model")
        server = Server(model, tmp / "serve.log")
        try:
            rows = []
            for label, conc in (("baseline: concurrency 1", 1), (f"concurrency {args.concurrency}", args.concurrency)):
                report, wall = run(server, tmp / f"run-{conc}", args.seeds, conc, args.max_tokens)
                rows.append((label, report, wall))
            report, wall = run(server, tmp / f"run-{args.concurrency}", args.seeds, args.concurrency, args.max_tokens, fresh=True)
            rows.append(("re-run from cache", report, wall))
        finally:
            server.stop()
    print(f"GSM8K recipe, {args.seeds} seeds, adaptive best-of-4, max_tokens {args.max_tokens}, transformers serve (CPU)")
    print("| run | wall s | backend requests | requests/s | candidates | accepted | tokens out/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, r, wall in rows:
        calls = r["cache"]["backend_calls"]
        print(f"| {label} | {wall:.1f} | {calls} | {r['throughput']['requests_per_s'] or 0:.2f} | {r['candidates']} | "
              f"{r['accepted']} | {r['throughput']['tokens_out_per_s'] or 0} |")
    base = rows[0][1]["throughput"]["requests_per_s"]
    conc = rows[1][1]["throughput"]["requests_per_s"]
    print(f"requests/s ratio concurrency {args.concurrency} / baseline: {conc / base:.2f}")


if __name__ == "__main__":
    main()
