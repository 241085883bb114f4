"""The Curator leg of ``benchmarks/orchestration.py``: N prompts through Bespoke Curator 0.1.31's
own OpenAI-compatible path (``backend="openai"``: its aiohttp online request processor), run in
``.bench-peers/curator`` (``bash benchmarks/peers/setup.sh``).

Settings for throughput, from Curator 0.1.31's ``OnlineRequestProcessorConfig`` and
``BaseOnlineRequestProcessor.process_requests_from_file``: ``max_concurrent_requests`` = C (its
semaphore over requests in flight), ``max_requests_per_minute`` and ``max_tokens_per_minute``
far above what the endpoint can do (so its token buckets never wait; they also set the aiohttp
connector's limit), ``max_retries`` 0 (a failed request is an error here, not a retry). Offline:
``TIKTOKEN_CACHE_DIR`` points at litellm's bundled tokenizers (Curator counts tokens with
``cl100k_base``), litellm's model cost map is the local copy (the model name must be one litellm
knows, e.g. ``gpt-4o-mini``), telemetry is off. No progress display (``CURATOR_DISABLE_RICH_DISPLAY``,
``TQDM_DISABLE``), as distillery runs with ``--no-progress``. Caching: ``CURATOR_DISABLE_CACHE=1`` and a fresh
working directory (``--work-dir``), so a rerun is never served from Curator's cache.

At construction Curator posts one request with an empty ``messages`` list to read rate-limit
headers; the load-test endpoint refuses it (400) and does not count it.

Prints one JSON line ``{"requests": n, "seconds": t}``, ``t`` timing only the generation call
(``llm(dataset, working_dir=...)``), not imports or construction.

    .bench-peers/curator/bin/python benchmarks/peers/curator_run.py --base-url http://127.0.0.1:PORT/v1 \\
        --model gpt-4o-mini --n 4000 --concurrency 64 --prompts prompts.jsonl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def offline_env(work_dir: Path) -> None:
    """Environment for an offline, uncached Curator run (set before Curator is imported)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("litellm is not installed in this environment (bash benchmarks/peers/setup.sh curator)")
    tokenizers = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(tokenizers))
    os.environ.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        TELEMETRY_ENABLED="false",
        CURATOR_DISABLE_CACHE="1",
        CURATOR_DISABLE_RICH_DISPLAY="1",  # no live display (distillery runs with --no-progress)
        TQDM_DISABLE="1",
        CURATOR_CACHE_DIR=str(work_dir / "curator-cache"),
        HF_DATASETS_CACHE=str(work_dir / "hf-datasets"),
        OPENAI_API_KEY=os.environ.get("OPENAI_API_KEY", "loadtest"),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", required=True, help="a model name litellm knows (cost map), e.g. gpt-4o-mini")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--prompts", required=True, help="JSONL with a 'question' field per line")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--work-dir", help="Curator's working directory (default: a fresh temporary one)")
    a = p.parse_args()
    work = Path(a.work_dir or tempfile.mkdtemp(prefix="curator-"))
    work.mkdir(parents=True, exist_ok=True)
    offline_env(work)

    from bespokelabs import curator

    with open(a.prompts) as f:
        rows = [{"question": json.loads(line)["question"]} for line in f][: a.n]

    class Ask(curator.LLM):
        def prompt(self, row: dict) -> str:
            return row["question"]

        def parse(self, row: dict, response: str) -> dict:
            return {"question": row["question"], "response": response}

    huge = 10**9
    llm = Ask(
        model_name=a.model,
        backend="openai",
        generation_params={"max_tokens": a.max_tokens, "temperature": 0},
        backend_params={
            "base_url": a.base_url,
            "api_key": "loadtest",
            "max_concurrent_requests": a.concurrency,
            "max_requests_per_minute": huge,
            "max_tokens_per_minute": huge,
            "max_retries": 0,
            "require_all_responses": True,
        },
    )
    started = time.perf_counter()
    out = llm(rows, working_dir=str(work / "run"))
    seconds = time.perf_counter() - started
    dataset = out.dataset if hasattr(out, "dataset") else out
    got = len(dataset)
    if got != len(rows):
        print(f"curator returned {got} rows for {len(rows)} prompts", file=sys.stderr)
    print(json.dumps({"requests": got, "seconds": seconds}))


if __name__ == "__main__":
    main()
