"""``arith``: distillery's built-in procedural task of grade-school arithmetic word problems.

Problems are composed from templates (an opening frame, 1 to 5 step sentences each needing
one arithmetic operation, a question) filled from word lists and random numbers, after
the method of TinyGSM (Liu et al., 2023): every problem carries an exact answer (``int``
or ``fractions.Fraction``) and a gold solution written as a short Python program
``solution()`` that returns it, checkable by execution.

    >>> from distillery.builtin.arith import generate, test_set
    >>> p = next(generate(1, seed=7, difficulties=[2]))
    >>> p.difficulty
    2
    >>> len(test_set())
    1000
"""

from distillery.builtin.arith.compose import TEMPLATE_COUNT, TEMPLATES
from distillery.builtin.arith.core import (
    DIFFICULTIES,
    NGRAM,
    SPLITS,
    TEST_SIZE,
    ArithProblem,
    GenerationStats,
    count_operations,
    format_answer,
    generate,
    overlaps_test,
    parse_answer,
    test_set,
    write_jsonl,
)

__all__ = [
    "DIFFICULTIES",
    "NGRAM",
    "SPLITS",
    "TEMPLATES",
    "TEMPLATE_COUNT",
    "TEST_SIZE",
    "ArithProblem",
    "GenerationStats",
    "count_operations",
    "format_answer",
    "generate",
    "overlaps_test",
    "parse_answer",
    "test_set",
    "write_jsonl",
]
