"""Self-Instruct (``generation.strategy: self_instruct``) and its ROUGE-L novelty index.

What is real and what is replayed:

- The novelty index is checked against the real ``rouge-score`` scorer (brute force over
  every pair) on constructed and random cases.
- The strategy runs through the real :class:`~distillery.pipeline.runner.Pipeline` (HTTP
  client, response cache, filters, dedup, decontamination, shards, resume) over the real 175
  seed tasks shipped with distillery. Only the teacher's *answers* are replayed: a
  :class:`~tests.replay_server.ReplayTeacher` returns hand-written, realistic answers of a
  capable model (lists with novel instructions, near-copies of seed tasks, image/drawing
  tasks, a refusal, a non-list answer; yes/no verdicts; input-first and output-first
  instances, one malformed, one echoing its input, one conflicting).
- One run of ``recipes/self-instruct.yaml`` against the real ``gsm8k_server`` (a tiny GSM8K
  model under ``transformers serve``) checks the mechanics only: its lists are gibberish.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from rouge_score import rouge_scorer

from distillery.backends.base import Backend, GenerationResult, SamplingParams
from distillery.errors import RecipeError
from distillery.generate.novelty import NoveltyIndex, lcs_length, min_overlap, rouge_l, tokenize
from distillery.generate.self_instruct import (
    SelfInstruct,
    clean_instruction,
    filter_instances,
    paper_filter,
    parse_instances,
    parse_yes_no,
)
from distillery.generate.strategy import GenerationContext
from distillery.pipeline.runner import Pipeline
from distillery.recipe import Recipe
from tests.helpers import REPO, SHARED, read_jsonl
from tests.replay_server import ReplayTeacher

RECIPE = REPO / "recipes" / "self-instruct.yaml"
PACKAGED = REPO / "src" / "distillery" / "generate" / "data" / "self_instruct"
SEEDS = read_jsonl(PACKAGED / "seed_tasks.jsonl")
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def brute(a: str, b: str) -> float:
    return SCORER.score(a, b)["rougeL"].fmeasure


# -- the shipped data ----------------------------------------------------------------------------
def test_shipped_seed_tasks_are_the_shared_ones_with_their_license():
    assert (PACKAGED / "seed_tasks.jsonl").read_bytes() == (SHARED / "self_instruct" / "seed_tasks.jsonl").read_bytes()
    assert "Apache License" in (PACKAGED / "LICENSE").read_text()
    assert len(SEEDS) == 175 and sum(s["is_classification"] for s in SEEDS) == 26
    assert all(s["instruction"] and s["instances"] for s in SEEDS)


# -- ROUGE-L and the novelty index ---------------------------------------------------------------
def test_rouge_l_constructed_cases_equal_rouge_score():
    cover = "Write a cover letter based on the given facts."  # a seed task
    cases = [
        (cover, cover, 1.0),
        (cover, "Write a cover letter based on the following facts about the applicant.", 16 / 21),
        ("Write a poem.", "write A POEM!!", 1.0),  # case and punctuation are not tokens
        ("a b c d", "d c b a", 0.25),  # order matters: LCS 1 of 4
        ("", "anything at all", 0.0),
        ("¿Qué?", "what", 0.0),  # no [a-z0-9] tokens: nothing to match
        ("the cat sat on the mat", "the the the", 2 * 2 / 9),
    ]
    for a, b, expected in cases:
        assert rouge_l(a, b) == brute(a, b) == pytest.approx(expected)
        assert rouge_l(b, a) == brute(b, a)


def test_rouge_l_equals_rouge_score_on_random_and_seed_pairs():
    rng = random.Random(0)
    words = "a b c d e the of to and x1 y2".split()
    for _ in range(2000):
        a = " ".join(rng.choice(words) for _ in range(rng.randint(0, 14)))
        b = " ".join(rng.choice(words) for _ in range(rng.randint(0, 14)))
        assert rouge_l(a, b) == brute(a, b), (a, b)
    texts = [s["instruction"] for s in SEEDS[:50]]
    for a in texts:
        for b in texts:
            assert rouge_l(a, b) == brute(a, b)


def test_lcs_is_the_dynamic_programming_lcs():
    rng = random.Random(1)

    def dp(a, b):
        t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                t[i][j] = t[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(t[i - 1][j], t[i][j - 1])
        return t[-1][-1]

    for _ in range(1000):
        a = [rng.randint(0, 4) for _ in range(rng.randint(0, 70))]  # > 64 items: several machine words
        b = [rng.randint(0, 4) for _ in range(rng.randint(0, 70))]
        assert lcs_length(a, b) == dp(a, b)


def test_min_overlap_is_the_least_overlap_that_can_reach_the_threshold():
    for n in range(1, 40):
        for t in (0.3, 0.5, 0.7, 0.9, 1.0):
            m = min_overlap(n, t)
            # some pool length reaches t with m shared tokens, and none with m - 1
            assert any(2 * m / (n + b) >= t - 1e-9 for b in range(m, 4 * n + 2))
            assert not any(2 * (m - 1) / (n + b) >= t + 1e-9 for b in range(max(1, m - 1), 4 * n + 2))
    assert min_overlap(10, 0.7) == 6  # 0.35 (10 + 7) / ... : 6 shared tokens at least


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.9, 1.0])
def test_index_verdicts_equal_brute_force_rouge_score(threshold: float):
    rng = random.Random(threshold)
    words = "write a short poem about the sea list three facts explain why summarize text".split()
    pool = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 14))) for _ in range(150)]
    index = NoveltyIndex(threshold)
    for p in pool:
        index.add(p)
    queries = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 14))) for _ in range(60)]
    for p in rng.sample(pool, 30):  # near the threshold: pool items with a word dropped, added or swapped
        toks = p.split()
        i = rng.randrange(len(toks))
        queries += [" ".join(toks[:i] + toks[i + 1:]), " ".join(toks[:i] + [rng.choice(words)] + toks[i:]),
                    " ".join(toks[:i] + [rng.choice(words)] + toks[i + 1:])]
    pruned = 0
    for q in queries:
        scores = [brute(p, q) for p in pool]
        best = max(scores)
        match = index.nearest(q)
        assert (best >= threshold) == (match.score >= threshold) == (not index.is_novel(q)), (q, best, match)
        if best >= threshold:
            assert match.score == best and scores[match.position] == best and match.text == pool[match.position]
        assert match.score <= best
        assert index.brute_force(q).score == best
        pruned += len(pool) - match.scored
    assert pruned > 0  # the index scored fewer items than brute force


def test_index_on_seed_tasks_finds_near_copies():
    index = NoveltyIndex(0.7)
    for s in SEEDS:
        index.add(s["instruction"], s["id"])
    m = index.nearest("Write a cover letter based on the following facts about the applicant.")
    assert m.score == pytest.approx(16 / 21) and m.text == "Write a cover letter based on the given facts."
    assert m.key == next(s["id"] for s in SEEDS if s["instruction"] == m.text)
    assert index.is_novel("Suggest three names for a bakery that specializes in gluten-free pastries.")
    assert index.nearest("").score == 0.0 and index.nearest("").position is None
    assert tokenize("Hello, World! 42") == ["hello", "world", "42"]
    with pytest.raises(ValueError):
        NoveltyIndex(0)


# -- the paper's filters and parsers --------------------------------------------------------------
def test_paper_filter_constructed_cases():
    assert paper_filter("Explain the difference between weather and climate.") is None
    assert paper_filter("Summarize this text.").startswith("filtered: too_short: 3 word(s)")
    assert paper_filter(" ".join(["word"] * 151)).startswith("filtered: too_long: 151 words")
    assert paper_filter(" ".join(["word"] * 150)) is None
    for text, word in [("Describe the image below in detail.", "image"), ("Draw a cat with ASCII characters.", "draw"),
                       ("Plot the data as a bar chart.", "plot"), ("Read the attached FILE and answer.", "file"),
                       ("Tell me how to go to the station.", "go to"), ("Look at these pictures and describe them.", "pictures")]:
        assert paper_filter(text) == f"filtered: keyword: {word!r} (not doable by a text-only model)", text
    assert paper_filter("Explain how graphite pencils are made.") is None  # whole words only: graphite is not graph
    assert paper_filter("Write a program that sorts a list of numbers.").startswith("filtered: prefix:")
    assert paper_filter("(Optional) Rewrite the paragraph in a formal tone.").startswith("filtered: punctuation:")
    assert paper_filter("¿Puedes traducir esta frase al inglés?").startswith("filtered: non_ascii:")
    assert paper_filter("Écrivez un poème sur la mer, s'il vous plaît.").startswith("filtered: non_ascii:")


def test_clean_instruction():
    assert clean_instruction("  Task 9: write a   haiku about rain.") == "Write a haiku about rain."
    assert clean_instruction('"Summarize the article in two sentences."') == "Summarize the article in two sentences."
    assert clean_instruction("**Instruction:** Name three rivers in Europe.") == "Name three rivers in Europe."
    assert clean_instruction("Classify the sentiment of the tweet.\nInput: I love it!") == "Classify the sentiment of the tweet."


def test_parse_instances_shapes():
    pairs, why = parse_instances("Input: 3 apples and 2 pears\nOutput: 5 pieces of fruit", output_first=False)
    assert why is None and pairs == [("3 apples and 2 pears", "5 pieces of fruit")]
    pairs, _ = parse_instances("Input: None\nOutput: Keep going: every expert was once a beginner.", output_first=False)
    assert pairs == [("", "Keep going: every expert was once a beginner.")]
    pairs, _ = parse_instances("Output: Just the answer.", output_first=False)
    assert pairs == [("", "Just the answer.")]
    text = "Example 1\n**Input:** The sky is green.\n**Output:** Opinion\n\nExample 2\nInput: Water boils at 100 C.\nOutput: Fact"
    assert parse_instances(text, output_first=False)[0] == [("The sky is green.", "Opinion"), ("Water boils at 100 C.", "Fact")]
    text = "Class label: Positive\nInput: Great blender, smooth soups.\n\nClass label: Negative\nInput: It broke in a week."
    assert parse_instances(text, output_first=True)[0] == [("Great blender, smooth soups.", "Positive"),
                                                          ("It broke in a week.", "Negative")]
    assert parse_instances("I would be happy to help!", output_first=False)[1].startswith("malformed_instances: no \"Input")
    assert parse_instances("Input: only an input", output_first=False)[1].startswith("malformed_instances")
    assert parse_instances("", output_first=True)[1].startswith("empty_response")


def test_filter_instances_paper_rules():
    assert filter_instances([("a", "b"), ("a", "b"), ("", "c")]) == ([("a", "b"), ("", "c")], None)
    assert filter_instances([("hello", "hello")])[1].startswith("invalid_instances")
    assert filter_instances([("Translate:", "x")])[1].startswith("invalid_instances")
    assert filter_instances([("x", "The answer is:")])[1].startswith("invalid_instances")
    assert filter_instances([("a", "")])[1].startswith("invalid_instances")
    assert filter_instances([("a", "b"), ("a", "c")])[1].startswith("conflicting_instances")
    assert filter_instances([("a", "b"), ("x", "x")]) == ([("a", "b")], None)


def test_parse_yes_no():
    assert parse_yes_no("Yes") is True and parse_yes_no(" no.") is False and parse_yes_no("**Yes**, it is") is True
    assert parse_yes_no("I think the answer is no") is False
    assert parse_yes_no("Maybe.") is None and parse_yes_no("It depends: yes or no.") is None and parse_yes_no(None) is None


def test_truncated_list_loses_its_last_item():
    class Ctx:
        sampling = SamplingParams(max_tokens=20)

    strategy = object.__new__(SelfInstruct)
    cut = GenerationResult("1. Write a limerick about a cat.\n2. Explain how tides wo", finish_reason="length")
    assert SelfInstruct._items(strategy, cut, Ctx()) == [("Write a limerick about a cat.", None)]
    only = GenerationResult("1. Explain how tides wo", finish_reason="length")
    assert SelfInstruct._items(strategy, only, Ctx())[0][1] == "truncated: the self_instruct.instructions step was cut off at max_tokens=20"
    refusal = GenerationResult("I'm sorry, but I can't help with that.", finish_reason="stop")
    assert SelfInstruct._items(strategy, refusal, Ctx())[0][1].startswith("refusal:")
    failed = GenerationResult(None, error_kind="http_400", error="bad request")
    assert SelfInstruct._items(strategy, failed, Ctx()) == [(None, "http_400: the self_instruct.instructions step failed: bad request")]


class _Unanswered(Backend):
    """Records the requests it is sent and answers each with a transient failure (the batch
    stops after its first round)."""

    kind = "unanswered_test"

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.sent = []

    async def stream(self, requests, on_receive=None):
        for i, request in enumerate(requests):
            self.sent.append(request)
            yield i, GenerationResult(None, error_kind="timeout", error="not answered")


def test_instruction_requests_of_two_batches_never_share_a_cache_key(tmp_path: Path):
    """Two seed tasks with the same text, one shown per request: batches 0 and 1 send the very
    same messages with the same sample indexes, yet their cache keys differ (the batch is in
    the step name); a batch asked again has the same keys (a resumed run replays its cache)."""
    seeds = tmp_path / "tasks.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"t{i}", "instruction": "Write a haiku about the sea.",
                                         "instances": [{"input": "", "output": "Waves fold into foam."}]}) + "\n"
                             for i in range(2)))
    recipe = Recipe.from_yaml(RECIPE, {"seeds.path": str(seeds), "output.batch_size": 1, "generation.in_context_human": 1,
                                       "generation.in_context_machine": 0, "generation.per_round": 2})

    def sent(batch: int) -> tuple[_Unanswered, list]:
        strategy = recipe.generation.build(recipe)
        backend = _Unanswered("m")
        ctx = GenerationContext(strategy, backend, [], SamplingParams(), str(seeds), "tasks", "id", False, batch=batch)
        assert asyncio.run(strategy.generate([], ctx)) == []
        return backend, backend.sent

    b0, first = sent(0)
    _, second = sent(1)
    _, again = sent(0)
    assert len(first) == len(second) == 2
    assert [(r.messages, r.sample_index) for r in first] == [(r.messages, r.sample_index) for r in second]
    assert [r.step for r in first] == ["self_instruct.instructions-b0"] * 2
    assert [r.step for r in second] == ["self_instruct.instructions-b1"] * 2
    assert not {b0.cache_key(r) for r in first} & {b0.cache_key(r) for r in second}
    assert [b0.cache_key(r) for r in again] == [b0.cache_key(r) for r in first]


def test_template_override_with_an_unknown_variable_is_a_recipe_error():
    with pytest.raises(RecipeError, match=r"generation.templates.classify: unknown variable\(s\) \['task'\]"):
        Recipe.from_yaml(RECIPE, {"generation.templates": {"classify": "Is {{ task }} a classification task?"}})


# -- replayed teacher, through the pipeline -------------------------------------------------------
NEAR_SEED = "Write a cover letter based on the following facts about the applicant."  # 0.76 to a seed task
B = [
    "Suggest three names for a bakery that specializes in gluten-free pastries.",  # 0
    "Convert the following list of temperatures from Celsius to Fahrenheit.",  # 1: conflicting instances
    "Decide whether the following product review is positive, negative or neutral.",  # 2: classification
    "Explain the difference between weather and climate to a ten-year-old.",  # 3
    "Write a short motivational message for someone starting a new job.",  # 4: no input
    "Rewrite the sentence so that it uses the passive voice.",  # 5
    "Tell whether the statement below is a fact or an opinion.",  # 6: classification
    "List the main steps for planting a tomato seedling in a pot.",  # 7: malformed instances
    "Translate the given English idiom into plain language.",  # 8
    "Identify the tone of the following email and justify your answer.",  # 9: "Maybe": input-first
    "Correct the spelling mistakes in the paragraph.",  # 10: output echoes the input
    "Create a weekly workout schedule for a beginner who has 30 minutes a day.",  # 11
    "Compose a haiku about the first snowfall of winter.",  # 12
    "Give two arguments for and against school uniforms.",  # 13
    "Estimate how many minutes it takes to read a 2,000-word article aloud.",  # 14
    "Propose a catchy slogan for a campaign that promotes cycling to work.",  # 15
    "Describe the rules of tic-tac-toe in simple words.",  # 16
    "Summarize the plot of a well-known fairy tale in two sentences.",  # 17: "plot": the paper's keyword filter drops it
    "Suggest a polite way to decline a wedding invitation.",  # 18
]
REWORD_3 = "Explain the difference between weather and climate to a twelve-year-old."


def numbered(items: list[str]) -> str:
    return "Here are some new tasks:\n\n" + "\n".join(f"{i}. {t}" for i, t in enumerate(items, 1))


LISTS = {  # by sample index (round * per_round + request; the recipe's sampling seed is 0)
    0: numbered([B[0], B[1], NEAR_SEED, "Draw a picture of a cat using only ASCII characters.", B[2]]),
    1: "I'm sorry, but I can't help with creating new tasks right now.",
    2: numbered([B[3], REWORD_3, "Summarize this.", "Describe what is happening in the image.", B[4]]),
    3: "Sure! Some ideas: writing poems, summarizing the news and translating menus.",
    4: numbered([B[5], B[6], "Suggest three names for a bakery that specializes in gluten free pastries.",
                 "¿Puedes traducir esta frase al inglés?", B[7]]),
    5: numbered([B[8], "Write a program that prints the first ten prime numbers.",
                 "(Optional) Rewrite the paragraph in a formal tone.", B[9], B[10]]),
    6: numbered([B[11], B[12], B[13], B[14], B[15]]),
    7: numbered([B[16], B[17], B[18]]),
}
CLASSIFICATION = {B[2], B[6]}
INSTANCES = {
    B[1]: "Input: 20, 30\nOutput: 68, 86\n\nInput: 20, 30\nOutput: 68 F, 86 F",
    B[4]: "Input: None\nOutput: Every expert was once a beginner. Ask questions, take notes and enjoy the ride!",
    B[7]: "I would be happy to help you with gardening. Tomatoes love sun.",
    B[10]: "Input: Teh cat sat on teh mat.\nOutput: Teh cat sat on teh mat.",
    B[2]: "Class label: Positive\nInput: Blends smoothies in seconds and is easy to clean.\n\n"
          "Class label: Negative\nInput: The lid cracked after two uses.\n\nClass label: Neutral\nInput: It is a blender.",
    B[6]: "Class label: Fact\nInput: Water boils at 100 degrees Celsius at sea level.\n\n"
          "Class label: Opinion\nInput: Summer is the best season.",
}


def instance_answer(text: str, body: dict) -> str:
    instruction = re.findall(r"Task: (.*)", text)[-1].strip()
    return INSTANCES.get(instruction, f"Input: An example input for: {instruction}\nOutput: A careful answer to: {instruction}")


def classify_answer(text: str, body: dict) -> str:
    instruction = re.findall(r"Task: (.*)", text)[-1].strip()
    if instruction == B[9]:
        return "Maybe."
    return "Yes" if instruction in CLASSIFICATION else "No"


def rules(lists=None):
    lists = LISTS if lists is None else lists
    return [
        (r"Invent \d+ new tasks", lambda text, body: lists.get(int(body.get("seed") or 0), "No more ideas, sorry.")
         if isinstance(lists, dict) else lists(text, body)),
        (r"Classification task:\s*$", classify_answer),
        (r"write \d+ example|Write \d+ example", instance_answer),
    ]


def overrides(teacher: ReplayTeacher, out: Path, **extra) -> dict:
    return {
        "teacher.base_url": teacher.base_url,
        "teacher.model": teacher.model,
        "teacher.concurrency": 4,
        "output.dir": str(out),
        "output.batch_size": 175,
        "report.embedding_model": None,
        "generation.num_instructions": 12,
        "generation.per_round": 2,
        "generation.new_per_request": 5,
        "generation.max_rounds": 10,
        "generation.instances_per_instruction": 1,
        **extra,
    }


def read(out: Path) -> tuple[list[dict], list[dict]]:
    return pq.read_table(out / "accepted.parquet").to_pylist(), pq.read_table(out / "rejected.parquet").to_pylist()


def assert_pool_is_novel(pool: list[str], machine: list[str], threshold: float = 0.7) -> None:
    """No machine instruction has ROUGE-L >= threshold with any other pool instruction
    (brute force, rouge-score). Two seed-task pairs are above it already (e.g. "Write a cover
    letter / a conversation based on the given facts.", 0.82): seeds are kept as given."""
    others = list(pool)
    for m in machine:
        others.remove(m)
        assert max(brute(o, m) for o in others) < threshold, m
        others.append(m)


def test_replayed_self_instruct_run_over_the_175_seeds(tmp_path: Path):
    """Real pipeline over the shipped seeds; replayed answers (see the module doc)."""
    for i, a in enumerate(B + [NEAR_SEED]):  # the hand-written bank is what the comments say it is
        assert max(brute(s["instruction"], a) for s in SEEDS) < 0.7 or a == NEAR_SEED
        assert all(brute(a, b) < 0.7 for b in B[i + 1:])
    assert brute(B[3], REWORD_3) >= 0.7
    out = tmp_path / "si"
    with ReplayTeacher(rules()) as teacher:
        report = Pipeline(Recipe.from_yaml(RECIPE, overrides(teacher, out)), progress=False).run()
        bodies = teacher.requests(r"Invent \d+ new tasks")
        assert not teacher.unmatched
    accepted, rejected = read(out)
    records = accepted + rejected
    assert report["candidates"] == len(records) == 30
    # rounds 0-3, two requests each: sample indexes 0..7 (cache keys differ per round and request)
    assert sorted(b["seed"] for b in bodies) == list(range(8))
    # 12 instructions joined the pool; 3 of them lost their instances
    added = [r for r in records if r["pool_added"]]
    assert [r["instruction"] for r in sorted(added, key=lambda r: (r["round"], int(r["seed_id"].rsplit("-", 1)[1])))] == \
        [B[i] for i in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)]
    assert len(accepted) == 9 and {r["instruction"] for r in accepted} == {B[i] for i in (0, 2, 3, 4, 5, 6, 8, 9, 11)}
    reasons = sorted(r["reject_reason"].split(":")[0] + (":" + r["reject_reason"].split(":")[1] if r["reject_reason"].startswith("filtered") else "")
                     for r in rejected)
    assert reasons == sorted(
        ["too_similar"] * 3  # near-copy of a seed task, the reworded B3 (same round), the bakery echo (machine task)
        + ["filtered: keyword"] * 3 + ["filtered: too_short", "filtered: non_ascii", "filtered: prefix", "filtered: punctuation"]
        + ["refusal", "no_list"]
        + ["surplus"] * 6  # round 3 went past the 12: the rest of requests 6 and 7
        + ["conflicting_instances", "malformed_instances", "invalid_instances"]
    )
    by_reason = {r["reject_reason"].split(":")[0]: r for r in rejected}
    seed_copy = next(r for r in rejected if r["instruction"] == NEAR_SEED)
    assert seed_copy["reject_reason"] == 'too_similar: rouge_l=0.76 to "Write a cover letter based on the given facts."'
    assert seed_copy["rouge_l_max"] == pytest.approx(16 / 21) and seed_copy["pool_added"] is False
    echo = next(r for r in rejected if (r["instruction"] or "").startswith("Suggest three names") and not r["pool_added"])
    assert echo["most_similar"] == B[0] and echo["rouge_l_max"] >= 0.7  # rejected against a machine task
    assert next(r for r in rejected if r["instruction"] == REWORD_3)["most_similar"] == B[3]
    assert json.loads(by_reason["refusal"]["verdicts"][0]["detail"])["raw"] == LISTS[1]
    assert by_reason["refusal"]["instruction"] is None and by_reason["refusal"]["prompt"][-1]["content"].startswith("Here are")
    assert json.loads(by_reason["malformed_instances"]["verdicts"][0]["detail"])["raw"] == INSTANCES[B[7]]
    assert all(r["response"] is None for r in rejected)
    # records: prompt = instruction (+ input), response = output; provenance of every call
    for r in accepted:
        assert r["strategy"] == "self_instruct" and json.loads(r["strategy_params"])["rouge_threshold"] == 0.7
        assert [s["name"] for s in r["steps"]] == ["self_instruct.instructions", "self_instruct.classify",
                                                   "self_instruct.instances"]
        content = r["prompt"][0]["content"]
        assert r["prompt"][0]["role"] == "user" and content == r["instruction"] + (f"\n\n{r['instance_input']}" if r["instance_input"] else "")
        assert r["messages"][-1] == {"role": "assistant", "content": r["response"]}
        assert len(r["in_context_ids"]) == 8 and r["rouge_l_max"] < 0.7 and r["id"] == r["seed_id"] + "#0"
        assert r["seed"]["id"] in r["in_context_ids"]  # the record's seed: a seed task it was shown
        machine_shown = [i for i in r["in_context_ids"] if i.startswith("self-instruct-")]
        assert len(machine_shown) == (0 if r["round"] == 0 else 2)  # 6 human + 2 machine once the pool has them
    by_instruction = {r["instruction"]: r for r in accepted}
    assert by_instruction[B[4]]["instance_input"] == "" and by_instruction[B[4]]["prompt"][0]["content"] == B[4]
    assert by_instruction[B[2]]["is_classification"] is True and by_instruction[B[2]]["response"] in ("Positive", "Negative", "Neutral")
    assert by_instruction[B[6]]["response"] in ("Fact", "Opinion") and by_instruction[B[6]]["instance_input"]
    assert by_instruction[B[9]]["is_classification"] is None and by_instruction[B[9]]["response"].startswith("A careful answer")
    assert by_instruction[B[0]]["is_classification"] is False
    assert len({r["id"] for r in records}) == len(records)
    # the pool file: 175 seed tasks + the 12 machine instructions; never two at ROUGE-L >= 0.7
    pool = [json.loads(line) for line in (out / "state" / "self_instruct_pool.jsonl").read_text().splitlines()]
    assert [p["source"] for p in pool] == ["human"] * 175 + ["machine"] * 12
    assert [p["instruction"] for p in pool[175:]] == B[:12]  # in the order they were accepted
    assert_pool_is_novel([p["instruction"] for p in pool], [p["instruction"] for p in pool[175:]])
    # the accept rate the report quotes
    assert report["accepted"] == 9


def test_resume_continues_the_pool_and_reruns_identically(tmp_path: Path):
    """Two batches (100 + 75 seeds): batch 1's pool holds batch 0's machine instructions, so
    the same answers are now too similar; deleting batch 1's marker and re-running rebuilds
    the pool from batch 0's shard and gives the same records from the cache (replayed answers)."""
    out = tmp_path / "two"
    with ReplayTeacher(rules()) as teacher:
        recipe = Recipe.from_yaml(RECIPE, overrides(teacher, out, **{"output.batch_size": 100,
                                                                     "generation.num_instructions": 14}))
        report = Pipeline(recipe, progress=False).run()
        assert report["batches"] == 2
        accepted, rejected = read(out)
        records = sorted(accepted + rejected, key=lambda r: r["id"])
        added = [r for r in records if r["pool_added"]]
        first = {r["instruction"] for r in added if r["seed_id"].startswith("self-instruct-b0-")}
        second = {r["instruction"] for r in added if r["seed_id"].startswith("self-instruct-b1-")}
        assert first == {B[i] for i in range(8)}  # 14 * 100 / 175 = 8
        assert second == {B[i] for i in (8, 9, 10, 11, 12, 13)}  # the other 6
        repeated = [r for r in records if r["seed_id"].startswith("self-instruct-b1-") and r["instruction"] in first]
        assert len(repeated) == 8 and all(r["reject_reason"].startswith("too_similar: rouge_l=1.00") for r in repeated)
        assert all(r["most_similar"] == r["instruction"] for r in repeated)
        pool = [json.loads(line) for line in (out / "state" / "self_instruct_pool.jsonl").read_text().splitlines()]
        assert len(pool) == 175 + 14
        assert_pool_is_novel([p["instruction"] for p in pool], [p["instruction"] for p in pool[175:]])

        sorted((out / "shards").glob("batch-*.json"))[-1].unlink()  # batch 1 is redone
        served = len(teacher.log)
        again = Pipeline(recipe, progress=False).run()
        assert len(teacher.log) == served and again["cache"]["session_backend_calls"] == 0
        accepted2, rejected2 = read(out)
        records2 = sorted(accepted2 + rejected2, key=lambda r: r["id"])
        keep = ("id", "prompt", "response", "accepted", "reject_reason", "instruction", "in_context_ids", "rouge_l_max",
                "most_similar", "pool_added")

        def same(r):
            return {k: r[k] for k in keep} | {"steps": [(s["name"], s["prompt"], s["response"]) for s in r["steps"]]}

        assert [same(r) for r in records2] == [same(r) for r in records]


def test_pool_never_holds_near_duplicates_under_a_flood_of_variants(tmp_path: Path):
    """A replayed teacher that answers with template variants (many within ROUGE-L 0.7 of one
    another or of seed tasks): after several rounds the pool still has no pair >= 0.7."""
    verbs = ["Write", "Explain", "Summarize", "Describe", "List", "Compare", "Give me", "Create"]
    things = ["a short story", "the main idea", "three reasons", "a friendly email", "a step-by-step guide",
              "the pros and cons", "five questions", "a catchy title"]
    topics = ["about the ocean", "for a job interview", "on renewable energy", "about learning a language",
              "for a birthday party", "about the given paragraph", "on healthy breakfasts", "for a science fair"]

    def flood(text: str, body: dict) -> str:
        rng = random.Random(body.get("seed"))
        items = [f"{rng.choice(verbs)} {rng.choice(things)} {rng.choice(topics)}." for _ in range(6)]
        items.append(rng.choice(SEEDS)["instruction"])  # echo a seed task
        return numbered(items)

    out = tmp_path / "flood"
    with ReplayTeacher(rules(flood)) as teacher:
        recipe = Recipe.from_yaml(RECIPE, overrides(teacher, out, **{
            "generation.num_instructions": 40, "generation.per_round": 4, "generation.new_per_request": 7,
            "generation.max_rounds": 8, "filters": [], "dedup": [], "decontamination": None}))
        report = Pipeline(recipe, progress=False).run()
    accepted, rejected = read(out)
    records = accepted + rejected
    added = [r["instruction"] for r in records if r["pool_added"]]
    similar = [r for r in rejected if r["reject_reason"].startswith("too_similar")]
    assert 10 <= len(added) <= 40 and len(similar) >= 10 and report["candidates"] == len(records)
    assert all(r["rouge_l_max"] >= 0.7 for r in similar)
    assert any(r["most_similar"] in {s["instruction"] for s in SEEDS} for r in similar)  # the echoed seed tasks
    pool = [json.loads(line)["instruction"] for line in (out / "state" / "self_instruct_pool.jsonl").read_text().splitlines()]
    assert sorted(pool[175:]) == sorted(added) and len(pool) == 175 + len(added)
    assert_pool_is_novel(pool, added)


# -- the real tiny model ---------------------------------------------------------------------------
def test_self_instruct_recipe_against_the_real_server(gsm8k_server, tmp_path: Path):
    """The shipped recipe against a real `transformers serve` with the tiny GSM8K model: its
    "lists" are poor, so only the mechanics are checked (records, provenance, reasons, counts)."""
    out = tmp_path / "real"
    recipe = Recipe.from_yaml(RECIPE, {
        "teacher.base_url": gsm8k_server.base_url, "teacher.model": gsm8k_server.model, "teacher.concurrency": 4,
        "teacher.sampling.max_tokens": 48, "seeds.limit": 20, "output.dir": str(out), "output.batch_size": 20,
        "report.embedding_model": None, "generation.num_instructions": 3, "generation.per_round": 2,
        "generation.max_rounds": 2,
    })
    report = Pipeline(recipe, progress=False).run()
    accepted, rejected = read(out)
    records = accepted + rejected
    assert records and report["candidates"] == len(records) and report["accepted"] == len(accepted)
    for r in records:
        assert r["strategy"] == "self_instruct" and r["teacher"] == gsm8k_server.model and r["backend"] == "openai"
        assert r["steps"] and r["steps"][0]["name"] == "self_instruct.instructions" and r["steps"][0]["prompt"]
        assert len(r["in_context_ids"]) == 8 and r["round"] in (0, 1)
    known = {"no_list", "refusal", "empty_response", "truncated", "too_similar", "filtered", "surplus",
             "malformed_instances", "invalid_instances", "conflicting_instances", "too_short", "too_long", "repetitive",
             "exact_duplicate", "near_duplicate", "contaminated"}
    for r in rejected:
        assert r["reject_stage"] and r["reject_reason"].split(":")[0] in known, r["reject_reason"]
    pool = (out / "state" / "self_instruct_pool.jsonl").read_text().splitlines()
    assert len(pool) == 20 + sum(1 for r in records if r["pool_added"] and r["id"].endswith("#0"))
