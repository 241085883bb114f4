"""A received response is never requested again: the process is killed (SIGKILL) between
the moment the backend hands back a batch of responses and their first use, and the resumed
run finds every one of them in the response cache.

The kill is placed by wrapping the function that makes a record of a response (a fault that
cannot be timed from outside the process); the teacher is the real built-in model, run
in-process by the transformers backend, whose batches of 6 requests come back together."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from distillery.backends.cache import ResponseCache
from tests.helpers import REPO, run_cli

KILL_AT_FIRST_USE = """
import os, signal, sys
import distillery.generate.strategy as strategy
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
strategy.candidate_record = killed
from distillery.cli import app
app(["run", sys.argv[1], "--no-progress"])
"""


def test_sigkill_between_receipt_and_use_repeats_no_call(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "seeds": {"path": "builtin:arith", "options": {"n": 6, "seed": 5, "difficulties": [1]}},
        "teacher": {"backend": "transformers", "model": "builtin:teacher", "batch_size": 16, "device": "cpu",
                    "sampling": {"temperature": 0.8, "max_tokens": 96, "seed": 0}},
        "generation": {"samples_per_prompt": 1},
        "verifiers": [{"type": "python_program"}],
        "output": {"dir": str(tmp_path / "run"), "batch_size": 6},
        "report": {"embedding_model": None},
    }))
    killed = subprocess.run([sys.executable, "-c", KILL_AT_FIRST_USE, str(recipe)], capture_output=True, text=True,
                            cwd=REPO, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # all 6 responses of the generate call were received before the first was used: all are cached
    assert len(ResponseCache(tmp_path / "run" / "cache")) == 6
    resumed = run_cli("run", str(recipe), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["candidates"] == 6 and report["cache"]["session_backend_calls"] == 0
    assert report["cache"]["hits"] == 6
