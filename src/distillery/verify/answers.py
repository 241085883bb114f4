"""Final-answer extraction from free-text math solutions.

Recognised forms, most explicit first (the conventions of GSM8K, MATH and chain-of-thought
prompting): ``#### 42`` (GSM8K, Cobbe et al., 2021), ``\\boxed{...}`` (MATH, Hendrycks et al.,
2021), "the answer is 42" / "Answer: 42"; for free-form worked solutions without such a
marker, the last line's final equation result (``... = 42``) or else its last number, then
the same over the whole text.
"""

from __future__ import annotations

import re
from fractions import Fraction

_GSM8K = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is|final\s+answer\s*[:=]|answer\s*[:=])\s*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K calculator annotations: <<48/2=24>>
_EQUALS_NUMBER = re.compile(r"=\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+)")
_PLAIN_NUMBER = re.compile(r"^[-+]?\$?\s*(\d[\d,]*(?:\.\d+)?|\.\d+)(?:/(\d+))?\s*%?$")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces, or ``None``."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def _clean(span: str) -> str:
    span = span.strip()
    span = re.sub(r"^\$+|\$+$", "", span).strip()  # inline math delimiters
    span = span.rstrip(" .;")
    return span


def extract_answer(text: str) -> tuple[str | None, str]:
    """The final answer stated in ``text`` and the rule that found it.

    Returns:
        ``(answer, method)``: ``method`` is ``"gsm8k"``, ``"boxed"``, ``"answer_is"``,
        ``"last_equation"``, ``"last_number"`` or ``"none"`` (then ``answer`` is ``None``).
    """
    if not text:
        return None, "none"
    matches = _GSM8K.findall(text)
    if matches:
        return _clean(matches[-1]), "gsm8k"
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed, "boxed"
    said = _ANSWER_IS.findall(text)
    if said:
        phrase = said[-1].strip()
        inner = last_boxed(phrase)
        if inner is not None:
            return inner, "answer_is"
        number = _NUMBER.search(phrase)
        if number and number.start() <= 2:
            return _clean(number.group()), "answer_is"
        return _clean(phrase.split("\n")[0]), "answer_is"
    lines = [line for line in text.strip().split("\n") if line.strip()]
    last_line = lines[-1] if lines else ""
    for scope in (last_line, text):
        results = _EQUALS_NUMBER.findall(scope)  # also reads GSM8K's <<48/2=24>> annotations
        if results:
            return _clean(results[-1]), "last_equation"
        numbers = _NUMBER.findall(_CALCULATOR.sub("", scope))
        if numbers:
            return _clean(numbers[-1]), "last_number"
    return None, "none"


def plain_number(text: str) -> Fraction | None:
    """``text`` as an exact number when it is a plain decimal or fraction, else ``None``.

    Accepts ``"1,234"``, ``"$5"``, ``"-3.50"``, ``"7/3"``, ``"12%"`` (read as 12).
    """
    m = _PLAIN_NUMBER.match(text.strip())
    if not m:
        return None
    sign = -1 if text.strip().startswith("-") else 1
    value = Fraction(m.group(1).replace(",", ""))
    if m.group(2):
        denominator = int(m.group(2))
        if denominator == 0:
            return None
        value /= denominator
    return sign * value
