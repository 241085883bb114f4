"""Strategies ``persona`` (Persona Hub, Ge et al., 2024) and ``attributes`` (TinyStories, Eldan &
Li, 2023; Cosmopedia, Ben Allal et al., 2024).

Real: the pool and vocabulary parsing, the seeded draws, templates, the pipeline, HTTP client,
cache and stages, and (last tests) a real ``transformers serve`` with the tiny GSM8K model running
the shipped recipes. Replayed: the ``ReplayTeacher`` end-to-end tests fake only a capable
model's outputs (hand-written problems, solutions, stories, refusals, a truncated answer, an
empty one, a duplicate) behind a real local OpenAI-compatible server.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from distillery.backends.base import GenerationResult
from distillery.errors import RecipeError
from distillery.generate.attributes import draw_attributes, join_phrase, load_vocabulary
from distillery.generate.checks import call_failure, refusal, refusal_phrase, strip_preamble
from distillery.generate.persona import clean_instruction, draw_persona, load_personas, shipped_pool_path
from distillery.generate.prompt import PromptBuilder
from distillery.generate.templates import required_variables
from distillery.recipe import Recipe
from tests.helpers import run_pipeline
from tests.replay_server import ReplayTeacher

RECIPES = Path(__file__).resolve().parents[1] / "recipes"




def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- the persona pool -----------------------------------------------------------------------------

def test_persona_pool_text_and_jsonl(tmp_path: Path):
    text = tmp_path / "pool.txt"
    text.write_text("# my pool\nA beekeeper\n\n  A night-shift nurse  \n# another comment\nA carpenter\n")
    assert load_personas(text) == ["A beekeeper", "A night-shift nurse", "A carpenter"]
    jl = write_jsonl(tmp_path / "pool.jsonl", [{"persona": "A chemist", "id": 1}, {"persona": " A florist "}])
    assert load_personas(jl) == ["A chemist", "A florist"]
    gz = tmp_path / "pool.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(json.dumps({"persona": "A pilot"}) + "\n\n")
    assert load_personas(gz) == ["A pilot"]
    shipped = load_personas(shipped_pool_path())
    assert 55 <= len(shipped) <= 70 and len(set(shipped)) == len(shipped)


@pytest.mark.parametrize(("content", "name", "message"), [
    ("", "empty.txt", "empty.txt: the persona pool is empty"),
    ("# only comments\n\n", "comments.txt", "the persona pool is empty"),
    ('{"persona": "A chemist"}\n{"name": "A florist"}\n', "p.jsonl", "p.jsonl:2: no 'persona' field (found: ['name'])"),
    ('{"persona": "A chemist"}\n{"persona": ""}\n', "p.jsonl", "p.jsonl:2: 'persona' must be a non-empty string"),
    ('{"persona": "A chemist"}\n\nnot json\n', "p.jsonl", "p.jsonl:3: not valid JSON"),
    ('["A chemist"]\n', "p.jsonl", "p.jsonl:1: expected a JSON object per line, got list"),
])
def test_bad_persona_pool_names_file_and_line(tmp_path: Path, content: str, name: str, message: str):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(RecipeError, match="persona") as e:
        load_personas(path)
    assert message in str(e.value) and str(tmp_path) in str(e.value)


def test_bad_pool_stops_the_recipe(tmp_path: Path):
    base = {"seeds": {"path": "builtin:arith", "options": {"n": 2}}, "teacher": {"model": "m"}}
    with pytest.raises(RecipeError, match=r"generation.personas: file not found: .*nope\.txt"):
        Recipe.from_dict({**base, "generation": {"strategy": "persona", "personas": str(tmp_path / "nope.txt")}})
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"persona": "x"}, {"who": "y"}])
    with pytest.raises(RecipeError, match=r"bad\.jsonl:2: no 'persona' field"):
        Recipe.from_dict({**base, "generation": {"strategy": "persona", "personas": str(bad)}})
    with pytest.raises(RecipeError, match="not a persona task; use one of instruction, math, reasoning"):
        Recipe.from_dict({**base, "generation": {"strategy": "persona", "task": "poems"}})
    # a relative pool path resolves against the recipe's folder
    (tmp_path / "pool.txt").write_text("A cook\nA diver\n")
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(json.dumps({**base, "generation": {"strategy": "persona", "personas": "pool.txt"}}))
    recipe = Recipe.from_yaml(recipe_path)
    assert recipe.generation.build(recipe).pool == ["A cook", "A diver"]


def test_persona_draws_are_seeded_and_reproducible():
    pool = load_personas(shipped_pool_path())
    draws = [draw_persona(pool, 0, f"topic-{i}", k) for i in range(20) for k in range(3)]
    assert draws == [draw_persona(pool, 0, f"topic-{i}", k) for i in range(20) for k in range(3)]
    assert all(0 <= d < len(pool) for d in draws) and len(set(draws)) > 25  # spread over the pool
    assert draws != [draw_persona(pool, 1, f"topic-{i}", k) for i in range(20) for k in range(3)]  # the seed matters
    import random
    assert draw_persona(pool, 7, "s", 2) == random.Random("7-s-2").randrange(len(pool))


@pytest.mark.parametrize(("text", "expected"), [
    ("A baker sells 40 loaves at $3 each. How much does she earn?", "A baker sells 40 loaves at $3 each. How much does she earn?"),
    ("**Problem:** A baker sells 40 loaves at $3 each. How much?\n\n**Solution:** 40 x 3 = 120", "A baker sells 40 loaves at $3 each. How much?"),
    ('Math problem: "A pilot flies 300 km in 2 hours. What is her speed?"', "A pilot flies 300 km in 2 hours. What is her speed?"),
    ("Request: Can you help me plan a 5-day trip?", "Can you help me plan a 5-day trip?"),
])
def test_clean_instruction(text: str, expected: str):
    assert clean_instruction(text) == (expected, None)


def test_clean_instruction_rejections():
    assert clean_instruction("I'm sorry, but I can't help with creating that.")[1].startswith("refusal:")
    assert clean_instruction("As an AI, I cannot write for real people.")[1].startswith("refusal:")
    assert clean_instruction("Problem:")[1].startswith("empty_instruction:")
    assert clean_instruction("Problem: Fractions.")[1].startswith("too_short:")
    assert not refusal("The sorry state of the bridge worried the engineer.", at_start=True)


def test_refusal_detector_modes():
    """One detector (distillery.generate.checks) with each caller's threshold: at the start
    (persona, attributes, rephrase, Magpie), anywhere (Self-Instruct), anywhere in a short text
    (Evol-Instruct, Chan et al.)."""
    for text in ("I'm sorry, but I can't help with that.", "I\u2019m unable to write that.", "As an AI, I cannot do this.",
                 "**I cannot** provide that.", "Sorry, I won't write it.", "I apologise, but no."):
        assert refusal(text, at_start=True) and refusal(text) and refusal(text, 80), text
    buried = "Here is my answer. I'm sorry, but I cannot help with the rest."
    assert refusal(buried) and refusal(buried, 80) and not refusal(buried, at_start=True)
    assert not refusal(buried + " more" * 80, 80)  # a long text that says sorry once is an answer
    assert refusal("Sorry " + "word " * 90) and not refusal("Sorry " + "word " * 90, 80)
    for text in ("Sorry to hear that; here is how to fix it.", "I'm sorry for your loss. Here is a plan.",
                 "Sure! Here is a poem about the sea.", "", None):
        assert not refusal(text, at_start=True), text
    assert not refusal("The sorry state of the bridge.", at_start=True) and refusal("The sorry state of the bridge.")
    assert refusal_phrase("I cannot provide instructions for that.", at_start=True) == "I cannot provide"
    assert refusal_phrase("As an AI language model, I cannot browse.", at_start=True) == "As an AI language model, I cannot"
    assert refusal_phrase("I\u2019m sorry, but no.", at_start=True) == "I\u2019m sorry"  # as written in the text


def test_call_failure_reasons_name_the_step():
    assert call_failure(GenerationResult("A fine answer.", finish_reason="stop"), "create", 80) is None
    assert call_failure(GenerationResult(None, error_kind="http_400", error="bad request"), "create", 80) == \
        "http_400: the create step failed: bad request"
    assert call_failure(GenerationResult("", finish_reason="content_filter"), "curate", 80) == \
        "content_filter: the server withheld the curate step's response"
    assert call_failure(GenerationResult("  ", finish_reason="stop"), "evolve-g1", 80) == \
        "empty_response: the evolve-g1 step returned no text"
    assert call_failure(GenerationResult("A long answ", finish_reason="length"), "rephrase", 80) == \
        "truncated: the rephrase step was cut off at max_tokens=80"
    assert call_failure(GenerationResult("A long answ", finish_reason="length"), "rephrase", None).endswith("max_tokens=?")


def test_required_variables_skip_optional_ones():
    b = PromptBuilder("{{ persona }} {% if topic is defined %}{{ topic }}{% endif %} {{ level | default('easy') }} {{ grade }}",
                      system="{{ tone }}")
    assert required_variables(b, {"persona"}) == {"grade", "tone"}


def test_strip_preamble():
    assert strip_preamble("Sure! Here's a simple story:\n\nOnce upon a time...") == ("Once upon a time...", "Sure! Here's a simple story:")
    assert strip_preamble("Here is the rewritten text:\nThe tides rise.") == ("The tides rise.", "Here is the rewritten text:")
    assert strip_preamble("Here is Tom. He likes boats.\nHe sails.") == ("Here is Tom. He likes boats.\nHe sails.", None)
    assert strip_preamble("Once upon a time") == ("Once upon a time", None)


# -- attribute vocabularies ---------------------------------------------------------------------

def test_vocabularies_lists_files_and_builtins(tmp_path: Path):
    assert load_vocabulary("topic", ["a cat", " a dog "]) == ["a cat", "a dog"]
    (tmp_path / "colours.txt").write_text("# colours\nred\n\nblue\n")
    assert load_vocabulary("colour", "colours.txt", tmp_path) == ["red", "blue"]
    features = load_vocabulary("feature", "builtin:features")
    for f in ("contain at least one dialogue", "have a plot twist", "teach a moral value", "have a bad ending", "use foreshadowing"):
        assert f in features
    assert len(load_vocabulary("topic", "builtin:topics")) >= 30
    with pytest.raises(RecipeError, match=r"generation.vocabularies.colour: file not found: .*nope\.txt"):
        load_vocabulary("colour", "nope.txt", tmp_path)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(RecipeError, match=r"empty\.txt: vocabulary 'x' is empty"):
        load_vocabulary("x", "empty.txt", tmp_path)
    with pytest.raises(RecipeError, match="no shipped vocabulary 'builtin:colours'"):
        load_vocabulary("x", "builtin:colours")
    with pytest.raises(RecipeError, match=r"generation.vocabularies.x\[1\]: empty value"):
        load_vocabulary("x", ["a", " "])


def test_attribute_draws_are_seeded_recorded_and_independent():
    vocab = {"topic": [f"t{i}" for i in range(30)], "feature": [f"f{i}" for i in range(10)]}
    a = [draw_attributes(vocab, {"feature": 3}, 0, "s1", k) for k in range(5)]
    assert a == [draw_attributes(vocab, {"feature": 3}, 0, "s1", k) for k in range(5)]
    assert all(isinstance(d["topic"], str) and len(set(d["feature"])) == 3 for d in a)
    assert len({d["topic"] for d in a} | {draw_attributes(vocab, {}, 0, "s2", 0)["topic"]}) > 1
    # adding a vocabulary leaves the other draws as they were
    more = {**vocab, "audience": ["kids", "adults"]}
    assert [draw_attributes(more, {"feature": 3}, 0, "s1", k)["topic"] for k in range(5)] == [d["topic"] for d in a]
    assert join_phrase("x") == "x" and join_phrase(["x", "y"]) == "x and y" and join_phrase(["x", "y", "z"]) == "x, y and z"


def test_attribute_recipe_errors(tmp_path: Path):
    base = {"seeds": {"path": "builtin:arith", "options": {"n": 2}}, "teacher": {"model": "m"}}

    def gen(**g):
        return Recipe.from_dict({**base, "generation": {"strategy": "attributes", **g}})

    with pytest.raises(RecipeError, match="no vocabulary 'colour'"):
        gen(picks={"colour": 2})
    with pytest.raises(RecipeError, match="5 values asked of a vocabulary of 2"):
        gen(vocabularies={"topic": ["a", "b"]}, templates={"create": "Write about {{ topic }}."}, picks={"topic": 5})
    with pytest.raises(RecipeError, match="uses neither 'mood'"):
        gen(vocabularies={"topic": ["a"], "mood": ["b"]}, templates={"create": "Write about {{ topic }}."})
    with pytest.raises(RecipeError, match="reserved"):
        gen(vocabularies={"seed": ["a"]})
    with pytest.raises(RecipeError, match="not a template variable name"):
        gen(vocabularies={"my topic": ["a"]})
    # the template may read seed fields (they become required inputs) and the whole draw
    recipe = gen(vocabularies={"topic": ["a"]}, templates={"create": "{{ question }}: {{ attributes | tojson }}"})
    assert recipe.generation.build(recipe).inputs == {"question"}


# -- replay-teacher end to end ------------------------------------------------------------------

FLORIST = ("A florist buys 40 roses at $2.50 each for a wedding and sells the arrangement with a 60% markup on her cost. "
           "How much profit does she make on the roses?")
GARDEN = ("A community garden is a rectangle 24 m long and 15 m wide. The twelve families want a path 1 m wide around "
          "the inside edge. What area is left for planting, in square metres?")
PERSONA_CREATE = {
    "percentages": [FLORIST,
                    "**Problem:** A tax accountant bills freelancers $80 per hour and offers a 15% discount to students. "
                    "A student books 3 hours. How much does the student pay?\n\n**Solution:** 3 x 80 = 240; 15% off gives $204."],
    "area": ["I'm sorry, but I can't create content that pretends to be a real person.", GARDEN],
    "unit conversion": [" ".join(["A long-haul truck driver drives"] + ["many"] * 90 + ["kilometres."]), FLORIST],
}
PERSONA_ANSWERS = [
    (r"florist buys 40 roses", "Her cost is 40 x $2.50 = $100. A 60% markup adds 0.6 x $100 = $60, which is her profit.\n#### 60"),
    (r"tax accountant bills", "Three hours cost 3 x $80 = $240. The discount is 0.15 x $240 = $36, so the student pays $240 - $36 = $204.\n#### 204"),
    (r"community garden is a rectangle", "I'm sorry, I can't help with that request."),
]


def persona_rules() -> list:
    rules: list = [(rf"Write one math word problem.*involving {topic}", answers) for topic, answers in PERSONA_CREATE.items()]
    return rules + PERSONA_ANSWERS


def test_persona_end_to_end_against_a_replay_teacher(tmp_path: Path):
    """Real pipeline + HTTP + cache; the teacher is replayed (hand-written problems and answers,
    a refusal at each step, a truncated problem and a duplicate problem)."""
    seeds = write_jsonl(tmp_path / "topics.jsonl", [{"id": "t0", "topic": "percentages and discounts"},
                                                     {"id": "t1", "topic": "area and perimeter"},
                                                     {"id": "t2", "topic": "unit conversion"}])
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"persona": p} for p in
                                                 ["A florist preparing three weddings", "A tax accountant", "A community gardener",
                                                  "A truck driver", "A retired maths professor"]])
    with ReplayTeacher(persona_rules()) as teacher:
        out = tmp_path / "run"
        recipe = Recipe.from_dict({
            "seeds": {"path": str(seeds)},
            "teacher": {"model": teacher.model, "base_url": teacher.base_url, "concurrency": 4,
                        "sampling": {"max_tokens": 80, "seed": 0}},
            "generation": {"strategy": "persona", "task": "math", "samples": 2, "seed": 3, "personas": str(pool)},
            "dedup": [{"type": "exact", "fields": ["prompt"]}],
            "output": {"dir": str(out)},
            "report": {"embedding_model": None},
        })
        report, accepted, rejected = run_pipeline(recipe, out)
        assert not teacher.unmatched
        assert len(teacher.requests("Write one math word problem")) == 6
        assert len(teacher.requests()) == 6 + 4  # a respond call for each usable problem
    assert report["candidates"] == 6 and len(accepted) == 2
    reasons = {r["id"]: r["reject_reason"] for r in rejected}
    assert reasons["t1#0"] == "refusal: the teacher declined to write the prompt"
    assert reasons["t1#1"] == "refusal: the teacher declined to answer the prompt it wrote"
    assert reasons["t2#0"] == "truncated: cut off at max_tokens=80"
    assert reasons["t2#1"].startswith("exact_duplicate") and "t0#0" in reasons["t2#1"]
    assert Counter(r.split(":")[0] for r in reasons.values()) == {"refusal": 2, "truncated": 1, "exact_duplicate": 1}

    names = load_personas(pool)
    for r in accepted + rejected:
        assert r["strategy"] == "persona"
        params = json.loads(r["strategy_params"])
        assert params["task"] == "math" and params["samples"] == 2 and params["seed"] == 3
        k = r["sample_index"]
        assert r["persona_index"] == draw_persona(names, 3, r["seed_id"], k) and r["persona"] == names[r["persona_index"]]
    by_id = {r["id"]: r for r in accepted}
    first = by_id["t0#0"]
    assert first["prompt"] == [{"role": "user", "content": FLORIST}]  # the student's prompt: the written problem
    assert first["response"].endswith("#### 60") and first["teacher"] == "replay-teacher"
    assert [s["name"] for s in first["steps"]] == ["create"]
    create_prompt = first["steps"][0]["prompt"]
    assert create_prompt[0]["role"] == "system" and first["persona"] in create_prompt[-1]["content"]
    assert "percentages and discounts" in create_prompt[-1]["content"] and first["steps"][0]["response"] == FLORIST
    # the label and the solution the model added are not in the student's prompt
    assert by_id["t0#1"]["prompt"][0]["content"].startswith("A tax accountant bills") and "Solution" not in by_id["t0#1"]["prompt"][0]["content"]
    # a problem the teacher refused keeps the create call's prompt and raw text
    refused = next(r for r in rejected if r["id"] == "t1#0")
    assert refused["response"].startswith("I'm sorry") and refused["prompt"][0]["role"] == "system"
    assert len({r["prompt_template_hash"] for r in accepted + rejected}) == 1
    print(f"\npersona accept rate vs replay teacher: {len(accepted)}/{report['candidates']}", dict(Counter(reasons.values())))


STORY_CAT = ("Mia found a small grey kitten under the slide. \"Are you lost?\" she asked. The kitten said nothing, but it "
             "followed her home. Mia's mother smiled and gave it milk. The next day they put up posters, and an old man "
             "came to the door. \"That is my Pip,\" he said. Mia was sad, but the man told her she could visit Pip every Sunday.")
STORY_SPACE = ("On the space station, Leo's job was to water the plants. One morning the tomato plant was gone! Leo searched "
               "every room. At last he found it in the kitchen, where the cook was making soup. \"I only borrowed it,\" "
               "laughed the cook. Leo learned that asking first is always kinder than taking.")
ATTR_ANSWERS = {
    "a seaside town": ["Sure! Here's a short story for you:\n\n" + STORY_CAT, "I'm sorry, but I can't write that story."],
    "a space station": [STORY_SPACE, " ".join(["Once there was a very long story"] * 30)],
    "a zoo": ["", STORY_CAT.replace("Mia", "Ava").replace("slide", "bench")],
}


def test_attributes_end_to_end_against_a_replay_teacher(tmp_path: Path):
    """Real pipeline + HTTP + cache; the teacher is replayed (hand-written stories, one after a
    chat preamble, a refusal, an empty answer, a truncated one)."""
    seeds = write_jsonl(tmp_path / "settings.jsonl", [{"id": f"s{i}", "setting": s} for i, s in enumerate(ATTR_ANSWERS)])
    vocabularies = {"topic": ["a lost kitten", "a missing tomato plant", "a rainy day"], "feature": "builtin:features",
                    "audience": ["children aged 3 to 5", "early readers aged 6 to 7"], "difficulty": "builtin:difficulty"}
    rules = [(rf"Set the story in {setting}\.", answers) for setting, answers in ATTR_ANSWERS.items()]
    with ReplayTeacher(rules) as teacher:
        out = tmp_path / "run"
        recipe = Recipe.from_dict({
            "seeds": {"path": str(seeds)},
            "teacher": {"model": teacher.model, "base_url": teacher.base_url, "sampling": {"max_tokens": 120, "seed": 0}},
            "generation": {"strategy": "attributes", "draws": 2, "seed": 0, "vocabularies": vocabularies,
                           "picks": {"feature": 2}},
            "output": {"dir": str(out)},
            "report": {"embedding_model": None},
        })
        report, accepted, rejected = run_pipeline(recipe, out)
        assert not teacher.unmatched and len(teacher.requests()) == 6
    assert report["candidates"] == 6 and len(accepted) == 3
    reasons = {r["id"]: r["reject_reason"] for r in rejected}
    assert reasons == {"s0#1": "refusal: the teacher declined to write the text",
                       "s1#1": "truncated: cut off at max_tokens=120",
                       "s2#0": "empty_response: the teacher returned no text"}
    vocab = {name: load_vocabulary(name, value) for name, value in vocabularies.items()}
    for r in accepted + rejected:
        assert r["strategy"] == "attributes" and json.loads(r["strategy_params"])["draws"] == 2
        draw = json.loads(r["attributes"])
        assert draw == draw_attributes(vocab, {"feature": 2}, 0, r["seed_id"], r["sample_index"])
        assert set(draw) == {"topic", "feature", "audience", "difficulty"} and len(draw["feature"]) == 2
        text = r["prompt"][-1]["content"]  # the record's prompt is the filled generation prompt
        assert draw["topic"] in text and join_phrase(draw["feature"]) in text and draw["audience"] in text
        assert draw["difficulty"] in text and r["seed"]["setting"] in text and r["steps"] == []
    cat = next(r for r in accepted if r["id"] == "s0#0")
    assert cat["response"] == STORY_CAT and cat["completion"] == [{"role": "assistant", "content": STORY_CAT}]
    assert json.loads(next(v for v in cat["verdicts"] if v["name"] == "preamble")["detail"])["removed"] == \
        "Sure! Here's a short story for you:"
    print(f"\nattributes accept rate vs replay teacher: {len(accepted)}/{report['candidates']}", reasons)


# -- the shipped recipes against a real server -----------------------------------------------------

def server_overrides(server, out: Path, **extra) -> dict:
    return {"teacher.base_url": server.base_url, "teacher.model": server.model, "teacher.concurrency": 4,
            "teacher.sampling.max_tokens": 32, "output.dir": str(out), "output.batch_size": 4,
            "report.embedding_model": None, **extra}


def check_mechanics(report: dict, accepted: list[dict], rejected: list[dict], strategy: str, n: int) -> None:
    assert report["candidates"] == n == len(accepted) + len(rejected)
    ids = [r["id"] for r in accepted + rejected]
    assert len(set(ids)) == n
    for r in accepted + rejected:
        assert r["strategy"] == strategy and r["strategy_params"] and r["teacher"]
        if not r["accepted"]:
            assert r["reject_stage"] and r["reject_reason"] and ":" in r["reject_reason"]
    for r in accepted:
        assert r["response"] and r["prompt"][-1]["role"] == "user" and r["prompt"][-1]["content"]


def test_persona_recipe_against_a_real_server(gsm8k_server, tmp_path: Path):
    """The shipped recipe, shipped pool and templates against real `transformers serve` (tiny GSM8K model: poor text)."""
    out = tmp_path / "persona"
    recipe = Recipe.from_yaml(RECIPES / "persona.yaml", server_overrides(gsm8k_server, out, **{
        "seeds.limit": 3, "generation.samples": 2, "teacher.sampling.max_tokens": 48}))  # some problems end: two steps
    report, accepted, rejected = run_pipeline(recipe, out)
    check_mechanics(report, accepted, rejected, "persona", 6)
    pool = load_personas(shipped_pool_path())
    for r in accepted + rejected:
        assert r["persona"] == pool[r["persona_index"]]
        assert r["persona"] in (r["steps"][0]["prompt"] if r["steps"] else r["prompt"])[-1]["content"]
        if r["steps"]:  # answered: the student's prompt is the written problem under the recipe's system message
            assert r["prompt"][0]["role"] == "system" and "####" in r["prompt"][0]["content"]
            assert r["prompt"][1]["content"] and r["steps"][0]["name"] == "create"
    assert report["cache"]["backend_calls"] == 6 + sum(1 for r in accepted + rejected if r["steps"])


def test_attributes_recipe_against_a_real_server(gsm8k_server, tmp_path: Path):
    """The shipped recipe, vocabularies and template against real `transformers serve` (tiny GSM8K model)."""
    out = tmp_path / "attributes"
    recipe = Recipe.from_yaml(RECIPES / "attributes.yaml", server_overrides(gsm8k_server, out, **{"seeds.limit": 3,
                                                                                                     "generation.draws": 2}))
    report, accepted, rejected = run_pipeline(recipe, out)
    check_mechanics(report, accepted, rejected, "attributes", 6)
    assert report["cache"]["backend_calls"] == 6
    for r in accepted + rejected:
        draw = json.loads(r["attributes"])
        assert set(draw) == {"topic", "feature", "audience", "difficulty"} and draw["topic"] in r["prompt"][-1]["content"]
