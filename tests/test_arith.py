"""Tests of the built-in procedural task ``distillery.builtin.arith``."""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction

import pytest

from distillery.builtin.arith import (
    TEMPLATE_COUNT,
    TEMPLATES,
    TEST_SIZE,
    ArithProblem,
    GenerationStats,
    count_operations,
    format_answer,
    generate,
    parse_answer,
    write_jsonl,
)
from distillery.builtin.arith import test_set as canonical_test_set
from distillery.text import word_ngrams, words

SAMPLE = 20_000


@pytest.fixture(scope="module")
def sample() -> list[ArithProblem]:
    return list(generate(SAMPLE, split="train", seed=0))


def _run(program: str) -> object:
    namespace: dict[str, object] = {}
    exec(compile(program, "<gold>", "exec"), namespace)
    return namespace["solution"]()


def test_template_inventory() -> None:
    ids = [t.id for t in TEMPLATES]
    assert TEMPLATE_COUNT == len(TEMPLATES) >= 50
    assert len(set(ids)) == len(ids)
    roles = Counter(t.role for t in TEMPLATES)
    assert set(roles) == {"frame", "step", "question"}
    assert roles["step"] >= 30 and roles["frame"] >= 10 and roles["question"] >= 10


def test_same_seed_same_output_and_seeds_differ() -> None:
    a = list(generate(300, seed=5))
    assert a == list(generate(300, seed=5))
    assert list(generate(120, seed=5)) == a[:120]  # problem i depends only on (split, seed, i)
    b = list(generate(300, seed=6))
    assert sum(x.question == y.question for x, y in zip(a, b, strict=True)) == 0
    assert [p.id for p in a[:2]] == ["arith-train-5-0", "arith-train-5-1"]


def test_every_gold_program_returns_the_gold_answer(sample: list[ArithProblem]) -> None:
    fractions = 0
    for p in sample:
        value = _run(p.program)
        assert type(value) in (int, Fraction), p.program
        assert value == p.answer_value(), (p.question, p.program, p.answer)
        assert format_answer(value) == p.answer
        uses_fraction = "Fraction(" in p.program
        assert p.program.startswith("from fractions import Fraction\n" if uses_fraction else "def solution():\n")
        fractions += isinstance(p.answer_value(), Fraction)
    assert 0 < fractions < 0.1 * len(sample)  # mostly integers, some exact fractions


def test_every_template_and_difficulty_is_covered(sample: list[ArithProblem]) -> None:
    used = Counter(part for p in sample for part in p.template.split("+"))
    assert set(used) == {t.id for t in TEMPLATES}
    assert Counter(p.difficulty for p in sample) == {d: SAMPLE // 5 for d in (1, 2, 3, 4, 5)}


def test_difficulty_is_the_number_of_operation_lines(sample: list[ArithProblem]) -> None:
    for p in sample[::4]:  # ast parsing is the slow part; a quarter suffices
        assert count_operations(p.program) == p.difficulty, p.program
        assert len(p.template.split("+")) == p.difficulty + 2  # frame + steps + question
    program = "def solution():\n    a = 3\n    b = -2\n    a = a * b\n    result = a\n    return result\n"
    assert count_operations(program) == 1


def test_questions_are_short_and_rarely_duplicated(sample: list[ArithProblem]) -> None:
    questions = [p.question for p in sample]
    assert 1 - len(set(questions)) / len(questions) < 0.01
    lengths = {d: [len(words(p.question)) for p in sample if p.difficulty == d] for d in (1, 2, 3, 4, 5)}
    assert min(lengths[1]) >= 12 and max(lengths[1]) <= 45
    assert max(lengths[5]) <= 100
    means = [sum(v) / len(v) for _, v in sorted(lengths.items())]
    assert means == sorted(means) and 15 <= means[0] and means[-1] <= 70


def test_train_and_validation_never_share_a_13gram_with_test(sample: list[ArithProblem]) -> None:
    test_grams = {g for p in canonical_test_set() for g in word_ngrams(words(p.question), 13)}
    validation = list(generate(400, split="validation", seed=0))
    for p in sample[:4000] + validation:
        assert not any(g in test_grams for g in word_ngrams(words(p.question), 13)), p.question
    assert {p.question for p in validation}.isdisjoint(p.question for p in sample)
    assert all(p.split == "validation" and p.id.startswith("arith-validation-0-") for p in validation)


def test_rejections_are_counted_and_rare() -> None:
    stats = GenerationStats()
    problems = list(generate(2000, seed=3, stats=stats))
    assert stats.produced == len(problems) == 2000
    assert stats.attempts == 2000 + stats.rejected_test_overlap + stats.rejected_other_split
    assert stats.rejected_test_overlap / stats.attempts < 0.05


def test_test_set_is_fixed() -> None:
    first, second = canonical_test_set(), canonical_test_set()
    assert len(first) == TEST_SIZE == 1000
    assert [p.to_dict() for p in first] == [p.to_dict() for p in second]
    assert [p.id for p in first] == [f"arith-test-{i}" for i in range(TEST_SIZE)]
    assert Counter(p.difficulty for p in first) == {d: 200 for d in (1, 2, 3, 4, 5)}
    assert len({p.question for p in first}) == TEST_SIZE
    assert all(p.split == "test" and _run(p.program) == p.answer_value() for p in first)
    assert list(generate(5, split="test", seed=99)) == first[:5]
    assert [p.difficulty for p in generate(3, split="test", difficulties=[4])] == [4, 4, 4]


def test_difficulties_are_cycled_in_order() -> None:
    problems = list(generate(6, seed=1, difficulties=[2, 4]))
    assert [p.difficulty for p in problems] == [2, 4, 2, 4, 2, 4]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"split": "dev"},
        {"difficulties": [0]},
        {"difficulties": [6]},
        {"difficulties": []},
        {"difficulties": [True]},
        {"seed": "0"},
    ],
)
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate(3, **kwargs)  # raised at call time, not on first iteration


def test_bad_counts_raise() -> None:
    with pytest.raises(ValueError):
        generate(-1)
    with pytest.raises(ValueError):
        generate(201, split="test", difficulties=[1])
    assert list(generate(0)) == []


@pytest.mark.parametrize(
    ("text", "value"),
    [("42", 42), ("-3", -3), ("0", 0), ("7/3", Fraction(7, 3)), ("-5/2", Fraction(-5, 2)), (" 12 ", 12), ("6/3", 2)],
)
def test_parse_answer(text: str, value: int | Fraction) -> None:
    parsed = parse_answer(text)
    assert parsed == value and type(parsed) is type(value)
    assert parse_answer(format_answer(parsed)) == parsed


@pytest.mark.parametrize("text", ["", "1.5", "abc", "1/0", "3/", "+4", "--3", "1 / 2", "٣"])
def test_parse_answer_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_answer(text)


def test_write_jsonl_round_trips(tmp_path) -> None:
    problems = list(generate(50, seed=2))
    path = tmp_path / "sub" / "arith.jsonl"
    assert write_jsonl(path, problems) == 50
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [ArithProblem(**row) for row in rows] == problems
    assert write_jsonl(path, [p.to_dict() for p in problems[:3]]) == 3  # overwrites atomically
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3
    assert sorted(x.name for x in path.parent.iterdir()) == ["arith.jsonl"]  # no temp file left


def test_write_jsonl_keeps_old_file_on_failure(tmp_path) -> None:
    path = tmp_path / "arith.jsonl"
    write_jsonl(path, list(generate(2, seed=2)))
    before = path.read_text(encoding="utf-8")

    def broken():
        yield next(generate(1, seed=4))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl(path, broken())
    assert path.read_text(encoding="utf-8") == before
    assert [x.name for x in tmp_path.iterdir()] == ["arith.jsonl"]
