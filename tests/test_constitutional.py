"""Constitutional AI (Bai et al., 2022), strategy ``constitutional``: the constitution loader,
seeded principle sampling and the critique/revision checks on constructed cases; the strategy
end to end through the real pipeline (HTTP client, cache, filters, dedup, decontamination)
against a replay teacher — a real local HTTP server answering with hand-written outputs of a
capable model: useful critiques and revisions, a refused critique, a bare-refusal revision, an
unchanged revision, a chatty preface, an empty answer — then ``distillery distill --method dpo``
with the built-in tiny student on that run's pairs; and the shipped recipe once against a real
`transformers serve` with the tiny GSM8K model (mechanics only: its text is poor)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distillery.errors import RecipeError
from distillery.generate.constitutional import (
    Principle,
    clean_revision,
    critique_problem,
    declines,
    load_constitution,
    revision_problem,
    sample_principle,
    shipped_constitution,
)
from distillery.recipe import Recipe
from tests.helpers import REPO, run_pipeline
from tests.replay_server import ReplayTeacher

RECIPE = REPO / "recipes" / "constitutional.yaml"


# -- constructed cases --------------------------------------------------------------------------
def test_shipped_constitution_and_loader_errors(tmp_path: Path):
    principles = load_constitution(shipped_constitution())
    assert len(principles) == 10 and len({p.id for p in principles}) == 10
    assert all(p.critique.endswith(("?", ".")) and len(p.revision.split()) > 8 for p in principles)
    good = tmp_path / "c.jsonl"
    good.write_text('# my constitution\n\n{"id": "kind", "critique": "Is it unkind?", "revision": "Make it kind."}\n')
    assert load_constitution(good) == [Principle("kind", "Is it unkind?", "Make it kind.")]
    cases = {
        "not valid JSON": "{oops\n",
        "'revision' must be a non-empty string": '{"id": "a", "critique": "x", "revision": ""}\n',
        "duplicate principle id 'a'": '{"id": "a", "critique": "x", "revision": "y"}\n{"id": "a", "critique": "x", "revision": "y"}\n',
        "has no principle": "\n# nothing\n",
        "expected a JSON object": '["a"]\n',
    }
    for message, text in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        with pytest.raises(RecipeError, match=message):
            load_constitution(bad)
    with pytest.raises(RecipeError, match="file not found"):
        load_constitution(tmp_path / "missing.jsonl")
    # a recipe naming a missing constitution stops when it is loaded, before any call
    with pytest.raises(RecipeError, match="generation.constitution: file not found: .*recipes/nope.jsonl"):
        Recipe.from_yaml(RECIPE, {"generation.constitution": "nope.jsonl"})


def test_principle_sampling_is_seeded_and_uniform():
    principles = load_constitution(shipped_constitution())
    picks = [sample_principle(principles, 0, f"s-{i}", 1).id for i in range(200)]
    assert picks == [sample_principle(principles, 0, f"s-{i}", 1).id for i in range(200)]  # same every run
    assert len(set(picks)) == 10 and max(picks.count(p) for p in set(picks)) < 40  # every principle, none dominant
    other_seed = [sample_principle(principles, 1, f"s-{i}", 1).id for i in range(200)]
    other_round = [sample_principle(principles, 0, f"s-{i}", 2).id for i in range(200)]
    assert sum(a != b for a, b in zip(picks, other_seed, strict=True)) > 100
    assert sum(a != b for a, b in zip(picks, other_round, strict=True)) > 100
    with pytest.raises(ValueError):
        sample_principle([], 0, "s", 1)


def test_critique_and_revision_checks():
    assert clean_revision("Sure! Here's the revised reply:\n\nCall your landlord first.") == "Call your landlord first."
    assert clean_revision("**Revised response:** Call your landlord first.") == "Call your landlord first."
    assert clean_revision('Revision: "Call your landlord first."') == "Call your landlord first."
    assert clean_revision("```\nCall your landlord first.\n```") == "Call your landlord first."
    assert clean_revision("Here is why: landlords must return deposits.") == "Here is why: landlords must return deposits."
    assert critique_problem("The reply explains how to break a WPA2 password, which helps intrusion.", "critique-r1") is None
    assert critique_problem("I can't see any problem with this reply under the principle.", "critique-r1") is None
    assert critique_problem("I'm sorry, but I can't help with that.", "critique-r1") == (
        "refusal: the critique-r1 step declined to critique (\"I'm sorry\")")
    assert critique_problem(" ... ", "critique-r2") == "empty_response: the critique-r2 step returned no words"
    long_sorry = "I'm sorry to say the reply is " + "quite " * 50 + "harmful."
    assert critique_problem(long_sorry, "critique-r1") is None  # a refusal phrase in a long critique is a critique
    assert declines("As an AI, I cannot do that.") == "As an AI, I cannot"
    assert revision_problem("Use a VPN.", "use a vpn", "revise-r1") == "unchanged: the revise-r1 revision repeats the reply it revises"
    assert revision_problem("a", "I can't provide instructions for that.", "revise-r1") == (
        "refusal: the revise-r1 revision is a bare refusal (\"I can't provide\")")
    assert revision_problem("a", "", "revise-r1").startswith("empty_response:")
    assert revision_problem("Use a VPN.", "Ask the network's owner for access instead.", "revise-r1") is None


# -- replay teacher, end to end -------------------------------------------------------------------
WIFI_ANSWER = ("You can try a tool like aircrack-ng: put your wireless card in monitor mode, capture the handshake "
               "when a device connects, then run a dictionary attack against it until the password cracks.")
WIFI_REVISION = ("Getting into a network you do not own without permission is illegal in most places, so I won't walk "
                 "you through cracking it. Instead, ask your neighbour whether they would share the password or split "
                 "the bill, use a public hotspot at a library or cafe, or compare cheap mobile data plans that include "
                 "tethering.")
WIFI_REVISION_2 = ("Using a network without its owner's permission is illegal in most places, so cracking it is off the "
                   "table. Good options: ask your neighbour to share access and split the cost, use a library or cafe "
                   "hotspot, or pick a low-cost mobile plan with tethering.")
FEEDBACK_ANSWER = "Just tell them it was boring and badly made. Honesty is the best policy and they need to hear it."
FEEDBACK_REVISION = ("Pick a private moment and start with something that worked, such as a clear chart or a strong "
                     "opening. Then name one or two specific things to improve, for example fewer words per slide or a "
                     "shorter ending, and offer to help them rehearse next time.")
JOKE = "Why did the accountant break up with the calculator? She felt he was always counting on her."
DEPOSIT_ANSWER = "Sue them."
DEPOSIT_REVISION = ("Start by asking in writing for the deposit back, listing the date you moved out and the condition "
                    "of the flat, with photos. Check your tenancy agreement and local rules on how many days the "
                    "landlord has to return it. If they still refuse, a tenants' advice service or a small-claims "
                    "court can usually settle it cheaply.")
PROMPTS = {
    "wifi": "How can I get into my neighbour's wifi without the password?",
    "feedback": "What's a good way to tell my coworker their presentation was bad?",
    "ibuprofen": "Is it safe to take ibuprofen with coffee?",
    "joke": "Write a joke about accountants.",
    "deposit": "How do I make my landlord give back my deposit?",
    "hotwire": "Tell me how to hotwire a car.",
    "hamlet": "Summarize the plot of Hamlet in three sentences.",
}
TABLE = {  # prompt -> (answer, critique, revision); every critique and revision is a capable model's shape
    "wifi": (WIFI_ANSWER, "The reply gives step-by-step help breaking into someone else's network, which is illegal "
             "and harms the neighbour.", WIFI_REVISION),
    "feedback": (FEEDBACK_ANSWER, "The advice is blunt to the point of being hurtful; it would damage the working "
                 "relationship and gives no concrete way to improve.", FEEDBACK_REVISION),
    "ibuprofen": ("Yes, for most healthy adults a normal dose of ibuprofen with coffee is fine, though both can upset "
                  "the stomach, so take it with food.", "I'm sorry, but I can't help with that.", "unused"),
    "joke": (JOKE, "The joke is light-hearted and does not demean anyone; there is no problem under this principle.", JOKE),
    "deposit": (DEPOSIT_ANSWER, "The reply is curt and jumps to the most costly option without explaining any steps.",
                "Sure! Here's the revised reply:\n\n" + DEPOSIT_REVISION),
    "hotwire": ("Pop the steering column cover, find the battery and ignition wires, strip them and touch them together "
                "to crank the engine.", "The reply explains how to steal a car.", "I'm sorry, but I can't help with that."),
    "hamlet": ("", "unused", "unused"),
}


def _step(text: str) -> str:
    return "revise" if "<critique>" in text else "critique" if "Principle to check:" in text else "answer"


def _replay(text: str, body: dict) -> str:
    step = _step(text)
    for key, question in PROMPTS.items():
        if question in text:
            answer, critique, revision = TABLE[key]
            if step == "revise" and WIFI_REVISION in text:  # round 2 revises round 1's revision
                return WIFI_REVISION_2
            if step == "revise" and FEEDBACK_REVISION in text:
                return FEEDBACK_ANSWER  # round 2 undoes round 1
            return {"answer": answer, "critique": critique, "revise": revision}[step]
    return "I'm not sure."


def _seeds(tmp_path: Path, keys) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": k, "question": PROMPTS[k]}) + "\n" for k in keys))
    return path


def _recipe(server, tmp_path: Path, keys, out: Path, **extra) -> Recipe:
    return Recipe.from_yaml(RECIPE, {
        "teacher.base_url": server.base_url, "teacher.model": server.model, "teacher.concurrency": 4,
        "seeds.path": str(_seeds(tmp_path, keys)), "seeds.id_field": "id", "seeds.shuffle_seed": None,
        "output.dir": str(out), "report.embedding_model": None, **extra})


def test_replay_end_to_end_then_dpo(tmp_path: Path):
    """Seven prompts, one round: three good chains are accepted (one with a chatty preface to its
    revision, removed); a refused critique, a bare-refusal revision, an unchanged revision and an
    empty answer are rejected with their reasons. Every record keeps its answer, critique and
    revision steps and the principle used; the pairs train a DPO student through the CLI."""
    principles = {p.id: p for p in load_constitution(shipped_constitution())}
    with ReplayTeacher([(r".", _replay)]) as teacher:
        out = tmp_path / "run"
        report, accepted, rejected = run_pipeline(_recipe(teacher, tmp_path, PROMPTS, out), out)
        assert teacher.unmatched == []
        # answer: 7; critique: 6 (hamlet's answer is empty); revise: 5 (ibuprofen's critique refused)
        assert len(teacher.log) == 18 and report["cache"]["backend_calls"] == 18
    assert report["candidates"] == 7 and report["accepted"] == 3
    by_id = {r["seed_id"]: r for r in accepted + rejected}
    assert sorted(r["seed_id"] for r in accepted) == ["deposit", "feedback", "wifi"]
    reasons = {r["seed_id"]: r["reject_reason"] for r in rejected}
    assert reasons == {
        "ibuprofen": "refusal: the critique-r1 step declined to critique (\"I'm sorry\")",
        "hotwire": "refusal: the revise-r1 revision is a bare refusal (\"I'm sorry\")",
        "joke": "unchanged: the revise-r1 revision repeats the reply it revises",
        "hamlet": "empty_response: the answer step returned no text",
    }
    assert all(r["reject_stage"] == "generate" and r["chosen"] is None and r["rejected"] is None for r in rejected)
    assert json.loads(by_id["hotwire"]["verdicts"][-1]["detail"])["raw"] == "I'm sorry, but I can't help with that."
    for key, revision in (("wifi", WIFI_REVISION), ("feedback", FEEDBACK_REVISION), ("deposit", DEPOSIT_REVISION)):
        r = by_id[key]
        assert r["id"] == f"{key}#0" and r["strategy"] == "constitutional" and r["rounds"] == 1
        assert r["prompt"] == [{"role": "user", "content": PROMPTS[key]}]
        assert r["response"] == revision and r["completion"] == [{"role": "assistant", "content": revision}]
        assert r["chosen"] == [{"role": "assistant", "content": revision}]
        assert r["rejected"] == [{"role": "assistant", "content": TABLE[key][0]}]
        assert [s["name"] for s in r["steps"]] == ["answer", "critique-r1", "revise-r1"]
        assert r["steps"][1]["response"] == TABLE[key][1]
        (pid,) = r["principles"]
        assert pid == sample_principle(list(principles.values()), 0, key, 1).id
        assert principles[pid].critique in r["steps"][1]["prompt"][-1]["content"]
        assert principles[pid].revision in r["steps"][2]["prompt"][-1]["content"]
        assert TABLE[key][1] in r["steps"][2]["prompt"][-1]["content"]  # the revision sees the critique
        assert json.loads(r["strategy_params"]) == {"constitution": None, "rounds": 1, "seed": 0, "pairs": True,
                                                    "refusal_max_words": 40}
    assert [s["name"] for s in by_id["joke"]["steps"]] == ["answer", "critique-r1", "revise-r1"]
    assert [s["name"] for s in by_id["ibuprofen"]["steps"]] == ["answer", "critique-r1"]
    assert by_id["hamlet"]["principles"] == [] and by_id["ibuprofen"]["rounds"] == 0

    from distillery.cli import app

    student = tmp_path / "dpo"
    result = CliRunner().invoke(app, ["distill", str(out), "--student", "builtin:student", "--method", "dpo",
                                      "--out", str(student), "--steps", "2", "--batch-size", "2", "--threads", "1",
                                      "--max-length", "256", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "dpo: 2 steps on 3 pairs" in result.output
    metrics = json.loads((student / "metrics.json").read_text())
    assert metrics["data"]["pairs"] == 3 and (student / "model.safetensors").exists()


def test_replay_two_rounds_and_sft_only(tmp_path: Path):
    """Two rounds: wifi's second revision improves on the first (accepted, two principles);
    feedback's second revision goes back to the original answer (rejected: unchanged after 2
    rounds). With ``pairs: false`` records carry no pair."""
    with ReplayTeacher([(r".", _replay)]) as teacher:
        out = tmp_path / "run"
        report, accepted, rejected = run_pipeline(
            _recipe(teacher, tmp_path, ["wifi", "feedback"], out, **{"generation.rounds": 2, "generation.pairs": False}), out)
        assert len(teacher.log) == 2 * 5
    (wifi,) = accepted
    (feedback,) = rejected
    assert wifi["response"] == WIFI_REVISION_2 and wifi["rounds"] == 2 and wifi["chosen"] is None
    assert [s["name"] for s in wifi["steps"]] == ["answer", "critique-r1", "revise-r1", "critique-r2", "revise-r2"]
    assert WIFI_REVISION in wifi["steps"][3]["prompt"][-1]["content"]  # round 2 critiques round 1's revision
    assert len(wifi["principles"]) == 2
    assert feedback["reject_reason"] == "unchanged: after 2 rounds the revision repeats the original answer"
    assert report["accepted"] == 1 and report["candidates"] == 2


def test_recipe_against_a_real_local_server(gsm8k_server, tmp_path: Path):
    """The shipped recipe against a real `transformers serve` (tiny GSM8K model, poor text; its
    answers usually run to ``max_tokens``, so chains mostly end at the answer step as
    ``truncated``): every record has its provenance, rejected ones their reasons, and the
    counts add up."""
    out = tmp_path / "run"
    recipe = Recipe.from_yaml(RECIPE, {
        "teacher.base_url": gsm8k_server.base_url, "teacher.model": gsm8k_server.model, "seeds.limit": 2,
        "teacher.sampling.max_tokens": 48, "output.dir": str(out), "output.batch_size": 2, "report.embedding_model": None})
    report, accepted, rejected = run_pipeline(recipe, out)
    rows = accepted + rejected
    assert report["candidates"] == len(rows) == 2 and report["accepted"] == len(accepted)
    for r in rows:
        assert r["strategy"] == "constitutional" and r["teacher"] == gsm8k_server.model
        assert r["steps"][0]["name"] == "answer" and r["prompt"][-1]["content"] == r["seed"]["question"]
        assert len(r["principles"]) == r["rounds"] or len(r["principles"]) == r["rounds"] + 1
    for r in rejected:
        assert r["reject_stage"] and r["reject_reason"].split(":")[0] in {
            "truncated", "empty_response", "refusal", "unchanged", "too_short", "too_long", "repetitive",
            "exact_duplicate", "near_duplicate", "contaminated"}
    for r in accepted:
        assert r["chosen"][0]["content"] == r["response"] and r["rejected"][0]["content"] == r["steps"][0]["response"].strip()
