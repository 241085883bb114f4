"""``verify: math_answer``: compare a candidate's final answer with the seed's reference.

The answer is extracted (:func:`distillery.verify.answers.extract_answer`: which span is the
final answer, in the forms models and training formats write it, with the record's prompt as
the question); :func:`answers_equal` then compares it as mathematics: plain numbers exactly as
fractions, a multiple-choice letter by its letter, anything else (LaTeX expressions, sets
and lists in any order, tuples, intervals or the inequalities that describe them) with
math-verify (Hugging Face, 2025) on sympy. Agreement on constructed MATH-500 answer forms:
``python benchmarks/answer_forms.py``.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Literal

from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import BuildContext, Check, Stage
from distillery.records import prompt_text
from distillery.registry import register
from distillery.verify.answers import choice_letter, extract_answer, plain_number, strip_unit_words


def _as_set(value: Any) -> Any:
    """An inequality, or a disjunction of them, in one variable as the set it describes.

    math-verify compares an interval with one inequality (``(2, \\infty)`` with ``x > 2``,
    ``allow_set_relation_comp``); "x < 2 or x > 3" parses to a set of two inequalities,
    which this turns into ``Union((-oo, 2), (3, oo))``. Anything else is returned as it is.
    """
    import sympy

    def one(rel: Any) -> Any:
        if isinstance(rel, sympy.Eq | sympy.Ne) or not isinstance(rel, sympy.Rel | sympy.And | sympy.Or):
            return None
        symbols = rel.free_symbols
        if len(symbols) != 1:
            return None
        return rel.as_set()

    try:
        if isinstance(value, sympy.FiniteSet) and len(value) > 1:
            parts = [one(v) for v in value.args]
            if (
                all(p is not None for p in parts)
                and len({frozenset(v.free_symbols) for v in value.args}) == 1
            ):
                return sympy.Union(*parts)
        elif isinstance(value, sympy.And | sympy.Or):
            part = one(value)
            if part is not None:
                return part
    except Exception:  # as_set is not defined for every relation (non-real, periodic ...)
        return value
    return value


def _prepare(answer: str) -> str:
    """An extracted answer made ready for parsing: Markdown and unit words off, ``\\%`` as ``%``."""
    answer = answer.strip().strip("*").strip()
    answer = (
        re.sub(r"^\$+|\$+$", "", answer).strip() if answer.count("$") >= 2 or answer.endswith("$") else answer
    )
    answer = answer.replace("°", "^\\circ")
    answer = strip_unit_words(answer)
    return answer


def answers_equal(reference: str, predicted: str, timeout_s: int = 5) -> bool:
    """Whether two extracted answers are mathematically equal.

    Args:
        reference: the gold answer (LaTeX or plain), e.g. ``"\\left( 3, \\frac{\\pi}{2} \\right)"``.
        predicted: the answer extracted from a response.
        timeout_s: math-verify's parse and verify timeout in seconds (signal-based, so it
            applies only in the main thread; elsewhere it is off).

    Returns:
        ``True`` when equal. Plain numbers compare exactly as fractions (``"1,000" ==
        "1000.0"``, ``"100 000" == "100000"``); a multiple-choice reference (``\\text{(C)}``)
        equals a response naming the same letter, with or without its option text
        (``"(C) 12"``); unit words after a number are ignored (``"18.90 dollars"``);
        everything else goes to math-verify (Hugging Face, 2025) on sympy: LaTeX
        (``\\dfrac``/``\\tfrac``, ``2{,}220``, ``\\text{}`` units, degrees, ``x = 3`` for
        ``3``), sets and lists in any order, tuples, matrices, and intervals against
        inequalities (``(-\\infty, 2) \\cup (3, \\infty)`` vs ``x < 2 \\text{ or } x > 3``).

    Raises:
        Whatever math-verify raises on pathological input (callers treat it as not equal).
    """
    reference, predicted = _prepare(reference), _prepare(predicted)
    a, b = plain_number(reference), plain_number(predicted)
    if a is not None and b is not None:
        return a == b
    letter = choice_letter(reference)
    if letter is not None and re.fullmatch(r"\s*(?:\\\w+\s*\{)?\s*\(?[A-Ha-h]\)?\s*\}?\s*", reference):
        said = choice_letter(predicted)
        if said is not None:
            return said == letter
    from math_verify import parse, verify

    main = threading.current_thread() is threading.main_thread()
    t = timeout_s if main else None
    gold = parse(f"${reference}$", parsing_timeout=t)
    pred = parse(f"${predicted}$", parsing_timeout=t)
    if not gold or not pred:
        return False
    gold = [_as_set(g) for g in gold]
    pred = [_as_set(p) for p in pred]
    return bool(verify(gold, pred, timeout_seconds=t, allow_set_relation_comp=True))


@register("verifier")
class MathAnswerConfig(StageConfig):
    """Recipe entry of the math-answer verifier.

    Attributes:
        reference: the seed field holding the reference (a bare answer, a GSM8K solution
            ending in ``#### n``, or a solution with ``\\boxed{}``).
        timeout_s: math-verify's parse/verify timeout, seconds.
    """

    type: Literal["math_answer"] = "math_answer"
    reference: str = "answer"
    timeout_s: int = 5

    @property
    def inputs(self) -> tuple[str, ...]:
        """The seed's ``reference`` field."""
        return (f"seed.{self.reference}",)

    def build(self, ctx: BuildContext) -> Stage:
        return MathAnswerVerifier(self)


class MathAnswerVerifier(Stage):
    """Passes a record when its response's final answer equals the seed's reference.

    The reference is the seed field's ``#### n`` or last ``\\boxed{}``, else the whole field.
    Rejections: ``no_answer``, ``wrong_answer: <predicted> != <reference>``, ``verify_error``
    (math-verify raised), ``bad_reference`` (the field is missing); ``detail`` keeps the
    reference, the predicted answer and the extraction rule.
    """

    kind = "verify"
    cost = 10.0

    def __init__(self, config: MathAnswerConfig) -> None:
        super().__init__(config.stage_name)
        self.config = config

    def check(self, record: dict[str, Any]) -> Check:
        raw_ref = record["seed"].get(self.config.reference)
        if raw_ref is None:
            return Check(False, f"bad_reference: seed field {self.config.reference!r} is missing")
        reference, ref_method = extract_answer(str(raw_ref))
        if ref_method in ("last_number", "last_equation", "answer_is") or reference is None:
            reference = str(raw_ref).strip()
        predicted, method = extract_answer(record.get("response") or "", prompt_text(record) or None)
        detail = {"reference": reference, "predicted": predicted, "extraction": method}
        if predicted is None:
            return Check(False, "no_answer: no final answer found in the response", detail)
        try:
            ok = answers_equal(reference, predicted, self.config.timeout_s)
        except Exception as e:  # math-verify can raise on pathological inputs
            return Check(False, f"verify_error: {type(e).__name__}: {str(e)[:100]}", detail)
        if not ok:
            return Check(False, f"wrong_answer: {predicted[:40]} != {reference[:40]}", detail)
        return Check(True, None, detail)
