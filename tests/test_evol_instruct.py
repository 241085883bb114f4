"""Evol-Instruct (Xu et al., 2023): the elimination rules and the operation choice on
constructed cases; the strategy end to end through the real pipeline against a replay teacher
(a real local HTTP server answering with hand-written outputs of a capable model: good
rewrites, a copied template marker, a judge that says "no", a judge that says neither, a
refusal, too short an answer, an empty rewrite); and the shipped recipe once against a real
`transformers serve` with the tiny GSM8K model (mechanics only: its text is poor)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distillery.errors import InputError
from distillery.generate.checks import refusal
from distillery.generate.evol_instruct import (
    DEFAULT_COPY_MARKERS,
    OPERATIONS,
    choose_operation,
    clean_evolution,
    copied_wording,
    evolution_problem,
    parse_judgement,
    response_problem,
    template_markers,
)
from distillery.generate.templates import shipped
from distillery.pipeline.plan import Plan
from distillery.pipeline.runner import Pipeline
from distillery.recipe import Recipe
from tests.helpers import REPO
from tests.replay_server import ReplayTeacher

RECIPE = REPO / "recipes" / "evol-instruct.yaml"
MARKERS = [*template_markers([t for n, t in shipped("evol_instruct").items() if n in OPERATIONS]), *DEFAULT_COPY_MARKERS]


# -- constructed cases --------------------------------------------------------------------------
def test_markers_come_from_the_templates():
    assert "#original instruction#" in MARKERS and "#rewritten instruction#" in MARKERS and "#new instruction#" in MARKERS
    assert template_markers(["a #Given Prompt# b #Given Prompt# #x"]) == ["#given prompt#"]


def test_markers_of_an_overridden_template_count():
    recipe = Recipe.from_yaml(RECIPE, {"generation.templates": {"deepen": "Harder, please.\n#Source Text#\n{{ instruction }}"}})
    strategy = recipe.generation.build(recipe)
    assert "#source text#" in strategy.markers and "#original instruction#" in strategy.markers
    assert strategy.inputs == {"instruction"} and "given prompt" in strategy.markers


def test_seed_fields_of_an_overridden_operation_template_are_required(tmp_path: Path):
    """An operation template that reads ``{{ topic }}`` makes ``topic`` a required seed field:
    seeds without it stop the run with an InputError naming it, before any call (no KeyError
    from rendering mid-run)."""
    override = {"generation.templates": {"deepen": "Make this {{ topic }} task harder.\n#Original Instruction#\n{{ instruction }}"}}
    recipe = Recipe.from_yaml(RECIPE, override)
    assert recipe.generation.build(recipe).inputs == {"instruction", "topic"}
    # only the operations the recipe uses count; the strategy fills `instruction` itself
    only = Recipe.from_yaml(RECIPE, {**override, "generation.operations": ["breadth"]})
    assert only.generation.build(only).inputs == {"instruction"}
    with replay() as teacher:
        recipe = Recipe.from_yaml(RECIPE, overrides(teacher, tmp_path / "out", seeds_file(tmp_path), **override))
        assert "topic" in Plan.make(recipe, tmp_path / "out").required
        with pytest.raises(InputError, match="field 'topic': missing_field"):
            Pipeline(recipe, progress=False).run()
        assert teacher.log == []


def test_clean_evolution_strips_wrapping_but_not_a_copied_marker():
    assert clean_evolution("#Rewritten Instruction#: Write a poem.", MARKERS) == "Write a poem."
    assert clean_evolution("#Rewritten Instruction#\nRewritten prompt: Write a poem.", MARKERS) == "Write a poem."
    assert clean_evolution('```\n"Write a poem."\n```', MARKERS) == "Write a poem."
    assert clean_evolution("Instruction: Write a poem.", MARKERS) == "Write a poem."
    inner = "Write a poem like the #Original Instruction# asks."
    assert clean_evolution(inner, MARKERS) == inner
    assert copied_wording(inner, MARKERS) == "#original instruction#"
    assert copied_wording("Rewrite the given prompt so that it rhymes.", MARKERS) == "given prompt"
    assert copied_wording("Write a poem about the sea.", MARKERS) is None


def test_evolution_problem_rules():
    parent = "Name three rivers in Europe."
    assert evolution_problem(parent, "", MARKERS).startswith("empty:")
    assert evolution_problem(parent, "name three  rivers in Europe.", MARKERS).startswith("unchanged:")
    assert evolution_problem(parent, "As the #Rewritten Instruction# says, name four rivers.", MARKERS).startswith("copied_prompt:")
    assert evolution_problem(parent, "I'm sorry, I can't rewrite this instruction.", MARKERS).startswith("refusal:")
    assert evolution_problem(parent, "Name three rivers in Europe that reach the Black Sea.", MARKERS) is None


@pytest.mark.parametrize(("text", "expected"), [
    ('{"adds_information": true, "reason": "adds a constraint"}', True),
    ('```json\n{"adds_information": false}\n```', False),
    ('{"answer": "Yes"}', True),
    ('{"equal": true}', False),
    ("Yes. It adds a constraint.", True),
    ("no", False),
    ("**No** - both ask the same thing.", False),
    ("The second one adds a length limit, so the answer is yes.", True),
    ("False", False),
])
def test_parse_judgement(text, expected):
    assert parse_judgement(text) == (expected, None)


@pytest.mark.parametrize("text", ["It is hard to say.", "yes and no", '{"adds_information": "maybe"}', ""])
def test_parse_judgement_unparseable_is_a_reason(text):
    value, reason = parse_judgement(text)
    assert value is None and reason.split(":")[0] in ("unparseable_judgement", "empty_response")


def test_response_rules():
    assert refusal("I'm sorry, but I cannot help with that.", 80)
    assert refusal("As an AI language model, I do not have opinions.", 80)
    assert not refusal("Sorry " + "word " * 90, 80)  # long: says sorry once but answers
    assert response_problem("I\u2019m sorry, I can\u2019t do that.").startswith("refusal:")
    assert response_problem("Practice daily.").startswith("too_short:")
    assert response_problem("It is what it is, and so on.", min_words=3).startswith("no_content:")
    assert response_problem("Prime numbers have exactly two divisors: one and themselves.") is None
    assert response_problem("Fine answer here", min_words=0) is None


def test_operation_choice_is_seeded_and_uses_every_operation():
    picks = [choose_operation(0, f"s{i}", g, OPERATIONS) for i in range(60) for g in (1, 2, 3)]
    assert picks == [choose_operation(0, f"s{i}", g, OPERATIONS) for i in range(60) for g in (1, 2, 3)]
    assert set(picks) == set(OPERATIONS)
    assert [choose_operation(1, f"s{i}", 1, OPERATIONS) for i in range(60)] != picks[::3]
    assert choose_operation(0, "s1", 1, ["deepen"]) == "deepen"
    with pytest.raises(ValueError):
        choose_operation(0, "s1", 1, [])


# -- replay teacher, end to end ---------------------------------------------------------------------
S1, S2, S3, S4 = ("Write a short poem about autumn leaves.", "Explain what a prime number is.",
                  "Name three rivers in Europe.", "Give one tip for learning to code.")
E1 = "Write a short poem about autumn leaves that names a specific tree species and ends with a question."
E1B = "Write a short poem about autumn leaves that names a specific tree species, ends with a question and uses no adjectives."
E2B = "Explain what a prime number is and list every prime number below 30."
E3A = "Name three rivers in Europe, please."
E3B = "Name three rivers in Europe that flow into the Black Sea and give the length of each."
E4 = "Give one tip for learning to code to someone who has only ten minutes a day."
# the rewrite each parent gets in generation 1 and 2 (picked by the request's seed = sampling seed 0 + generation)
EVOLVE = {
    S1: ["", E1, E1], E1: ["", "", "#Rewritten Instruction#: " + E1B],
    S2: ["", "Explain what a prime number is, following the #Original Instruction# but for children.", "```\n" + E2B + "\n```"],
    S3: ["", E3A, E3B],
    S4: ["", E4, ""],
}
JUDGE = {
    E1: '{"adds_information": true, "reason": "It adds two constraints."}',
    E1B: "Yes. The rewrite also forbids adjectives.",
    E2B: '```json\n{"adds_information": true, "reason": "It asks for a list."}\n```',
    E3A: '{"adds_information": false, "reason": "The same request, more politely."}',
    E3B: "It is hard to say.",
    E4: "yes",
}
GOOD = ("Maple leaves of red and gold drift down the quiet lane, each one a small letter from the summer, "
        "folded by the wind and posted to the ground; who will read them when the snow arrives?")
RESPOND = {
    E1: GOOD,
    E1B: ("Maple leaves drift down the lane, letters from summer folded by wind and posted to the ground, "
          "waiting under the oak for readers; who will open them once snow arrives?"),
    E2B: "I'm sorry, but as an AI I cannot help with that request.",
    E4: "Practice daily.",
}


def _original(text: str) -> str:
    return re.search(r"#Original Instruction#\n(.*?)\n\nWrite only", text, re.S).group(1)


def replay() -> ReplayTeacher:
    def evolve(text, body):
        return EVOLVE.get(_original(text), ["", "", ""])[int(body.get("seed") or 0)]

    def judge(text, body):
        return JUDGE[re.search(r"Second instruction:\n<<<\n(.*?)\n>>>", text, re.S).group(1)]

    return ReplayTeacher([("#Original Instruction#", evolve), ("adds_information", judge),
                          (".", lambda text, body: RESPOND.get(text, GOOD))])


def seeds_file(tmp_path: Path) -> Path:
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps({"id": f"s{i}", "question": q}) + "\n" for i, q in enumerate((S1, S2, S3, S4), 1)))
    return path


def overrides(server, out: Path, seeds: Path | None = None, **extra) -> dict:
    o = {"teacher.base_url": server.base_url, "teacher.model": server.model, "teacher.concurrency": 4,
         "output.dir": str(out), "report.embedding_model": None, "generation.generations": 2}
    if seeds is not None:
        o["seeds.path"] = str(seeds)
        o["seeds.shuffle_seed"] = None
    o.update(extra)
    return o


def read(out: Path) -> dict[str, dict]:
    rows = pq.read_table(out / "accepted.parquet").to_pylist() + pq.read_table(out / "rejected.parquet").to_pylist()
    return {r["id"]: r for r in rows}


def test_replay_teacher_end_to_end(tmp_path: Path):
    """Real pipeline, cache and HTTP client; the teacher's outputs are replayed (hand-written)."""
    out = tmp_path / "evol"
    with replay() as teacher:
        recipe = Recipe.from_yaml(RECIPE, overrides(teacher, out, seeds_file(tmp_path)))
        report = Pipeline(recipe, progress=False).run()
        rows = read(out)
        assert report["candidates"] == len(rows) == 8 and report["accepted"] == 2
        assert {i for i, r in rows.items() if r["accepted"]} == {"s1#1", "s1#2"}
        reasons = {i: r["reject_reason"] for i, r in rows.items() if not r["accepted"]}
        assert reasons["s2#1"] == "eliminated: copied_prompt: the rewrite copies the evolving prompt's wording ('#original instruction#')"
        assert reasons["s2#2"].startswith("eliminated: refusal:")
        assert reasons["s3#1"] == "eliminated: no_information_gain: the judge found nothing added over the parent"
        assert reasons["s3#2"].startswith("eliminated: unparseable_judgement:")
        assert reasons["s4#1"] == "eliminated: too_short: the response has 2 word(s) < 3"
        assert reasons["s4#2"] == "eliminated: empty_response: the evolve-g2 step returned no text"
        assert all(r["reject_stage"] == "generate" for i, r in rows.items() if not r["accepted"])
        # the judge's raw answer is kept in the rejection's detail
        assert json.loads(rows["s3#2"]["verdicts"][-1]["detail"])["raw"] == "It is hard to say."

        # lineage and provenance
        op = {(s, g): choose_operation(0, s, g, OPERATIONS) for s in ("s1", "s2", "s3", "s4") for g in (1, 2)}
        g1, g2 = rows["s1#1"], rows["s1#2"]
        assert g1["strategy"] == "evol_instruct" and json.loads(g1["strategy_params"])["generations"] == 2
        assert (g1["parent_id"], g1["root_id"], g1["generation"], g1["operation"]) == ("s1", "s1", 1, op["s1", 1])
        assert g1["prompt"] == [{"role": "user", "content": E1}] and g1["evolved_instruction"] == E1 and g1["response"] == GOOD
        assert g1["parent_instruction"] == S1 and g1["lineage"] == [op["s1", 1]]
        assert [s["name"] for s in g1["steps"]] == ["evolve-g1", "eliminate-g1"]
        assert S1 in g1["steps"][0]["prompt"][-1]["content"] and g1["steps"][1]["response"] == JUDGE[E1]
        assert (g2["parent_id"], g2["generation"], g2["lineage"]) == ("s1#1", 2, [op["s1", 1], op["s1", 2]])
        assert g2["evolved_instruction"] == E1B and g2["parent_instruction"] == E1  # the leading marker was stripped
        # an eliminated evolution leaves its parent live (keep_parent): s2's generation 2 evolves the seed again
        assert (rows["s2#2"]["parent_id"], rows["s2#2"]["parent_instruction"], rows["s2#2"]["lineage"]) == ("s2", S2, [op["s2", 2]])
        assert rows["s2#2"]["evolved_instruction"] == E2B and rows["s2#2"]["response"] == RESPOND[E2B]
        assert [s["name"] for s in rows["s2#1"]["steps"]] == ["evolve-g1"]  # no judge call for a copied marker
        assert rows["s2#1"]["response"] is None and rows["s4#2"]["evolved_instruction"] is None
        # calls: 8 rewrites, 6 judgements (not for the copy or the empty rewrite), 4 answers
        assert len(teacher.requests("#Original Instruction#")) == 8 and len(teacher.requests("adds_information")) == 6
        assert len(teacher.log) == 18 and report["cache"]["backend_calls"] == 18
        judge_body = teacher.requests("adds_information")[0]
        assert judge_body["temperature"] == 0.0 and teacher.requests("Original")[0]["temperature"] == 0.7
        print(f"\nevol_instruct replay accept rate: {report['accepted']}/{report['candidates']}; "
              f"reasons: {sorted(r.split(':')[1].strip() for r in reasons.values())}")

        # again from the cache: the same operations are chosen, nothing is asked again
        again = Pipeline(recipe, progress=False, fresh=True).run()
        assert again["cache"]["backend_calls"] == 0 and again["accepted"] == 2 and len(teacher.log) == 18

        # respond: false, on_failure: stop -> (evolve meta-prompt, evolved instruction) pairs; lineages end at a failure
        out2 = tmp_path / "pairs"
        recipe2 = Recipe.from_yaml(RECIPE, overrides(teacher, out2, seeds_file(tmp_path), **{
            "generation.respond": False, "generation.on_failure": "stop"}))
        report2 = Pipeline(recipe2, progress=False).run()
        rows2 = read(out2)
        assert set(rows2) == {"s1#1", "s1#2", "s2#1", "s3#1", "s4#1", "s4#2"}
        assert {i for i, r in rows2.items() if r["accepted"]} == {"s1#1", "s1#2", "s4#1"} and report2["accepted"] == 3
        pair = rows2["s4#1"]
        assert pair["response"] == E4 and "#Original Instruction#" in pair["prompt"][-1]["content"]
        assert S4 in pair["prompt"][-1]["content"]


def test_recipe_against_a_real_local_server(gsm8k_server, tmp_path: Path):
    """The shipped recipe against a real `transformers serve` (tiny GSM8K model, poor text)."""
    out = tmp_path / "real"
    recipe = Recipe.from_yaml(RECIPE, overrides(gsm8k_server, out, **{
        "seeds.limit": 3, "teacher.sampling.max_tokens": 48, "output.batch_size": 3}))
    report = Pipeline(recipe, progress=False).run()
    rows = list(read(out).values())
    assert 3 <= len(rows) == report["candidates"] <= 6
    assert report["accepted"] == sum(r["accepted"] for r in rows)
    for r in rows:
        assert r["strategy"] == "evol_instruct" and r["teacher"] == gsm8k_server.model
        assert r["generation"] in (1, 2) and r["root_id"] == r["seed_id"] and r["id"] == f"{r['seed_id']}#{r['generation']}"
        assert r["steps"][0]["name"] == f"evolve-g{r['generation']}" and r["steps"][0]["response"] is not None
        assert r["operation"] in OPERATIONS and r["lineage"][-1] == r["operation"]
        assert r["seed"]["instruction"] in r["steps"][0]["prompt"][-1]["content"]
        if not r["accepted"]:
            assert r["reject_stage"] and r["reject_reason"].split(":")[0] in {
                "eliminated", "truncated", "empty_response", "too_short", "too_long", "repetitive", "exact_duplicate",
                "near_duplicate", "contaminated"}
    assert sum(r["generation"] == 1 for r in rows) == 3
