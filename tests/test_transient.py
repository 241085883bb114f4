"""Transient failures are never final: garbled 200 bodies, answers without ``choices``, a 429
storm longer than the retry budget and timeouts leave their batch unfinished; the run goes on
with the others, exits 1 saying how many requests to retry, and a clean re-run retries exactly
those and ends with the same dataset as an undisturbed run. Permanent failures (HTTP 400)
are rejected records.

The faults come from a real local HTTP server that misbehaves on purpose
(``tests/fault_server.py``): a 429 storm or a garbled body cannot be caused on a real model
server."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq

from tests.fault_server import FaultServer
from tests.helpers import run_cli

SEEDS = 30


def world(body: dict) -> tuple[str, object]:
    """The undisturbed answers: question ``q<i>`` is answered right on sample 1 when ``i % 3 == 0``,
    on sample 0 otherwise; ``q5`` is refused with HTTP 400 (permanent, the same in every world)."""
    question = body["messages"][-1]["content"]
    i, sample = int(question[1:]), body.get("seed", 0)
    if i == 5:
        return "status", 400
    right = sample == 1 if i % 3 == 0 else sample == 0
    return "ok", f"The answer is computed.\n#### {i if right else i + 100}"


class Disturbed:
    """The world, plus faults: q1 always garbled, q2 always without choices, q4 a 429 storm
    longer than the retry budget; q8's first attempt hangs past the timeout, and a fifth of
    the other requests fail once (garbled, 503, no choices) and then recover."""

    def __init__(self) -> None:
        self.failed_once: set[tuple[str, int]] = set()

    def __call__(self, n: int, body: dict) -> tuple[str, object]:
        question = body["messages"][-1]["content"]
        i = int(question[1:])
        fault = {1: ("garbled", None), 2: ("nochoices", None), 4: ("status", 429)}.get(i)
        if fault:
            return fault
        k = key(body)
        if k not in self.failed_once and (i == 8 or random.Random(str(k)).random() < 0.2):
            self.failed_once.add(k)
            if i == 8:
                return "hang", 4.0
            return random.Random(str(k)).choice([("garbled", None), ("status", 503), ("nochoices", None)])
        return world(body)


def recipe(tmp_path: Path, server: FaultServer, out: str) -> Path:
    seeds = tmp_path / "seeds.jsonl"
    if not seeds.exists():
        seeds.write_text("".join(json.dumps({"id": f"s{i}", "question": f"q{i}", "answer": f"#### {i}"}) + "\n"
                                 for i in range(SEEDS)))
    path = tmp_path / f"{out}.yaml"
    path.write_text(json.dumps({
        "seeds": {"path": str(seeds)},
        "teacher": {"model": server.model, "base_url": server.base_url, "concurrency": 4, "max_retries": 1000,
                    "retry_budget_s": 2.0, "timeout_s": 1.0},
        "generation": {"samples_per_prompt": 2, "accept_per_prompt": 1},
        "verifiers": [{"type": "math_answer"}],
        "output": {"dir": str(tmp_path / out), "batch_size": 4},
        "report": {"embedding_model": None},
    }))
    return path


def dataset(run: Path) -> tuple[dict, dict]:
    accepted = {r["id"]: r for r in pq.read_table(run / "accepted.parquet").to_pylist()}
    rejected = {r["id"]: r for r in pq.read_table(run / "rejected.parquet").to_pylist()}
    return accepted, rejected


def key(body: dict) -> tuple[str, int]:
    return body["messages"][-1]["content"], body.get("seed", 0)


def test_transient_failures_leave_batches_for_the_next_run(tmp_path: Path):
    clean = FaultServer(lambda n, body: world(body))
    try:
        undisturbed = run_cli("run", str(recipe(tmp_path, clean, "clean")), "--no-progress")
        assert undisturbed.returncode == 0, undisturbed.stderr[-3000:]
    finally:
        clean.close()
    want_accepted, want_rejected = dataset(tmp_path / "clean")
    assert want_rejected["s5#0"]["reject_reason"].startswith("http_400: ")  # permanent: a recorded rejection
    assert len(want_accepted) == SEEDS - 1

    server = FaultServer(Disturbed())
    try:
        path = recipe(tmp_path, server, "run")
        first = run_cli("run", str(path), "--no-progress")
        assert first.returncode == 1 and "Traceback" not in first.stderr
        assert "requests failed transiently" in first.stderr
        assert "run the same command again to retry them" in first.stderr
        run = tmp_path / "run"
        assert not (run / "accepted.parquet").exists()  # no dataset with holes
        markers = {int(p.name[6:12]) for p in (run / "shards").glob("batch-*.json")}
        assert markers == set(range(8)) - {0, 1}  # q1, q2, q4 are in batches 0 and 1; the others finished
        assert {"garbled", "nochoices", "hang"} <= {fate for _, fate in server.log}
        assert sum(fate == "status" for _, fate in server.log) > 20  # the storm was retried until the budget ran out
        received = {key(body) for body, fate in server.log if fate == "ok"}
        failed = {key(body) for body, fate in server.log if fate != "ok"} - received

        # the server recovers; the same command retries only what never came back
        before = len(server.log)
        server.script = lambda n, body: world(body)
        second = run_cli("run", str(path), "--no-progress")
        assert second.returncode == 0, second.stderr[-3000:]
        again = [key(body) for body, _ in server.log[before:]]
        assert len(again) == len(set(again))
        assert not set(again) & received  # a received response is never requested again
        assert failed <= set(again)  # and every failed one is retried
        # what it asked beyond the failed requests: later samples of the prompts those blocked
        assert {q for q, _ in set(again) - failed} <= {q for q, _ in failed}
    finally:
        server.close()
    accepted, rejected = dataset(tmp_path / "run")
    assert sorted(accepted) == sorted(want_accepted) and sorted(rejected) == sorted(want_rejected)
    assert {i: r["response"] for i, r in accepted.items()} == {i: r["response"] for i, r in want_accepted.items()}
    assert all(r["reject_reason"].split(":")[0] in ("wrong_answer", "http_400") for r in rejected.values())
