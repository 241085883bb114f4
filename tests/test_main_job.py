"""The main job (`make run`: `recipes/arith.yaml`, 1000 problems) gives the funnel the README
states. Slow (about 1.5 minutes on 2 cores): run with `make test-slow`, not in CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import REPO, run_cli


@pytest.mark.slow
def test_main_job_funnel_is_the_documented_one(tmp_path: Path):
    out = tmp_path / "arith"
    done = run_cli("run", str(REPO / "recipes/arith.yaml"), "-o", str(out), "--no-progress",
                   "--set", "report.embedding_model=null", timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert (report["seeds"], report["candidates"], report["accepted"]) == (1000, 2147, 704)
    assert report["stopped_early"] == 0
