"""``verify: math_answer``: compare a candidate's final answer with the seed's reference.

The answer is extracted (:func:`distillery.verify.answers.extract_answer`); plain numbers
are compared exactly as fractions; anything else (LaTeX expressions, sets, intervals) is
compared symbolically with math-verify (Hugging Face, 2025) on sympy.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import BuildContext, Check, Stage
from distillery.registry import register
from distillery.verify.answers import extract_answer, plain_number


def answers_equal(reference: str, predicted: str, timeout_s: int = 5) -> bool:
    """Whether two extracted answers are mathematically equal.

    Plain numbers compare exactly (``"1,000" == "1000.0"``); otherwise math-verify parses
    both as LaTeX/expressions and checks equivalence. Timeouts (signal-based) apply only in the
    main thread; elsewhere they are off.
    """
    a, b = plain_number(reference), plain_number(predicted)
    if a is not None and b is not None:
        return a == b
    from math_verify import parse, verify

    main = threading.current_thread() is threading.main_thread()
    t = timeout_s if main else None
    gold = parse(f"${reference}$", parsing_timeout=t)
    pred = parse(f"${predicted}$", parsing_timeout=t)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=t))


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
    """Passes a record when its response's final answer equals the seed's reference."""

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
        predicted, method = extract_answer(record.get("response") or "")
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
