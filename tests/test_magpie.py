"""Magpie (Xu et al., 2024): pre-query prefixes of real chat templates, the query filters, the
recipe's checks, and whole runs through ``Pipeline``.

Real everywhere: tokenizers and chat templates (the built-in teacher's, the tiny GSM8K
model's), the HTTP client, cache, pipeline and stages; ``transformers serve`` and the
in-process ``transformers`` backend run real (tiny, poor) models. Replayed: in the replay
test only, the answers of a capable chat model (hand-written user turns and responses).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distillery import registry
from distillery.backends.base import Backend, SamplingParams
from distillery.builtin.models import builtin_model_path
from distillery.errors import BackendError, RecipeError
from distillery.generate.checks import refusal_phrase
from distillery.generate.magpie import (
    Magpie,
    _bos_added,
    end_of_turn,
    extract_query,
    load_tokenizer,
    normalise,
    post_query_suffix,
    pre_query_prefix,
    template_markers,
)
from distillery.generate.strategy import GenerationContext
from distillery.io.seeds import SeedRow
from distillery.pipeline.runner import Pipeline
from distillery.recipe import Recipe
from distillery.records import RECORD_FIELDS
from tests.helpers import REPO
from tests.replay_server import ReplayTeacher

RECIPE = REPO / "recipes" / "magpie.yaml"
TEACHER = builtin_model_path("teacher")
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' "
    "+ m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
QUERY_REASONS = {"empty_query", "template_leak", "truncated_query", "short_query", "duplicate_query", "wrong_language",
                 "low_confidence"}


# -- the chat template ---------------------------------------------------------------------------
def test_pre_query_prefix_of_the_builtin_and_tiny_gsm8k_templates(tiny_gsm8k_model: Path):
    """The prefix is the template's text before the user's content, with a system turn if asked."""
    for path in (TEACHER, tiny_gsm8k_model):
        tok = load_tokenizer(str(path))
        assert pre_query_prefix(tok) == "<|user|>\n"
        assert pre_query_prefix(tok, "Be brief.") == "<|system|>\nBe brief.<|end|>\n<|user|>\n"
        assert post_query_suffix(tok) == "<|end|>\n"
        assert end_of_turn(tok) == ["<|end|>"]
        markers = template_markers(tok)
        assert {"<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|bos|>"} <= set(markers)
        assert not _bos_added(tok)
    assert load_tokenizer("builtin:teacher").chat_template == tok.chat_template


def test_pre_query_prefix_of_a_llama3_style_template_keeps_bos_and_finds_the_end_of_turn():
    """A Llama-3-style template (BOS written by the template, header tokens, ``trim``)."""
    tok = load_tokenizer("builtin:teacher")
    tok.chat_template = LLAMA3
    tok.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    assert pre_query_prefix(tok) == "<|bos|><|start_header_id|>user<|end_header_id|>\n\n"
    assert end_of_turn(tok) == ["<|eot_id|>", "<|end|>"]
    markers = template_markers(tok)
    assert "<|start_header_id|>assistant<|end_header_id|>" in markers and "<|eot_id|>" in markers
    assert "<|start_header_id|>user<|end_header_id|>" in markers  # the user header, BOS removed


def test_a_bos_the_server_adds_itself_is_left_out_of_the_prefix_sent_to_it(tmp_path: Path):
    """A Mistral-style tokenizer whose encoding adds BOS (as a server's does): the prefix sent
    to an ``openai`` backend has no BOS (the server adds it), the in-process backend's keeps it
    (it tokenizes raw prompts without special tokens). Its end of turn is ``[/INST]``."""
    from tokenizers.processors import TemplateProcessing

    tok = load_tokenizer("builtin:teacher")
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="<|bos|> $A", special_tokens=[("<|bos|>", 1)])
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
                         "{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{ m['content'] + eos_token }}{% endif %}"
                         "{% endfor %}")
    tok.save_pretrained(tmp_path / "tok")
    assert _bos_added(load_tokenizer(str(tmp_path / "tok")))
    served = Recipe.from_yaml(RECIPE, {"generation.tokenizer": str(tmp_path / "tok")})
    strategy = served.generation.build(served)
    assert strategy.prefix(None) == "[INST] " and strategy._load().stops == ["[/INST]", "<|end|>"]
    local = Recipe.from_yaml(RECIPE, {"teacher.backend": "transformers", "teacher.model": "builtin:teacher",
                                      "generation.tokenizer": str(tmp_path / "tok")})
    assert local.generation.build(local).prefix(None) == "<|bos|>[INST] "


def test_a_template_without_chat_template_or_that_rewrites_the_user_text_is_a_recipe_error():
    tok = load_tokenizer("builtin:teacher")
    tok.chat_template = "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}"
    with pytest.raises(RecipeError, match="pre_query_template"):
        pre_query_prefix(tok)
    tok.chat_template = "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}" \
                        "{% endif %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(RecipeError, match="cannot render a system/user conversation"):
        pre_query_prefix(tok, "sys")
    tok.chat_template = None
    with pytest.raises(RecipeError, match="has no chat template"):
        pre_query_prefix(tok)
    with pytest.raises(RecipeError, match="generation.tokenizer: cannot load a tokenizer from"):
        load_tokenizer("/nonexistent/tokenizer-folder")


# -- the filters -----------------------------------------------------------------------------------
MARKERS = ["<|assistant|>", "<|system|>", "<|user|>", "<|bos|>", "<|end|>", "<|pad|>"]


@pytest.mark.parametrize(("text", "query", "reason"), [
    ("  How do I sort a dict by value in Python?\n", "How do I sort a dict by value in Python?", None),
    ("What is the capital of Peru?<|end|>\n<|assistant|>\nLima.", "What is the capital of Peru?", None),
    ("", None, "empty_query: the teacher wrote no user turn"),
    ("   \n ", None, "empty_query: the teacher wrote no user turn"),
    ("<|user|>\n<|assistant|>", None, "empty_query: only template tokens"),
    ("<|end|>", None, "empty_query: the teacher wrote no user turn"),
    ("Explain recursion<|assistant|>Recursion is when", None, "template_leak: the turn contains '<|assistant|>'"),
    ("Tell me a joke <|im_start|>assistant", None, "template_leak: the turn contains '<|im_start|>'"),
    ("Summarise this [/INST] Sure", None, "template_leak: the turn contains '[/INST]'"),
    ("Hi", None, "short_query: 1 word(s) < 3"),
    ("hello there", None, "short_query: 2 word(s) < 3"),
])
def test_extract_query(text, query, reason):
    got, why = extract_query(text, ["<|end|>"], MARKERS, min_words=3)
    assert got == query
    assert (why is None) if reason is None else why.startswith(reason)


def test_normalise_and_refusal():
    assert normalise("  How  do I\nsort a LIST? ") == normalise("how do i sort a list?")
    assert refusal_phrase("I'm sorry, but I can't help with that request.", at_start=True) == "I'm sorry"
    assert refusal_phrase("I cannot provide instructions for that.", at_start=True) == "I cannot provide"
    assert refusal_phrase("As an AI language model, I cannot browse the internet.", at_start=True) == "As an AI language model, I cannot"
    assert refusal_phrase("Sure! Here is a poem about the sea.", at_start=True) is None
    assert refusal_phrase("Sorry to hear that; here is how to fix it.", at_start=True) is None
    assert refusal_phrase(None, at_start=True) is None


# -- the recipe's checks -----------------------------------------------------------------------------
def test_openai_backend_needs_a_tokenizer_or_a_pre_query_template():
    with pytest.raises(RecipeError, match="set generation.tokenizer .* or generation.pre_query_template"):
        Recipe.from_yaml(RECIPE, {"generation.tokenizer": None})
    recipe = Recipe.from_yaml(RECIPE, {"generation.tokenizer": None,
                                       "generation.pre_query_template": "<|user|>\n"})
    assert recipe.generation.pre_query_template == "<|user|>\n"
    with pytest.raises(RecipeError, match="system message cannot be placed"):
        Recipe.from_yaml(RECIPE, {"generation.tokenizer": None, "generation.pre_query_template": "<|user|>\n",
                                  "generation.system": "Be brief."})
    with pytest.raises(RecipeError, match="unknown ISO 639-1 language code 'xx'"):
        Recipe.from_yaml(RECIPE, {"generation.languages": ["xx"]})


class NoRawBackend(Backend):
    kind = "no_raw_test"

    @classmethod
    def from_config(cls, config, base_dir=None):
        return cls(config.model)


def test_a_backend_without_raw_completions_is_a_clear_error_naming_it():
    """Checked when the recipe is validated (from the registered class), and again at the first
    ``generate`` call (from the run's backend)."""
    registry.add("backend", "no_raw_test", NoRawBackend)
    try:
        with pytest.raises(RecipeError) as info:
            Recipe.from_yaml(RECIPE, {"teacher.backend": "no_raw_test"})
        assert ("generation.strategy magpie needs raw text completions; backend 'no_raw_test' does not serve them "
                "(use transformers or an OpenAI-compatible server with /v1/completions)") in str(info.value)
    finally:
        registry.remove("backend", "no_raw_test")
    recipe = Recipe.from_yaml(RECIPE, {"generation.tokenizer": str(TEACHER)})
    strategy = recipe.generation.build(recipe)
    assert isinstance(strategy, Magpie)
    ctx = GenerationContext(strategy, NoRawBackend("m"), [], SamplingParams(), "slots", "slots", "id", False)
    with pytest.raises(BackendError, match="backend 'no_raw_test' does not serve them"):
        asyncio.run(strategy.generate([SeedRow(0, 1, {})], ctx))


# -- whole runs --------------------------------------------------------------------------------------
GOOD = "How do I reverse a list in Python without changing the original list?"
QUERIES = [
    GOOD,                                                                   # 0 accepted
    "",                                                                     # 1 empty_query
    "What is the capital of Australia?<|end|>\n<|assistant|>\nCanberra.",   # 2 accepted (cut at the end of turn)
    "Explain photosynthesis<|assistant|>Photosynthesis is the process",     # 3 template_leak
    "  how do I reverse a list in   Python without changing the original list?",  # 4 duplicate_query of 0
    "Hi",                                                                   # 5 short_query
    "Write a short poem about the sea at night.",                           # 6 answered with a refusal
    "<|user|>\n",                                                           # 7 empty_query (template tokens only)
    "Wie kann ich in Python eine Liste umkehren, ohne die ursprüngliche Liste zu verändern?",  # 8 wrong_language
    "Please " + "tell me more and more " * 12 + "about everything",         # 9 truncated_query (no end of turn)
    "Give me three tips for staying focused while studying at home.",      # 10 accepted (slot with a system prompt)
]
RESPONSES = [
    ("reverse a list", "Use slicing: reversed_copy = my_list[::-1] returns a new list in reverse order and leaves "
                       "my_list unchanged. The built-in reversed() gives an iterator if you do not need a list."),
    ("capital of Australia", "The capital of Australia is Canberra, not Sydney as many people assume; it was "
                             "chosen as a compromise between Sydney and Melbourne."),
    ("poem about the sea", "I'm sorry, but I can't write poems."),
    ("staying focused", "Keep a fixed study spot, silence your phone and work in 25-minute blocks with short breaks "
                        "between them; write down a goal for each block before you start."),
]


def replay_rules():
    def query(text: str, body: dict) -> str:
        return QUERIES[int(body["seed"])]
    return [(r"<\|user\|>\n\Z", query), *RESPONSES]


def write_slots(path: Path, n: int) -> Path:
    with open(path, "w") as fh:
        for i in range(n):
            row = {"id": f"slot-{i}"}
            if i == 10:
                row["system"] = "You are a helpful study coach."
            fh.write(json.dumps(row) + "\n")
    return path


def test_replay_teacher_end_to_end(tmp_path: Path):
    """The recipe against the replay teacher, with the built-in teacher's tokenizer as the chat
    template: good, empty, template-leaking, duplicate, short, foreign-language and truncated
    queries, and a refused response. 11 slots -> 3 accepted (accept rate 3/11)."""
    out = tmp_path / "run"
    with ReplayTeacher(replay_rules()) as teacher:
        overrides = {
            "seeds.path": str(write_slots(tmp_path / "slots.jsonl", len(QUERIES))),
            "seeds.limit": None,
            "teacher.base_url": teacher.base_url, "teacher.model": teacher.model, "teacher.concurrency": 4,
            "teacher.sampling.max_tokens": 64,
            "generation.tokenizer": str(TEACHER), "generation.query_max_tokens": 40,
            "output.dir": str(out), "output.batch_size": 16, "report.embedding_model": None,
        }
        recipe = Recipe.from_yaml(RECIPE, overrides)
        report = Pipeline(recipe, progress=False).run()
        bodies = teacher.requests()
        assert not teacher.unmatched
    accepted = pq.read_table(out / "accepted.parquet").to_pylist()
    rejected = pq.read_table(out / "rejected.parquet").to_pylist()
    assert report["candidates"] == len(QUERIES) == len(accepted) + len(rejected)
    assert report["accepted"] == 3 and report["accept_rate"] == round(3 / 11, 4)

    by_slot = {r["seed_id"]: r for r in accepted + rejected}
    assert sorted(r["seed_id"] for r in accepted) == ["slot-0", "slot-10", "slot-2"]
    reasons = {r["seed_id"]: r["reject_reason"] for r in rejected}
    assert {k: v.split(":")[0] for k, v in reasons.items()} == {
        "slot-1": "empty_query", "slot-3": "template_leak", "slot-4": "duplicate_query", "slot-5": "short_query",
        "slot-6": "refusal", "slot-7": "empty_query", "slot-8": "wrong_language", "slot-9": "truncated_query",
    }
    assert "same as slot-0#0" in reasons["slot-4"] and "I'm sorry" in reasons["slot-6"]
    assert reasons["slot-8"].startswith("wrong_language: de")

    # requests: 11 raw query completions (the prefix only, sampled hot, stop at the end of turn),
    # then chat answers for the 4 queries that passed (the refused one included); no JSON schema
    raw = [b for b in bodies if "prompt" in b]
    chat = [b for b in bodies if "messages" in b]
    assert len(raw) == 11 and len(chat) == 4 and len(bodies) == 15
    assert sorted(b["seed"] for b in raw) == list(range(11))
    assert all(b["temperature"] == 1.0 and b["top_p"] == 1.0 and b["max_tokens"] == 40 and b["stop"] == ["<|end|>"]
               for b in raw)
    assert {b["prompt"] for b in raw} == {"<|user|>\n", "<|system|>\nYou are a helpful study coach.<|end|>\n<|user|>\n"}
    assert all(b["temperature"] == 0.7 and "response_format" not in b for b in chat)

    for r in accepted + rejected:
        assert list(r)[: len(RECORD_FIELDS)] == list(RECORD_FIELDS)
        assert r["strategy"] == "magpie" and json.loads(r["strategy_params"])["query_temperature"] == 1.0
        assert r["steps"][0]["name"] == "query" and r["steps"][0]["prompt"][0]["role"] == "raw"
        assert r["steps"][0]["prompt"][0]["content"] == r["magpie_prefix"]
        assert r["query_tokens"] == r["steps"][0]["tokens_out"]
        assert r["id"] == f"{r['seed_id']}#{r['sample_index']}"
    good = by_slot["slot-0"]
    assert good["prompt"] == [{"role": "user", "content": GOOD}] and good["magpie_prefix"] == "<|user|>\n"
    assert good["response"].startswith("Use slicing") and good["messages"][-1]["role"] == "assistant"
    assert by_slot["slot-2"]["prompt"][-1]["content"] == "What is the capital of Australia?"
    coached = by_slot["slot-10"]
    assert coached["prompt"] == [{"role": "system", "content": "You are a helpful study coach."},
                                 {"role": "user", "content": QUERIES[10]}]
    assert coached["magpie_prefix"].startswith("<|system|>\nYou are a helpful study coach.")
    leak = by_slot["slot-3"]
    assert leak["response"] is None and leak["completion"] == [] and leak["reject_stage"] == "generate"
    assert json.loads(leak["verdicts"][-1]["detail"])["raw"] == QUERIES[3]
    assert by_slot["slot-6"]["response"] == "I'm sorry, but I can't write poems."

    # the same recipe again from the cache: no calls
    again = Pipeline(recipe, progress=False, fresh=True).run()
    assert again["cache"]["session_backend_calls"] == 0 and again["accepted"] == 3


def check_run(out: Path, report: dict, slots: int, backend: str) -> list[dict]:
    accepted = pq.read_table(out / "accepted.parquet").to_pylist()
    rejected = pq.read_table(out / "rejected.parquet").to_pylist()
    records = accepted + rejected
    assert report["candidates"] == slots == len(records) and report["accepted"] == len(accepted)
    for r in records:
        assert r["strategy"] == "magpie" and r["backend"] == backend and r["magpie_prefix"] == "<|user|>\n"
        assert r["steps"][0]["name"] == "query" and r["steps"][0]["response"] is not None
        assert r["prompt"][-1]["role"] == "user"
    for r in rejected:
        assert r["reject_reason"] and r["reject_stage"]
    for r in accepted:
        assert r["prompt"][-1]["content"].strip() and r["response"].strip()
    return records


def test_builtin_teacher_in_process_end_to_end(tmp_path: Path):
    """The recipe with the in-process backend on the built-in teacher (its own template). The
    toy model was trained only to answer, so its user turns are poor (mostly the same
    repeated word): mechanics only."""
    out = tmp_path / "run"
    recipe = Recipe.from_yaml(RECIPE, {
        "teacher.backend": "transformers", "teacher.model": "builtin:teacher", "teacher.base_url": None,
        "teacher.device": "cpu", "teacher.sampling.max_tokens": 32, "generation.tokenizer": None,
        "generation.languages": None, "generation.queries_per_seed": 2, "seeds.limit": 4,
        "output.dir": str(out), "output.batch_size": 4, "report.embedding_model": None,
    })
    report = Pipeline(recipe, progress=False).run()
    records = check_run(out, report, 8, "transformers")
    assert sorted(r["sample_index"] for r in records) == list(range(8))
    assert report["cache"]["session_backend_calls"] >= 8


def test_gsm8k_server_end_to_end(gsm8k_server, tiny_gsm8k_model: Path, tmp_path: Path):
    """The recipe against a real ``transformers serve`` (tiny GSM8K model) through
    /v1/completions, with the model folder as ``generation.tokenizer``: it writes GSM8K-like
    (garbled) questions, which are then answered."""
    out = tmp_path / "run"
    recipe = Recipe.from_yaml(RECIPE, {
        "teacher.base_url": gsm8k_server.base_url, "teacher.model": gsm8k_server.model, "teacher.concurrency": 4,
        "teacher.sampling.max_tokens": 48, "generation.tokenizer": str(tiny_gsm8k_model),
        "generation.query_max_tokens": 96, "generation.languages": None, "seeds.limit": 6,
        "output.dir": str(out), "output.batch_size": 6, "report.embedding_model": None,
    })
    served = gsm8k_server.completions_served()
    report = Pipeline(recipe, progress=False).run()
    records = check_run(out, report, 6, "openai")
    answered = [r for r in records if r["response"] is not None]
    assert gsm8k_server.completions_served() - served == len(answered)  # chat calls: one per query that passed
    for r in records:
        if r["response"] is None:
            assert r["reject_reason"].split(":")[0] in QUERY_REASONS
