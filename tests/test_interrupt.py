"""Ctrl-C: a real ``distillery run`` subprocess against a slow local server gets SIGINT while
requests hang; it says how to resume, exits with status 130, keeps every response it received,
and the re-run sends only the requests that had not been answered.

The server is a real local HTTP server (``tests/fault_server.py``) that holds chosen requests:
a model server cannot be made to stall on demand. Responses received are counted by the
server's own counter and by the response cache, never from the run's log."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

from distillery.backends.cache import ResponseCache
from tests.fault_server import FaultServer
from tests.helpers import REPO, VENV_BIN, run_cli

SEEDS = 12
ANSWERED = 6  # q0..q5 are answered at once; q6.. hang until released


class HoldLater:
    """Answers ``q0``..``q5`` at once and holds every later question until :attr:`release` is
    set (at most 120 s)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.held = 0
        self._lock = threading.Lock()

    def __call__(self, n: int, body: dict) -> tuple[str, object]:
        q = int(body["messages"][-1]["content"][1:])
        if q >= ANSWERED and not self.release.is_set():
            with self._lock:
                self.held += 1
            self.release.wait(timeout=120)
        return "ok", f"#### {q}"


def _recipe(tmp_path: Path, server: FaultServer) -> Path:
    seeds = tmp_path / "s.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"s{i}", "question": f"q{i}", "answer": f"#### {i}"}) + "\n"
                             for i in range(SEEDS)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "seeds": {"path": str(seeds)},
        "teacher": {"model": server.model, "base_url": server.base_url, "timeout_s": 300, "concurrency": 4},
        "generation": {"samples_per_prompt": 1},
        "verifiers": [{"type": "math_answer"}],
        "output": {"dir": str(tmp_path / "run"), "batch_size": 3},
        "report": {"embedding_model": None},
    }))
    return recipe


def _wait(condition, seconds: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_ctrl_c_says_how_to_resume_exits_130_and_keeps_every_response(tmp_path: Path):
    script = HoldLater()
    server = FaultServer(script)
    try:
        recipe = _recipe(tmp_path, server)
        cache_dir = tmp_path / "run" / "cache"
        run = subprocess.Popen([str(VENV_BIN / "distillery"), "run", str(recipe), "--no-progress"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)

        def answered_and_cached() -> bool:
            shards = tmp_path / "run" / "shards"
            if script.held == 0 or len(list(shards.glob("batch-*.json"))) < ANSWERED // 3:
                return False  # later requests hang and the answered batches are checkpointed
            cache = ResponseCache(cache_dir)
            try:
                return len(cache) >= ANSWERED
            finally:
                cache.close()

        _wait(answered_and_cached, 300, run)
        answered = server.outcomes["ok"]  # the server's own count of the answers it sent
        sent = time.monotonic()
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=120)
        seconds = time.monotonic() - sent
        assert run.returncode == 130, stderr[-3000:]
        assert "interrupted; run the same command again to resume" in " ".join(stderr.split())
        assert "Traceback" not in stderr
        assert seconds < 20  # the goal is 2 s; a loaded CI machine gets room
        assert not list((tmp_path / "run").rglob(".*.tmp"))  # nothing half-written
        finished = sorted(p.name for p in (tmp_path / "run" / "shards").glob("batch-*.json"))
        assert finished == ["batch-000000.json", "batch-000001.json"]  # the two answered batches, whole
        cache = ResponseCache(cache_dir)
        try:
            assert len(cache) == answered == ANSWERED  # every response received is kept, nothing more
        finally:
            cache.close()

        script.release.set()  # the server now answers everything at once
        before = server.requests
        resumed = run_cli("run", str(recipe), "--no-progress")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        report = json.loads((tmp_path / "run" / "report.json").read_text())
        assert report["candidates"] == SEEDS and report["accepted"] == SEEDS
        # only the unanswered requests were sent again
        assert report["cache"]["session_backend_calls"] == server.requests - before == SEEDS - ANSWERED
    finally:
        script.release.set()
        server.close()
