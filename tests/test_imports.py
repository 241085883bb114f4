"""Heavy modules are imported only where they are needed: `distillery --help`, and a run or a
plan of a recipe whose teacher is a server, never import torch or transformers.

Each command runs as a real subprocess of the `distillery` module under ``python -X importtime``,
which names every module the process imports; the server is the replay teacher (a real local
HTTP server speaking the OpenAI protocol; only the model's answers are written by hand).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO
from tests.replay_server import ReplayTeacher

HEAVY = {"torch", "transformers", "sentence_transformers", "accelerate", "trl", "datasets"}


def _imported(*args: str, cwd: Path = REPO) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime -m distillery ARGS``; the process and the top-level names of the
    modules it imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "distillery", *args],
                          capture_output=True, text=True, timeout=600, cwd=cwd)
    names = {line.rsplit("|", 1)[1].strip().split(".")[0]
             for line in done.stderr.splitlines() if line.startswith("import time:") and "|" in line}
    return done, names


def _stderr(done: subprocess.CompletedProcess) -> str:
    return "\n".join(line for line in done.stderr.splitlines() if not line.startswith("import time:"))[-3000:]


def test_help_imports_no_torch():
    done, names = _imported("--help")
    assert done.returncode == 0, _stderr(done)
    assert "run" in done.stdout and "plan" in done.stdout
    assert "typer" in names  # the check sees the imports
    assert not names & HEAVY, names & HEAVY


def _answer(text: str, body: dict) -> str:
    m = re.search(r"has (\d+) apples and buys (\d+)", text)
    total = int(m[1]) + int(m[2])
    return f"He starts with {m[1]} apples and buys {m[2]} more (sample {body.get('seed')}), {total} in all.\n#### {total}"


def test_a_server_backed_run_and_plan_import_no_torch(tmp_path: Path):
    """Seeds, the OpenAI-compatible backend, rejection sampling, a verifier, filters,
    decontamination, exact and MinHash deduplication, the report and the card: all without torch
    (the report's embedding diversity, which needs a sentence-transformers model, is off)."""
    rows = [{"id": f"q{i}", "question": f"Tom has {i} apples and buys {i + 3} more. How many apples now?",
             "answer": f"#### {2 * i + 3}"} for i in range(6)]
    (tmp_path / "seeds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ReplayTeacher([("apples", _answer)]) as teacher:
        (tmp_path / "recipe.yaml").write_text(f"""
name: tiny
seeds: {{path: seeds.jsonl}}
prompt: {{template: "{{{{ question }}}}"}}
teacher: {{backend: openai, model: {teacher.model}, base_url: "{teacher.base_url}", concurrency: 2,
           sampling: {{temperature: 0.8, max_tokens: 64, seed: 0}}}}
generation: {{samples_per_prompt: 2}}
verifiers: [{{type: math_answer, reference: answer}}]
filters: [{{type: length, min_tokens: 3, max_tokens: 60}}, {{type: repetition}}]
dedup: [{{type: exact}}, {{type: minhash, threshold: 0.8}}]
decontamination: {{type: ngram, benchmarks: [gsm8k_test]}}
output: {{dir: out, batch_size: 3}}
report: {{embedding_model: null}}
""")
        run, run_names = _imported("run", "recipe.yaml", "--no-progress", cwd=tmp_path)
        plan, plan_names = _imported("plan", "recipe.yaml", "-o", "plan-out", cwd=tmp_path)
        served = len(teacher.log)
    assert run.returncode == 0, _stderr(run)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["seeds"] == 6 and report["accepted"] == 12  # every stage saw records
    assert (tmp_path / "out" / "README.md").is_file()
    assert plan.returncode == 0, _stderr(plan)
    assert served > 12  # the plan's pilot asked the server too
    assert "yaml" in run_names and "pyarrow" in run_names  # the check sees the imports
    assert not run_names & HEAVY, run_names & HEAVY
    assert not plan_names & HEAVY, plan_names & HEAVY


def test_importing_the_transformers_backend_imports_no_torch():
    """The registry imports every built-in backend's module to validate ``teacher.backend``."""
    code = ("import sys, distillery.backends.transformers_local, distillery.backends.threads; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
