"""No batch barrier: against a server, the next batch's requests go out while a batch's slowest
request is still on the wire, and every batch is still checkpointed whole (a resume after an
interrupted run redoes only the unfinished batch).

The server is a real local HTTP server (``tests/fault_server.py``) that holds one chosen
request for a while: a request that is slow on purpose cannot be caused on a real model server
on demand. The test reads the order of events the server saw (request starts and ends), never
the time they took."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from tests.fault_server import FaultServer
from tests.helpers import run_pipeline

SEEDS = 12
BATCH = 3


class SlowFirst:
    """Answers every question right away except ``q0``, which is held until a request of a
    later batch has arrived (or 20 s passed: then the barrier is back, and the test fails)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.later_arrived = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, n: int, body: dict) -> tuple[str, object]:
        question = body["messages"][-1]["content"]
        with self._lock:
            self.events.append(("start", question))
        if int(question[1:]) >= BATCH:
            self.later_arrived.set()
        if question == "q0":
            self.later_arrived.wait(timeout=20)
        with self._lock:
            self.events.append(("end", question))
        return "ok", f"#### {question[1:]}"


def recipe(tmp_path: Path, server: FaultServer) -> dict:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"s{i}", "question": f"q{i}", "answer": f"#### {i}"}) + "\n"
                             for i in range(SEEDS)))
    return {
        "seeds": {"path": str(seeds)},
        "teacher": {"model": server.model, "base_url": server.base_url, "concurrency": 4, "timeout_s": 60},
        "verifiers": [{"type": "math_answer"}],
        "output": {"dir": str(tmp_path / "run"), "batch_size": BATCH},
        "report": {"embedding_model": None},
    }


def test_later_batches_are_sent_while_a_batch_waits_for_its_slowest_request(tmp_path: Path):
    from distillery.recipe import Recipe

    script = SlowFirst()
    server = FaultServer(script)
    try:
        report, accepted, rejected = run_pipeline(Recipe.model_validate(recipe(tmp_path, server)), tmp_path / "run")
    finally:
        server.close()
    order = script.events
    q0_end = order.index(("end", "q0"))
    later_starts = [i for i, (what, q) in enumerate(order) if what == "start" and int(q[1:]) >= BATCH]
    assert later_starts and min(later_starts) < q0_end  # batch 1 went out before batch 0 had drained
    # every batch is written whole, whatever order they finished in
    assert len(list((tmp_path / "run" / "shards").glob("batch-*.json"))) == SEEDS // BATCH
    assert sorted(r["seed_id"] for r in accepted) == sorted(f"s{i}" for i in range(SEEDS)) and not rejected
    assert report["accepted"] == SEEDS


def test_an_unfinished_batch_among_finished_later_ones_is_redone_alone(tmp_path: Path):
    """Batch 0's slow request times out (transient): later batches finish and are checkpointed
    meanwhile; the re-run sends only batch 0's requests."""
    from distillery.pipeline.runner import Pipeline, TransientFailures
    from distillery.recipe import Recipe

    first_q0 = threading.Event()

    def script(n: int, body: dict) -> tuple[str, object]:
        question = body["messages"][-1]["content"]
        if question == "q0" and not first_q0.is_set():
            first_q0.set()
            return "hang", 3.0  # past the timeout and the retry budget: transient
        return "ok", f"#### {question[1:]}"

    server = FaultServer(script)
    try:
        data = recipe(tmp_path, server)
        data["teacher"].update(timeout_s=1.0, retry_budget_s=1.5, max_retries=0)
        try:
            Pipeline(Recipe.model_validate(data), progress=False).run()
            raise AssertionError("the run should have left batch 0 unfinished")
        except TransientFailures as e:
            assert e.batches == [0]
        markers = sorted(p.name for p in (tmp_path / "run" / "shards").glob("batch-*.json"))
        assert markers == [f"batch-{k:06d}.json" for k in range(1, SEEDS // BATCH)]  # the later ones, whole
        served = len(server.log)
        report, accepted, _ = run_pipeline(Recipe.model_validate(data), tmp_path / "run")
        resent = [body["messages"][-1]["content"] for body, _ in server.log[served:]]
        assert resent == ["q0"]  # q1, q2 come from the cache; later batches are not redone
        assert report["accepted"] == SEEDS
    finally:
        server.close()


def test_a_request_two_running_batches_share_is_sent_once(tmp_path: Path):
    """Two streams (two batches at once) ask the same thing while the first ask is on the wire:
    one call; the second stream gets the answer as a cache hit."""
    import asyncio

    from distillery.backends.base import GenerationRequest, SamplingParams
    from distillery.backends.cache import CachedBackend, ResponseCache
    from distillery.backends.openai_compat import OpenAIBackend

    server = FaultServer(lambda n, body: ("hang", 0.5))  # held, then answered
    cache = ResponseCache(tmp_path / "cache")
    backend = CachedBackend(OpenAIBackend(server.model, base_url=server.base_url), cache)
    request = GenerationRequest.make([{"role": "user", "content": "the same question"}], SamplingParams(max_tokens=4), 0)

    async def both():
        async def one():
            return [r async for _, r in backend.stream([request])]
        try:
            return await asyncio.gather(one(), one())
        finally:
            await backend.aclose()

    try:
        (a,), (b,) = asyncio.run(both())
    finally:
        server.close()
        cache.close()
    assert server.requests == 1
    assert a.text == b.text == "late answer #### 1" and sorted([a.cached, b.cached]) == [False, True]
