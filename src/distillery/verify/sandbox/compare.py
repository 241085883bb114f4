"""Comparison of a program's returned value with a reference answer."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any


def _is_number(x: Any) -> bool:
    return type(x) in (int, float, Fraction)


def _numbers_match(
    a: int | float | Fraction, b: int | float | Fraction, rel_tol: float, abs_tol: float
) -> bool:
    if type(a) is not float and type(b) is not float:
        return Fraction(a) == Fraction(b)  # exact: 4 == Fraction(4, 1), 1/3 != 0.333...
    if (type(a) is float and math.isnan(a)) or (type(b) is float and math.isnan(b)):
        return False
    if (type(a) is float and math.isinf(a)) or (type(b) is float and math.isinf(b)):
        return a == b
    fa, fb = Fraction(a), Fraction(b)  # exact arithmetic: no overflow for huge ints
    return abs(fa - fb) <= max(Fraction(rel_tol) * max(abs(fa), abs(fb)), Fraction(abs_tol))


def answers_match(value: Any, reference: Any, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Whether a returned ``value`` equals ``reference``.

    Rules: ``int`` and ``Fraction`` compare exactly with each other (``4 == Fraction(4, 1)``);
    when either side is a ``float`` the two agree within ``rel_tol`` (relative to the larger
    magnitude) or ``abs_tol`` (absolute), as :func:`math.isclose`, computed exactly so huge
    ints do not overflow; NaN matches nothing. ``bool`` is not a number (``True != 1``).
    Strings compare exactly; lists and tuples element-wise (a list may match a tuple);
    dicts by equal key sets and matching values; ``None`` only matches ``None``.

    Both arguments are expected to be plain data (as :class:`ExecutionResult.value` is);
    anything else only matches by type-checked equality of plain types and otherwise is False.
    """
    if type(value) is bool or type(reference) is bool:
        return type(value) is bool and type(reference) is bool and value == reference
    if _is_number(value) and _is_number(reference):
        return _numbers_match(value, reference, rel_tol, abs_tol)
    if value is None or reference is None:
        return value is None and reference is None
    if type(value) is str and type(reference) is str:
        return value == reference
    if type(value) in (list, tuple) and type(reference) in (list, tuple):
        return len(value) == len(reference) and all(
            answers_match(v, r, rel_tol, abs_tol) for v, r in zip(value, reference, strict=True)
        )
    if type(value) is dict and type(reference) is dict:
        if len(value) != len(reference) or set(value) != set(reference):
            return False
        return all(answers_match(value[k], reference[k], rel_tol, abs_tol) for k in reference)
    return False
