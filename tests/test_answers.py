from __future__ import annotations

from fractions import Fraction

import pytest

from distillery.verify.answers import extract_answer, last_boxed, plain_number
from distillery.verify.math_answer import answers_equal


@pytest.mark.parametrize(
    "text, answer, method",
    [
        ("48/2 = 24\n#### 72", "72", "gsm8k"),
        ("#### 1,000", "1,000", "gsm8k"),
        ("so \\boxed{\\frac{1}{2}} is it", "\\frac{1}{2}", "boxed"),
        ("nested \\boxed{\\sqrt{\\frac{a}{b}}}", "\\sqrt{\\frac{a}{b}}", "boxed"),
        ("Thus, the answer is 42.", "42", "answer_is"),
        ("The final answer is $3.50.", "3.50", "answer_is"),
        ("Answer: -7", "-7", "answer_is"),
        ("She has 3 apples.\nShe buys 4 so 3 + 4 = <<3+4=7>>7 apples.", "7", "last_equation"),
        ("Joy reads 120/24 = 5 hours to read 120 pages.", "5", "last_equation"),
        ("it costs 12 dollars", "12", "last_number"),
        ("no numbers here", None, "none"),
        ("", None, "none"),
    ],
)
def test_extract_answer(text, answer, method):
    assert extract_answer(text) == (answer, method)


def test_last_boxed_unbalanced():
    assert last_boxed("\\boxed{1") is None


@pytest.mark.parametrize(
    "text, value", [("1,234", Fraction(1234)), ("$5", Fraction(5)), ("-3.50", Fraction(-7, 2)), ("7/3", Fraction(7, 3)),
                    ("12%", Fraction(12)), (".5", Fraction(1, 2)), ("x+1", None), ("1/0", None)]
)
def test_plain_number(text, value):
    assert plain_number(text) == value


@pytest.mark.parametrize(
    "ref, pred, equal",
    [("72", "72.0", True), ("1000", "1,000", True), ("\\frac{1}{2}", "0.5", True), ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", True),
     ("x^2+1", "1+x^2", True), ("(3, \\frac{\\pi}{2})", "(3,\\frac{\\pi}{2})", True), ("5", "6", False), ("\\frac{1}{3}", "0.3", False)],
)
def test_answers_equal(ref, pred, equal):
    assert answers_equal(ref, pred) is equal
