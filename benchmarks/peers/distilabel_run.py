"""The distilabel leg of ``benchmarks/orchestration.py``: N prompts through distilabel 1.5.3's
OpenAI-compatible path, run in ``.bench-peers/distilabel`` (``bash benchmarks/peers/setup.sh``).

A ``Pipeline`` of ``LoadDataFromDicts`` -> ``TextGeneration(llm=OpenAILLM(base_url=...))``, the
way distilabel's documentation builds one. Settings for throughput, from distilabel 1.5.3's
``AsyncLLM._agenerate`` (one ``asyncio.gather`` over the rows of each input batch) and
``Step.input_batch_size``: the task's ``input_batch_size`` = C / ``--replicas`` and
``resources=StepResources(replicas=R)`` (R processes of the task, default 1), so at most C
requests are in flight; the loader yields batches of ``max(C, 256)`` rows. The LLM's own retries
are off (``max_retries=0``). ``use_cache=False`` and a fresh ``cache_dir`` under ``--work-dir``,
so a rerun is never served from distilabel's cache. No progress bars (``TQDM_DISABLE``), as
distillery runs with ``--no-progress``.

Prints one JSON line ``{"requests": n, "seconds": t}``, ``t`` timing only ``pipeline.run(...)``
(it starts the steps' processes and builds the Distiset), not imports.

    .bench-peers/distilabel/bin/python benchmarks/peers/distilabel_run.py --base-url http://127.0.0.1:PORT/v1 \\
        --model gpt-4o-mini --n 4000 --concurrency 64 --prompts prompts.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--prompts", required=True, help="JSONL with a 'question' field per line")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--replicas", type=int, default=1, help="processes of the generation step (C is split among them)")
    p.add_argument("--work-dir", help="distilabel's cache folder goes here (default: a fresh temporary one)")
    a = p.parse_args()
    work = Path(a.work_dir or tempfile.mkdtemp(prefix="distilabel-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.update(DISTILABEL_CACHE_DIR=str(work / "distilabel-cache"), HF_DATASETS_CACHE=str(work / "hf-datasets"),
                      OPENAI_API_KEY=os.environ.get("OPENAI_API_KEY", "loadtest"), TQDM_DISABLE="1",
                      HF_DATASETS_DISABLE_PROGRESS_BARS="1")

    from distilabel.models import OpenAILLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts, StepResources
    from distilabel.steps.tasks import TextGeneration

    with open(a.prompts) as f:
        rows = [{"instruction": json.loads(line)["question"]} for line in f][: a.n]
    per_replica = max(1, a.concurrency // a.replicas)
    with Pipeline(name="orchestration-bench", cache_dir=work / "distilabel-cache") as pipeline:
        load = LoadDataFromDicts(data=rows, batch_size=max(a.concurrency, 256))
        generate = TextGeneration(
            llm=OpenAILLM(model=a.model, base_url=a.base_url, api_key="loadtest", max_retries=0),
            input_batch_size=per_replica,
            resources=StepResources(replicas=a.replicas),
        )
        load >> generate
    started = time.perf_counter()
    distiset = pipeline.run(
        use_cache=False,
        parameters={generate.name: {"llm": {"generation_kwargs": {"max_new_tokens": a.max_tokens, "temperature": 0.0}}}},
    )
    seconds = time.perf_counter() - started
    data = distiset["default"]["train"]
    answered = sum(1 for g in data["generation"] if g)
    if answered != len(rows):
        print(f"distilabel answered {answered} of {len(rows)} prompts ({len(data)} rows)", file=sys.stderr)
    print(json.dumps({"requests": answered, "seconds": seconds}))


if __name__ == "__main__":
    main()
