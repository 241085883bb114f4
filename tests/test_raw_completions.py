"""Raw text completions (``GenerationRequest.raw``) and structured output in the backends.

Real: the ``openai`` client and backend, HTTP servers on 127.0.0.1 (the replay teacher, the
fault server, and ``transformers serve`` with the tiny GSM8K model), the in-process
``transformers`` backend with the built-in teacher. Replayed: only the replay teacher's
answers (hand-written).
"""

from __future__ import annotations

import asyncio
import json

from distillery.backends.base import GenerationRequest, SamplingParams
from distillery.backends.config import TeacherConfig, build_backend
from distillery.backends.openai_compat import OpenAIBackend
from distillery.backends.transformers_local import TransformersBackend
from distillery.builtin.models import builtin_model_path
from tests.fault_server import FaultServer
from tests.replay_server import ReplayTeacher

SAMPLING = SamplingParams(temperature=0.0, max_tokens=16, seed=3)
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def collect(backend, requests):
    async def run():
        out = {}
        async for i, r in backend.stream(requests):
            out[i] = r
        await backend.aclose()
        return [out[i] for i in range(len(requests))]
    return asyncio.run(run())


def test_openai_raw_request_goes_to_v1_completions_with_sampling():
    """A raw request is sent as ``prompt`` (no messages) with the sampling parameters; the
    answer's ``choices[0].text`` is the result. Chat requests still go to chat completions."""
    with ReplayTeacher([(r"\A<\|user\|>\n\Z", "What is 2 + 2?"), ("hello", "Hi there.")]) as teacher:
        backend = OpenAIBackend(teacher.model, base_url=teacher.base_url)
        sampling = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=20, seed=5, stop=("<|end|>",))
        raw, chat = collect(backend, [
            GenerationRequest.raw("<|user|>\n", sampling, 2, step="query"),
            GenerationRequest.make([{"role": "user", "content": "hello"}], SAMPLING),
        ])
        assert (raw.text, raw.finish_reason, raw.error_kind, raw.tokens_out) == ("What is 2 + 2?", "stop", None, 5)
        assert chat.text == "Hi there."
        bodies = teacher.requests()
        raw_body = next(b for b in bodies if "prompt" in b)
        assert "messages" not in raw_body and raw_body["prompt"] == "<|user|>\n"
        assert (raw_body["temperature"], raw_body["top_p"], raw_body["max_tokens"], raw_body["seed"], raw_body["stop"]) \
            == (1.0, 0.9, 20, 7, ["<|end|>"])
        assert "response_format" not in raw_body
        assert any("messages" in b and "prompt" not in b for b in bodies)


def test_openai_raw_body_without_choices_or_text_is_a_transient_bad_response():
    """A 200 body without ``choices``, or whose choice has no ``text`` (a chat-shaped answer to
    /v1/completions), is a garbled answer: retried, then a transient ``bad_response``."""
    for fate in ("nochoices", "ok"):
        server = FaultServer(lambda n, body, fate=fate: (fate, "chat-shaped"))
        try:
            backend = OpenAIBackend(server.model, base_url=server.base_url, max_retries=2, backoff_base_s=0.01,
                                    backoff_cap_s=0.02)
            [result] = collect(backend, [GenerationRequest.raw("<|user|>\n", SAMPLING)])
            assert result.error_kind == "bad_response" and result.transient and result.retries == 2
            assert server.requests == 3 and all("prompt" in body for body, _ in server.log)
            assert backend.stats.retries["bad_response"] == 2
        finally:
            server.close()


def test_structured_output_sends_response_format_only_when_on_and_the_request_has_a_schema():
    """``structured_output`` on: a request with a schema carries ``response_format`` json_schema
    (non-strict); one without a schema carries none. Off (the default): never sent."""
    with ReplayTeacher([("rate", '{"answer": "4"}')]) as teacher:
        config = TeacherConfig(model=teacher.model, base_url=teacher.base_url, structured_output=True)
        on = build_backend(config)
        assert isinstance(on, OpenAIBackend) and on.structured_output
        with_schema = GenerationRequest.make([{"role": "user", "content": "rate it"}], SAMPLING, schema=SCHEMA)
        without = GenerationRequest.make([{"role": "user", "content": "rate this"}], SAMPLING)
        results = collect(on, [with_schema, without])
        assert [r.text for r in results] == ['{"answer": "4"}'] * 2
        by_text = {b["messages"][0]["content"]: b for b in teacher.requests()}
        assert by_text["rate it"]["response_format"] == {
            "type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": False}}
        assert "response_format" not in by_text["rate this"]

        off = build_backend(TeacherConfig(model=teacher.model, base_url=teacher.base_url))
        assert off.structured_output is False
        before = len(teacher.requests())
        collect(off, [with_schema])
        assert "response_format" not in teacher.requests()[before]


def test_raw_completion_against_a_real_transformers_serve(gsm8k_server):
    """``transformers serve`` implements /v1/completions: the tiny GSM8K model continues the
    pre-query prefix (stop at its end-of-turn marker, sampled with a seed)."""
    backend = OpenAIBackend(gsm8k_server.model, base_url=gsm8k_server.base_url)
    sampling = SamplingParams(temperature=1.0, max_tokens=24, seed=0, stop=("<|end|>",))
    results = collect(backend, [GenerationRequest.raw("<|user|>\n", sampling, i, step="query") for i in range(2)])
    for r in results:
        assert r.error_kind is None, r.error
        assert isinstance(r.text, str) and r.text.strip() and "<|end|>" not in r.text
        assert r.finish_reason in ("stop", "length") and 0 < r.tokens_out <= 24


def test_transformers_raw_prompt_is_continued_as_it_is_in_a_batch_with_chat_requests():
    """The in-process backend continues a raw prompt without applying the chat template or
    adding special tokens: the built-in teacher's greedy answer to the prompt written out by
    hand equals its answer to the same chat request, in one mixed batch."""
    question = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    greedy = SamplingParams(temperature=0.0, max_tokens=48)
    backend = TransformersBackend("builtin:teacher", device="cpu", path=str(builtin_model_path("teacher")))
    by_hand = f"<|user|>\n{question}<|end|>\n<|assistant|>\n"
    raw, chat = collect(backend, [GenerationRequest.raw(by_hand, greedy),
                                  GenerationRequest.make([{"role": "user", "content": question}], greedy)])
    assert raw.error_kind is None and chat.error_kind is None
    assert raw.text == chat.text and "def solution" in raw.text
    assert raw.tokens_in == chat.tokens_in  # the same tokens: no BOS added, no template applied twice
    assert TransformersBackend.raw_completions and OpenAIBackend.raw_completions


def test_cache_key_tells_raw_prompts_and_schemas_apart():
    """Cached responses of a raw prompt, a chat request and a schema'd request never mix."""
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    keys = {
        backend.cache_key(GenerationRequest.raw("<|user|>\n", SAMPLING)),
        backend.cache_key(GenerationRequest.raw("<|system|>\nx<|end|>\n<|user|>\n", SAMPLING)),
        backend.cache_key(GenerationRequest.make([{"role": "user", "content": "<|user|>\n"}], SAMPLING)),
        backend.cache_key(GenerationRequest.make([{"role": "user", "content": "<|user|>\n"}], SAMPLING, schema=SCHEMA)),
    }
    assert len(keys) == 4
    structured = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", structured_output=True)
    schemad = GenerationRequest.make([{"role": "user", "content": "x"}], SAMPLING, schema=SCHEMA)
    free = GenerationRequest.make([{"role": "user", "content": "x"}], SAMPLING)
    assert structured.cache_key(schemad) != backend.cache_key(schemad)  # constrained answers are cached apart
    assert structured.cache_key(free) == backend.cache_key(free)
    assert json.loads(GenerationRequest.make([], SAMPLING, schema=SCHEMA).schema) == SCHEMA


def test_structured_output_is_in_the_data_hash_only_when_on():
    """Off (the default) it is left out of the resolved recipe, so recipes written before it
    existed keep their data hash (and run directories); on, it changes the hash."""
    from distillery.recipe import Recipe
    from tests.helpers import REPO

    off = Recipe.from_yaml(REPO / "recipes" / "gsm8k.yaml")
    on = Recipe.from_yaml(REPO / "recipes" / "gsm8k.yaml", {"teacher.structured_output": True})
    assert "structured_output" not in off.to_yaml() and "structured_output: true" in on.to_yaml()
    assert off.data_hash() != on.data_hash()
    assert off.teacher.structured_output is False and on.teacher.structured_output is True
