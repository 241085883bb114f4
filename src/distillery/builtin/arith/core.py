"""The public API of the ``arith`` task: problems, splits, the canonical test set, I/O.

Splits. ``test`` is canonical: :func:`test_set` is the same 1000 problems (200 per
difficulty) whatever seed a user passes. ``train`` and ``validation`` are generated from a
user seed and never overlap ``test``: a candidate whose question shares a word 13-gram
(:func:`distillery.text.words`, :func:`distillery.text.word_ngrams`, the definition the
decontamination stage uses) with any test question, or equals one, is rejected and
resampled. ``train`` and ``validation`` never share an exact question either, for any
seeds: each question is assigned to one of them by a hash of its words (1/16 of the
question space to validation), and a candidate of the other split is resampled.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import random
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from distillery.builtin.arith.compose import compose
from distillery.text import word_ngrams, words

TEST_SIZE = 1000
SPLITS = ("train", "validation", "test")
DIFFICULTIES = (1, 2, 3, 4, 5)
#: Word n-gram length of the train/test overlap rule (GPT-3's decontamination used 13).
NGRAM = 13
#: One in this many question hashes belongs to ``validation``; the rest to ``train``.
VALIDATION_BUCKETS = 16

_ANSWER = re.compile(r"-?[0-9]+(?:/[0-9]+)?")


@dataclass(frozen=True)
class ArithProblem:
    """One grade-school word problem with its exact answer and gold program.

    Attributes:
        id: ``arith-<split>-<seed>-<index>``; test problems ``arith-test-<index>``.
        question: the word problem (roughly 15-70 words).
        answer: the exact answer as text: ``"42"``, ``"-3"`` or ``"7/3"`` (``str(Fraction)``).
        program: gold Python program defining ``solution()`` that returns the answer
            (an ``int`` or ``fractions.Fraction``); one arithmetic operation per line.
        difficulty: 1..5, the number of arithmetic operations needed.
        template: ids of the frame, step and question templates, joined by ``+``.
        split: ``train``, ``validation`` or ``test``.
    """

    id: str
    question: str
    answer: str
    program: str
    difficulty: int
    template: str
    split: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return asdict(self)

    def answer_value(self) -> int | Fraction:
        """The answer as an exact number (``int``, or ``Fraction`` when not whole)."""
        return parse_answer(self.answer)


@dataclass
class GenerationStats:
    """Counts of one :func:`generate` call (pass an instance to have it filled).

    Attributes:
        produced: problems yielded.
        attempts: candidates composed (``produced`` + rejections).
        rejected_test_overlap: candidates sharing a 13-gram with (or equal to) a test question.
        rejected_other_split: candidates whose question belongs to the other of train/validation.
    """

    produced: int = 0
    attempts: int = 0
    rejected_test_overlap: int = 0
    rejected_other_split: int = 0


def parse_answer(text: str) -> int | Fraction:
    """Parse an answer string: ``"42"`` -> 42, ``"-3"`` -> -3, ``"7/3"`` -> ``Fraction(7, 3)``.

    Surrounding whitespace is ignored; a fraction whose value is whole becomes an ``int``.

    Raises:
        ValueError: ``text`` is not a string of that form, or has a zero denominator.
    """
    if not isinstance(text, str) or not _ANSWER.fullmatch(text.strip()):
        raise ValueError(f"not an integer or fraction answer: {text!r}")
    try:
        value = Fraction(text.strip())
    except ZeroDivisionError:
        raise ValueError(f"zero denominator in answer: {text!r}") from None
    return int(value) if value.denominator == 1 else value


def format_answer(value: int | Fraction) -> str:
    """The answer string of an exact value (inverse of :func:`parse_answer`)."""
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else str(value)


def count_operations(program: str) -> int:
    """Number of arithmetic operation lines of a gold program.

    An operation line is an assignment whose value is a binary operation (``a + b``,
    ``a // 2``) or a call (``Fraction(a, b)``); literal assignments and ``result = x`` are not.
    """
    tree = ast.parse(program)
    return sum(
        isinstance(node, ast.Assign) and isinstance(node.value, ast.BinOp | ast.Call) for node in ast.walk(tree)
    )


def _check(n: int, split: str, difficulties: Sequence[int]) -> tuple[int, ...]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    levels = tuple(difficulties)
    if not levels:
        raise ValueError("difficulties is empty")
    for d in levels:
        if isinstance(d, bool) or d not in DIFFICULTIES:
            raise ValueError(f"difficulty {d!r} not in {DIFFICULTIES}")
    return levels


def _key(question: str) -> str:
    return " ".join(words(question))


def _bucket(question: str) -> int:
    digest = hashlib.blake2b(_key(question).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % VALIDATION_BUCKETS


@functools.cache
def _test_problems() -> tuple[ArithProblem, ...]:
    problems: list[ArithProblem] = []
    seen: set[str] = set()
    for index in range(TEST_SIZE):
        difficulty = DIFFICULTIES[index % len(DIFFICULTIES)]
        attempt = 0
        while True:
            story = compose(random.Random(f"arith/test/{index}/{attempt}"), difficulty)
            key = _key(story.question)
            if key not in seen:
                break
            attempt += 1
        seen.add(key)
        problems.append(_problem(f"arith-test-{index}", story, "test"))
    return tuple(problems)


@functools.cache
def _test_index() -> tuple[frozenset[tuple[str, ...]], frozenset[str]]:
    grams: set[tuple[str, ...]] = set()
    keys: set[str] = set()
    for p in _test_problems():
        tokens = words(p.question)
        grams.update(word_ngrams(tokens, NGRAM))
        keys.add(" ".join(tokens))
    return frozenset(grams), frozenset(keys)


def overlaps_test(question: str) -> bool:
    """Whether ``question`` shares a word 13-gram with, or equals (as words), a test question."""
    grams, keys = _test_index()
    tokens = words(question)
    return " ".join(tokens) in keys or any(g in grams for g in word_ngrams(tokens, NGRAM))


def test_set() -> list[ArithProblem]:
    """The canonical held-out test set: :data:`TEST_SIZE` problems, 200 per difficulty.

    Difficulties cycle 1, 2, 3, 4, 5 by index; no two test questions are equal. The set
    depends only on the package version (fixed internal seeds), never on a user seed.
    Cached: the first call takes about a tenth of a second.
    """
    return list(_test_problems())


def _problem(pid: str, story: Any, split: str) -> ArithProblem:
    return ArithProblem(
        id=pid,
        question=story.question,
        answer=format_answer(story.value),
        program=story.program,
        difficulty=story.difficulty,
        template=story.template,
        split=split,
    )


def generate(
    n: int,
    *,
    split: str = "train",
    seed: int = 0,
    difficulties: Sequence[int] = DIFFICULTIES,
    stats: GenerationStats | None = None,
) -> Iterator[ArithProblem]:
    """Yield ``n`` problems of ``split``, deterministically from ``seed``.

    Difficulties are cycled in the order given (problem ``i`` has
    ``difficulties[i % len(difficulties)]``), so each level gets an equal share. Problem
    ``i`` depends only on ``(split, seed, i)``: a prefix of a longer run is the shorter run.
    ``train``/``validation`` candidates overlapping the test set (13-gram rule) or
    belonging to the other split are resampled; ``split="test"`` yields the first ``n``
    canonical test problems of the given difficulties (``seed`` is then ignored).

    Arguments are checked when ``generate`` is called, before iteration starts.

    Raises:
        ValueError: unknown split, a difficulty outside 1..5, empty difficulties, negative
            ``n``, a non-int seed, or (test) ``n`` larger than the test problems of those
            difficulties.
    """
    levels = _check(n, split, difficulties)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    stats = stats if stats is not None else GenerationStats()
    if split == "test":
        pool = [p for p in _test_problems() if p.difficulty in levels]
        if n > len(pool):
            raise ValueError(f"the test set has {len(pool)} problems of difficulties {levels}, asked for {n}")
        stats.produced += n
        stats.attempts += n
        return iter(pool[:n])
    return _generate(n, split, seed, levels, stats)


def _generate(n: int, split: str, seed: int, levels: tuple[int, ...], stats: GenerationStats) -> Iterator[ArithProblem]:
    want_validation = split == "validation"
    for index in range(n):
        difficulty = levels[index % len(levels)]
        attempt = 0
        while True:
            stats.attempts += 1
            story = compose(random.Random(f"arith/{split}/{seed}/{index}/{attempt}"), difficulty)
            attempt += 1
            if (_bucket(story.question) == 0) != want_validation:
                stats.rejected_other_split += 1
            elif overlaps_test(story.question):
                stats.rejected_test_overlap += 1
            else:
                break
        stats.produced += 1
        yield _problem(f"arith-{split}-{seed}-{index}", story, split)


def write_jsonl(path: str | os.PathLike[str], problems: Iterable[ArithProblem | Mapping[str, Any]]) -> int:
    """Write problems as JSON Lines to ``path`` atomically; returns the number written.

    Writes a temporary file in the same folder, fsyncs it and renames it over ``path``
    (``os.replace``), so readers never see a partial file. Parent folders are created.
    Accepts :class:`ArithProblem` objects or plain dicts.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for p in problems:
                row = p.to_dict() if isinstance(p, ArithProblem) else dict(p)
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count
