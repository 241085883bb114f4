"""torch's CPU threads for the in-process teacher (``teacher.threads``): the default from the
usable cores less the others' load, the setting applied when the model loads and kept while it
generates, and OpenMP's waiting threads told to sleep (``OMP_WAIT_POLICY``) before torch loads.

What touches torch runs in a fresh subprocess: the thread count is a setting of the whole
process, and ``OMP_WAIT_POLICY`` counts only before torch's first import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from distillery.backends import threads
from distillery.backends.config import TeacherConfig
from distillery.backends.transformers_local import TransformersBackend


@pytest.mark.parametrize(("cores", "load", "expected"), [
    (2, 0.0, 2), (2, 0.3, 2), (2, 1.0, 1), (2, 0.7, 1), (2, 10.0, 1),
    (1, 0.0, 1), (8, 2.6, 5), (8, 0.0, 8), (4, 4.0, 1),
])
def test_default_threads_are_the_cores_less_the_load(cores, load, expected):
    assert threads.default_threads(cores=cores, load=load) == expected


def test_usable_cores_and_load_are_read_from_this_process():
    cores = threads.usable_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    first = threads.load_at_start()
    assert first >= 0.0 and threads.load_at_start() == first  # read once, before our own work
    assert 1 <= threads.default_threads() <= cores


def test_threads_below_one_are_refused():
    with pytest.raises(ValueError):
        TransformersBackend("m", threads=0)
    with pytest.raises(ValueError):
        threads.apply_torch_threads(0)


_GENERATE = r"""
import asyncio, json, os, sys
from distillery.backends.base import GenerationRequest, SamplingParams
from distillery.backends.config import TeacherConfig
from distillery.backends.transformers_local import TransformersBackend

threads = json.loads(sys.argv[1])
config = TeacherConfig(backend="transformers", model="builtin:teacher", device="cpu", threads=threads)
backend = TransformersBackend.from_config(config)
assert "torch" not in sys.modules
sampling = SamplingParams(temperature=0.0, max_tokens=8)
requests = [GenerationRequest(messages=(("user", q),), sampling=sampling) for q in ("What is 2 + 3?", "What is 7 - 4?")]

async def main():
    return [r async for _, r in backend.stream(requests)]

results = asyncio.run(main())
import torch
print(json.dumps({"used": backend.threads_used, "torch": torch.get_num_threads(),
                  "interop": torch.get_num_interop_threads(), "policy": os.environ.get("OMP_WAIT_POLICY"),
                  "texts": [r.text is not None for r in results]}))
"""


def _generate(threads_setting, env_extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(env_extra or {})
    done = subprocess.run([sys.executable, "-c", _GENERATE, json.dumps(threads_setting)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_teacher_threads_are_set_when_the_model_loads_and_kept_while_it_generates():
    got = _generate(1)
    assert got == {"used": 1, "torch": 1, "interop": 1, "policy": "PASSIVE", "texts": [True, True]}


def test_default_threads_and_a_wait_policy_of_the_users_own():
    got = _generate(None, {"OMP_WAIT_POLICY": "ACTIVE"})
    assert 1 <= got["used"] <= threads.usable_cores() and got["torch"] == got["used"]
    assert got["policy"] == "ACTIVE"  # the environment's own setting is kept


def test_threads_are_operational_not_part_of_the_data():
    """Two teachers that differ only in ``teacher.threads`` give the same cache keys."""
    from distillery.backends.base import GenerationRequest, SamplingParams

    request = GenerationRequest(messages=(("user", "What is 2 + 3?"),), sampling=SamplingParams())
    keys = {TransformersBackend.from_config(TeacherConfig(backend="transformers", model="builtin:teacher",
                                                          threads=n)).cache_key(request) for n in (None, 1, 2)}
    assert len(keys) == 1
