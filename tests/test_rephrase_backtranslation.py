"""Strategies ``rephrase`` (WRAP, Maini et al., 2024) and ``backtranslation`` (Humpback, Li et al., 2023).

Real: chunking, the n-gram overlap / length / Q-A filters, score parsing, the originals ratio,
the pipeline, HTTP client, cache and stages; the backtranslation documents are real Python
documentation topics (``builtin:pydoc_topics``); the last tests run the shipped recipes against a
real ``transformers serve`` with the tiny GSM8K model. Replayed: the ``ReplayTeacher``
end-to-end tests fake only a capable model's outputs (hand-written rephrasings and
instructions, ratings in several formats, a copy, a refusal, a truncated chunk, a rating
without a digit) behind a real local OpenAI-compatible server.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from distillery.builtin.sources import pydoc_topics
from distillery.generate.parse import score
from distillery.generate.rephrase import (
    ORIGINAL_INDEX,
    STYLE_INDEX,
    chunk_document,
    has_qa,
    judge_rephrasing,
    keep_original,
    ngram_overlap,
)
from distillery.recipe import Recipe
from distillery.text import words
from tests.helpers import run_pipeline
from tests.replay_server import ReplayTeacher

RECIPES = Path(__file__).resolve().parents[1] / "recipes"




# -- chunking and the rephrasing filters ----------------------------------------------------------

def test_chunks_follow_paragraphs_and_keep_every_word():
    paras = ["Short opening paragraph.", "A" * 10 + " second paragraph with some words in it.", "Third one. " * 12,
             "\n".join(f"line {i} of a code block" for i in range(30)), "x" * 700]
    text = "\n\n".join(paras)
    chunks = chunk_document(text, 300)
    assert all(0 < len(c) <= 300 for c in chunks)
    assert "".join("".join(chunks).split()) == "".join(text.split())  # nothing lost, nothing reordered
    assert words("\n\n".join(chunks[:-3])) == words(text)[: len(words("\n\n".join(chunks[:-3])))]
    assert chunks[-3:] == ["x" * 300, "x" * 300, "x" * 100]  # a word longer than a chunk is cut
    assert chunks[0] == "\n\n".join([paras[0], paras[1], paras[2].rstrip()])  # small paragraphs are packed together
    assert any(c.startswith("line 0 of a code block\nline 1") for c in chunks)  # a long paragraph is cut on lines
    assert chunk_document("one paragraph", 1500) == ["one paragraph"]
    doc = next(iter(pydoc_topics({"min_chars": 2500})))["text"]
    assert len(chunk_document(doc, 1500)) >= 2 and all(len(c) <= 1500 for c in chunk_document(doc, 1500))
    assert words(" ".join(chunk_document(doc, 1500))) == words(doc)


SOURCE = ("Tides are the regular rise and fall of the sea. They are caused mainly by the gravity of the Moon, and to a "
          "lesser degree the Sun, pulling on the oceans. Most coasts see two high tides and two low tides every day.")
EASY = ("The sea goes up and down every day. This is called the tide. The Moon pulls on the water, and the Sun pulls "
        "a little too. So on most beaches the water comes in two times a day and goes out two times a day.")


def test_overlap_length_and_qa_filters():
    assert ngram_overlap(SOURCE, SOURCE) == 1.0
    assert ngram_overlap(EASY, SOURCE) < 0.2
    assert ngram_overlap("too short", SOURCE) == 0.0
    kwargs = {"min_length_ratio": 0.3, "max_overlap": 0.8}
    assert judge_rephrasing(SOURCE, EASY, "easy", **kwargs) is None
    assert judge_rephrasing(SOURCE, SOURCE, "easy", **kwargs).startswith("copied: 1.00 of the rephrasing's word 4-grams")
    assert judge_rephrasing(SOURCE, "Tides go up and down.", "easy", **kwargs).startswith("too_short: the rephrasing has 0.10")
    assert judge_rephrasing(SOURCE, EASY, "qa", **kwargs).startswith("no_qa:")
    assert judge_rephrasing(SOURCE, "I'm sorry, but I cannot rephrase this text. " * 3, "easy", **kwargs).startswith("refusal:")
    qa = "Question: What are tides?\nAnswer: The daily rise and fall of the sea.\nQuestion: What causes them?\nAnswer: Mostly the Moon."
    assert has_qa(qa) and has_qa("**Q1.** Why?\n**A1.** Because.") and not has_qa(EASY)
    assert judge_rephrasing(SOURCE, qa, "qa", **kwargs) is None


def test_originals_ratio():
    keys = [f"doc-{i}" for i in range(400)]
    assert all(keep_original(0, k, 1.0) for k in keys)
    assert not any(keep_original(0, k, 0.0) for k in keys)
    half = [k for k in keys if keep_original(0, k, 0.5)]
    assert 160 < len(half) < 240 and half == [k for k in keys if keep_original(0, k, 0.5)]  # seeded
    assert half != [k for k in keys if keep_original(1, k, 0.5)]


def test_styles_config():
    base = {"seeds": {"path": "builtin:pydoc_topics"}, "teacher": {"model": "m"}}
    recipe = Recipe.from_dict({**base, "generation": {"strategy": "rephrase", "styles": ["wikipedia", "hard"]}})
    assert recipe.generation.styles == ["encyclopedic", "hard"] and recipe.generation.build(recipe).inputs == {"text"}
    from distillery.errors import RecipeError
    with pytest.raises(RecipeError, match="unknown style 'poetic'"):
        Recipe.from_dict({**base, "generation": {"strategy": "rephrase", "styles": ["poetic"]}})
    with pytest.raises(RecipeError, match="given twice"):
        Recipe.from_dict({**base, "generation": {"strategy": "rephrase", "styles": ["wikipedia", "encyclopedic"]}})


@pytest.mark.parametrize(("text", "expected"), [
    ("Score: 4", 4.0),
    ("4/5", 4.0),
    ('{"score": 5}', 5.0),
    ('{"reasoning": "Covers 3 of the points.", "score": 5}', 5.0),
    ("The answer is complete and written like an assistant.\nScore: 4", 4.0),
    ("Rating: 3/5", 3.0),
    ("**Score:** 5", 5.0),
    ("I would score it 3 at first glance, but it is only a bare list.\nScore: 2", 2.0),  # the last score wins
    ("I'd rate this a five", None),  # no digit: rejected
    ("Score: 9/10", None),  # another scale
    ("", None),
])
def test_quality_score(text: str, expected: float | None):
    value, reason = score(text, 1, 5)
    assert value == expected
    if expected is None:
        assert reason.startswith(("no_score:", "empty_response:"))


# -- rephrase, replay teacher ---------------------------------------------------------------------

DOCS = {
    "tides": SOURCE,
    "volcano": ("A volcano is an opening in the crust of a planet through which molten rock, ash and gases escape. "
                "Volcanoes often form where tectonic plates pull apart or push together, and many sit along the edge "
                "of the Pacific Ocean in a belt known as the Ring of Fire."),
    "bees": ("Honey bees live in colonies of tens of thousands of workers, a few hundred drones and a single queen. "
             "Workers gather nectar and pollen, build wax comb and care for the young, while the queen lays up to two "
             "thousand eggs a day during the summer."),
    "river": ("A river is a natural stream of fresh water that flows towards an ocean, a lake or another river. Rivers "
              "begin at a source such as a spring or melting glacier, and they carve valleys as they carry sediment "
              "downstream to their mouth."),
    "bread": ("Bread is made by mixing flour, water, salt and yeast into a dough. The yeast feeds on sugars in the flour "
              "and releases carbon dioxide, which forms bubbles that make the dough rise over an hour or two.\n\n"
              "After the first rise the dough is knocked back, shaped into loaves and left to rise again. This second "
              "rise, called proofing, gives the finished loaf an even crumb and a light texture.\n\n"
              "Finally the loaves are baked in a hot oven. The heat kills the yeast, sets the crumb and browns the "
              "crust through the Maillard reaction, which gives bread its smell and colour."),
}
EASY_ANSWERS = {
    "tides": EASY,
    "volcano": DOCS["volcano"],  # a copy
    "bees": "Sure! Here's a simpler version:\n\nBees live together in a big family. Most of them are workers. They "
            "fly to flowers to get food, make wax homes and look after the babies. The queen bee lays lots and lots "
            "of eggs, up to two thousand every summer day.",
    "river": "Rivers are water that moves.",  # far shorter than the source
    "mixing flour": "To make bread you mix flour, water, salt and yeast. The yeast eats sugar and makes tiny gas "
                    "bubbles. The bubbles make the dough grow bigger.",
    "knocked back": "Then you squash the dough, make it into loaves and let it grow again. This makes the bread soft "
                    "and light inside.",
    "baked in a hot oven": "Last, you bake the bread in a hot oven. The heat makes the inside firm and the outside "
                           "brown, and that is why bread smells so good.",
}
QA_ANSWERS = {
    "tides": "Here are some questions and answers based on the text:\n\nQuestion: What are tides?\nAnswer: They are "
             "the regular rise and fall of the sea.\nQuestion: What causes tides?\nAnswer: Mostly the pull of the "
             "Moon's gravity on the oceans, and the Sun's to a lesser degree.\nQuestion: How many tides do most coasts "
             "get a day?\nAnswer: Two high tides and two low tides.",
    "volcano": "Volcanoes are openings in a planet's crust. Molten rock, ash and gas come out of them. They usually "
               "appear where tectonic plates meet or separate, and lots of them ring the Pacific Ocean.",  # no Q/A
    "bees": "I'm sorry, but I can't help with rewriting this text.",
    "river": "Question: What is a river?\nAnswer: A natural stream of fresh water flowing to an ocean, a lake or "
             "another river.\nQuestion: Where do rivers start?\nAnswer: At a source like a spring or a melting "
             "glacier.\nQuestion: What do rivers do to the land?\nAnswer: They carve valleys and carry sediment downstream.",
    "mixing flour": "Question: What goes into bread dough?\nAnswer: Flour, water, salt and yeast.\nQuestion: Why does "
                    "dough rise?\nAnswer: Yeast releases carbon dioxide that forms bubbles.",
    "knocked back": " ".join(["Question: What happens after the first rise? Answer: The dough is shaped."] * 20),
    "baked in a hot oven": "Question: What does baking do?\nAnswer: It kills the yeast, sets the crumb and browns "
                           "the crust.",
}


def rephrase_rules() -> list:
    """A rule per (style, document or chunk): the style's instruction, then the text sent."""
    rules = []
    for phrase, answers in (("very simple language", EASY_ANSWERS), ("series of questions and answers", QA_ANSWERS)):
        for key, answer in answers.items():
            start = re.escape(DOCS[key][:40]) if key in DOCS else r"[^\n]*" + re.escape(key)
            rules.append((phrase + r".*Text:\n" + start, answer))
    return rules


def test_rephrase_end_to_end_against_a_replay_teacher(tmp_path: Path):
    """Real pipeline + HTTP + cache; the teacher is replayed (hand-written rephrasings, a copy,
    a far-too-short one, a refusal, a prose answer to the qa style, a truncated chunk)."""
    seeds = tmp_path / "docs.jsonl"
    seeds.write_text("".join(json.dumps({"id": k, "title": k, "text": v}) + "\n" for k, v in DOCS.items()))
    with ReplayTeacher(rephrase_rules(), default=None) as teacher:
        out = tmp_path / "run"
        recipe = Recipe.from_dict({
            "seeds": {"path": str(seeds)},
            "teacher": {"model": teacher.model, "base_url": teacher.base_url, "concurrency": 4,
                        "sampling": {"max_tokens": 150, "seed": 0}},
            "generation": {"strategy": "rephrase", "styles": ["qa", "easy"], "originals_ratio": 1.0,
                           "max_chunk_chars": 300, "min_length_ratio": 0.3, "max_overlap": 0.8},
            "dedup": [{"type": "exact", "fields": ["response"]}, {"type": "minhash", "threshold": 0.8, "fields": ["response"]}],
            "output": {"dir": str(out)},
            "report": {"embedding_model": None},
        })
        report, accepted, rejected = run_pipeline(recipe, out)
        assert not teacher.unmatched
        assert len(teacher.requests()) == 4 * 2 + 3 * 2  # the bread document is three chunks
    assert report["candidates"] == 15 and len(accepted) == 10
    reasons = {r["id"]: r["reject_reason"] for r in rejected}
    assert reasons["volcano#0"].startswith("copied: 1.00 of the rephrasing's word 4-grams are in the source > 0.8")
    assert reasons["volcano#3"] == "no_qa: the qa rephrasing has no 'Question:' / 'Answer:' pair"
    assert reasons["bees#3"] == "refusal: the teacher declined the rephrase call"
    assert reasons["river#0"].startswith("too_short: the rephrasing has 0.1")
    assert reasons["bread#3"] == "truncated: the rephrase (chunk 2/3) step was cut off at max_tokens=150"
    assert len(reasons) == 5

    by_id = {r["id"]: r for r in accepted + rejected}
    assert {r["id"] for r in accepted} == {"tides#0", "tides#3", "bees#0", "bread#0", "river#3"} | {f"{k}#4" for k in DOCS}
    for r in accepted + rejected:
        assert r["strategy"] == "rephrase" and r["source_id"] == r["seed_id"] and r["source_chars"] == len(DOCS[r["seed_id"]])
        params = json.loads(r["strategy_params"])
        assert params["styles"] == ["qa", "easy"] and params["originals_ratio"] == 1.0
    for key, doc in DOCS.items():  # one original per document, from the seed, with an empty prompt
        original = by_id[f"{key}#{ORIGINAL_INDEX}"]
        assert original["style"] == "original" and original["response"] == doc and original["backend"] == "seed"
        assert original["prompt"] == [] and original["teacher"] is None and original["steps"] == []
    bread = by_id["bread#0"]
    assert bread["style"] == "easy" and bread["sample_index"] == STYLE_INDEX["easy"]
    assert [s["name"] for s in bread["steps"]] == ["rephrase:easy 1/3", "rephrase:easy 2/3", "rephrase:easy 3/3"]
    assert bread["response"] == "\n\n".join(EASY_ANSWERS[k] for k in ("mixing flour", "knocked back", "baked in a hot oven"))
    assert DOCS["bread"] in bread["prompt"][-1]["content"]  # the record's prompt: the instruction with the whole document
    assert all(DOCS["bread"] not in s["prompt"][-1]["content"] for s in bread["steps"])  # each call saw one chunk
    assert bread["tokens_out"] is None and all(s["tokens_out"] for s in bread["steps"])  # each chunk call has its own
    tides_qa = by_id["tides#3"]
    assert tides_qa["response"].startswith("Question: What are tides?")  # the chat preamble is gone
    assert json.loads(next(v for v in tides_qa["verdicts"] if v["name"] == "preamble")["detail"])["removed"] == [
        "Here are some questions and answers based on the text:"]
    assert by_id["volcano#0"]["response"] == DOCS["volcano"]  # rejected records keep the text
    assert by_id["bread#3"]["steps"][1]["finish_reason"] == "length"
    rephrasings = [r for r in accepted if r["style"] != "original"]
    print(f"\nrephrase accept rate vs replay teacher: {len(rephrasings)}/10 rephrasings (+5 originals kept)",
          dict(Counter(v.split(":")[0] for v in reasons.values())))


# -- backtranslation, replay teacher --------------------------------------------------------------

def heading(doc: dict) -> str:
    return doc["text"].split("\n", 1)[0]


BT = {  # pydoc topic -> (predicted instruction, curation answer)
    "pydoc-assert": ("Explain how Python's assert statement works, including what happens when optimisation is "
                     "enabled with -O.",
                     "The response explains both forms of the statement and the role of __debug__ precisely. It reads "
                     "like reference documentation rather than a conversational reply, but it answers the instruction "
                     "fully and stays on topic.\nScore: 4"),
    "pydoc-assignment": ("Instruction: What rules does Python follow when it assigns a value to a target list, an "
                         "attribute, a subscription or a slice?",
                         '{"reasoning": "Complete, authoritative and focused on exactly what was asked.", "score": 5}'),
    "pydoc-async": ("How do I define and use coroutines in Python with async def, await, async for and async with?",
                    "This is an excellent, thorough answer. I'd rate this a five."),
    "pydoc-atom-identifiers": ("I'm sorry, but I can't determine what instruction this text is answering.", None),
    "pydoc-atom-literals": ("What kinds of literals does Python support?",
                            "I would score it 3 at first glance, but the response only lists categories of literals "
                            "and points elsewhere for the details, so it does not really answer the question.\nScore: 2"),
    "pydoc-attribute-access": ("Which special methods let a Python class customise attribute access, and when is each "
                               "one called?",
                               " ".join(["The response covers __getattr__, __getattribute__, __setattr__ and "
                                         "__delattr__ in detail and"] * 12)),
    "pydoc-attribute-references": ("What happens when Python evaluates an attribute reference like obj.name?",
                                   "Rating: 4/5. A clear, focused explanation with a minor digression."),
}


def test_backtranslation_end_to_end_against_a_replay_teacher(tmp_path: Path):
    """Real pipeline + HTTP + cache on real documents (Python's documentation topics); the teacher
    is replayed (hand-written instructions and ratings: "Score: 4", JSON, "4/5", a rating with no
    digit, a score below the threshold, a truncated rating, a refused instruction)."""
    docs = list(pydoc_topics({"max_chars": 3000}))[:7]
    assert [d["id"] for d in docs] == list(BT)
    rules = []
    for doc in docs:
        instruction, rating = BT[doc["id"]]
        rules.append((r"Work out what that request was.*Text:\n" + re.escape(heading(doc)), instruction))
        if rating is not None:
            rules.append((r"5-point scale.*Response:\n" + re.escape(heading(doc)), rating))
    with ReplayTeacher(rules, default=None) as teacher:
        out = tmp_path / "run"
        recipe = Recipe.from_dict({
            "seeds": {"path": "builtin:pydoc_topics", "options": {"max_chars": 3000}, "limit": 7},
            "teacher": {"model": teacher.model, "base_url": teacher.base_url, "concurrency": 4, "structured_output": True,
                        "sampling": {"max_tokens": 100, "seed": 0}},
            "generation": {"strategy": "backtranslation"},
            "filters": [{"type": "length", "min_chars": 200, "max_chars": 4000}],
            "output": {"dir": str(out)},
            "report": {"embedding_model": None},
        })
        report, accepted, rejected = run_pipeline(recipe, out)
        assert not teacher.unmatched
        curate = teacher.requests("5-point scale")
        assert len(curate) == 6 and len(teacher.requests("Work out what that request was")) == 7
        assert all(b["response_format"]["type"] == "json_schema" for b in curate)  # the rating's schema was sent
        assert not any("response_format" in b for b in teacher.requests("Work out what that request was"))
    assert report["candidates"] == 7 and len(accepted) == 3
    reasons = {r["id"]: r["reject_reason"] for r in rejected}
    assert reasons["pydoc-async#0"].startswith("no_score: no rating in [1, 5] found in")
    assert reasons["pydoc-atom-identifiers#0"] == "refusal: the teacher declined to write the prompt"
    assert reasons["pydoc-atom-literals#0"] == "low_quality: score 2 < 4"
    assert reasons["pydoc-attribute-access#0"] == "truncated: the curate step was cut off at max_tokens=100"
    assert len(reasons) == 4
    text = {d["id"]: d["text"] for d in docs}
    scores = {r["seed_id"]: r["quality_score"] for r in accepted + rejected}
    assert scores == {"pydoc-assert": 4.0, "pydoc-assignment": 5.0, "pydoc-async": None, "pydoc-atom-identifiers": None,
                      "pydoc-atom-literals": 2.0, "pydoc-attribute-access": None, "pydoc-attribute-references": 4.0}
    for r in accepted + rejected:
        assert r["strategy"] == "backtranslation" and json.loads(r["strategy_params"]) == {"text_field": "text", "threshold": 4.0}
        assert r["response"] == text[r["seed_id"]] and r["source_id"] == r["seed_id"]  # the document is the response
    for r in accepted:
        instruction = BT[r["seed_id"]][0].removeprefix("Instruction: ")
        assert r["prompt"] == [{"role": "user", "content": instruction}]  # the student's prompt: the predicted instruction
        assert [s["name"] for s in r["steps"]] == ["instruction", "curate"]
        assert r["steps"][1]["response"] == BT[r["seed_id"]][1] and instruction in r["steps"][1]["prompt"][-1]["content"]
    refused = next(r for r in rejected if r["seed_id"] == "pydoc-atom-identifiers")
    assert [s["name"] for s in refused["steps"]] == ["instruction"] and refused["prompt"][-1]["content"].startswith("The text below")
    assert json.loads(refused["verdicts"][0]["detail"])["raw"].startswith("I'm sorry")
    print(f"\nbacktranslation accept rate vs replay teacher: {len(accepted)}/{report['candidates']}",
          dict(Counter(v.split(":")[0] for v in reasons.values())))


# -- the shipped recipes against a real server -----------------------------------------------------

def server_overrides(server, out: Path, **extra) -> dict:
    return {"teacher.base_url": server.base_url, "teacher.model": server.model, "teacher.concurrency": 4,
            "teacher.sampling.max_tokens": 48, "output.dir": str(out), "output.batch_size": 2,
            "report.embedding_model": None, **extra}


def check_mechanics(report: dict, accepted: list[dict], rejected: list[dict], strategy: str) -> None:
    assert report["candidates"] == len(accepted) + len(rejected) > 0
    ids = [r["id"] for r in accepted + rejected]
    assert len(set(ids)) == len(ids)
    for r in accepted + rejected:
        assert r["strategy"] == strategy and r["strategy_params"] and r["source_id"] == r["seed_id"]
        if not r["accepted"]:
            assert r["reject_stage"] and r["reject_reason"] and ":" in r["reject_reason"]


def test_rephrase_recipe_against_a_real_server(gsm8k_server, tmp_path: Path):
    """The shipped recipe on real pydoc topics against real `transformers serve` (tiny GSM8K model: poor text)."""
    out = tmp_path / "rephrase"
    recipe = Recipe.from_yaml(RECIPES / "rephrase.yaml", server_overrides(gsm8k_server, out, **{
        "seeds.limit": 2, "seeds.options": {"min_chars": 400, "max_chars": 1200}, "generation.max_chunk_chars": 600}))
    report, accepted, rejected = run_pipeline(recipe, out)
    check_mechanics(report, accepted, rejected, "rephrase")
    records = accepted + rejected
    assert Counter(r["style"] for r in records) == {"encyclopedic": 2, "qa": 2, "original": 2}
    docs = {d["id"]: d["text"] for d in pydoc_topics({"min_chars": 400, "max_chars": 1200})}
    calls = 0
    for r in records:
        assert r["source_chars"] == len(docs[r["seed_id"]])
        if r["style"] == "original":
            assert r["response"] == docs[r["seed_id"]] and r["backend"] == "seed"
        else:
            assert len(r["steps"]) == len(chunk_document(docs[r["seed_id"]], 600)) and r["backend"] == "openai"
            calls += len(r["steps"])
    assert report["cache"]["backend_calls"] == calls


def test_backtranslation_recipe_against_a_real_server(gsm8k_server, tmp_path: Path):
    """The shipped recipe on real pydoc topics against real `transformers serve` (tiny GSM8K model)."""
    out = tmp_path / "backtranslation"
    recipe = Recipe.from_yaml(RECIPES / "backtranslation.yaml", server_overrides(gsm8k_server, out, **{
        "seeds.limit": 4, "seeds.options": {"min_chars": 300, "max_chars": 900}}))
    report, accepted, rejected = run_pipeline(recipe, out)
    check_mechanics(report, accepted, rejected, "backtranslation")
    docs = {d["id"]: d["text"] for d in pydoc_topics({"min_chars": 300, "max_chars": 900})}
    assert report["candidates"] == 4
    for r in accepted + rejected:
        assert r["response"] == docs[r["seed_id"]] and 1 <= len(r["steps"]) <= 2
        assert (r["quality_score"] is None) == (r["reject_reason"] or "").startswith(("truncated", "no_score", "refusal",
                                                                                         "empty", "too_short"))
        if r["accepted"]:
            assert r["quality_score"] >= 4
    assert report["cache"]["backend_calls"] == sum(len(r["steps"]) for r in accepted + rejected)
