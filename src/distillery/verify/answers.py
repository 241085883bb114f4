"""Final-answer extraction from free-text math solutions.

The product here is finding *which* span of a solution is its final answer; comparing it as
mathematics is :func:`distillery.verify.math_answer.answers_equal` (math-verify on sympy).

Explicit markers, the one stated **last** in the text wins (a solution that boxes 3, then
corrects itself and boxes 5, answers 5):

- ``#### 42`` (GSM8K, Cobbe et al., 2021);
- ``\\boxed{...}`` / ``\\fbox{...}`` with nested braces (MATH, Hendrycks et al., 2021);
- answer phrases: "the answer is X", "The answer is: X" (MetaMath, Yu et al., 2023),
  "Final Answer: The final answer is X. I hope it is correct." (Minerva, Lewkowycz et al.,
  2022), "Answer: X", Markdown (``**Answer:** $X$``, ``**Final Answer**`` / ``### Final
  Answer`` headers), "X is the answer"; what follows the phrase may be inline math
  (``$...$``, ``\\(...\\)``, several joined by "and"/commas), a display block on the next
  lines (``\\[...\\]``, ``$$...$$``), a ``\\boxed{}``, or plain text up to the end of the
  sentence (so ``3\\sqrt{5}``, ``(3, \\frac{\\pi}{2})`` and ``-2 \\text{ and } 1`` are read
  whole, not as their first number).

Without a marker (free-form worked solutions such as GSM8K's), the last sentence that holds
a number is read (rules measured on GSM8K train's 7,473 reference solutions, checked on its
1,319 test solutions):

- ``... or 20 = A`` gives 20;
- after the last equation, a restatement wins (``6/3=.5 hour which is 30 minutes`` gives 30,
  ``= 15.36 minutes, which rounds down to 15`` gives 15, ``= 0.60 or 60%`` gives 60);
- in "Q because R", R's equation gives the result (``He needs 4 bags because 48 / 12 = 4``;
  a percent in Q that is 100 times it wins: ``80% ... because 12/15=.8``); without an
  equation in R, Q states it (``He spends $50 ... because 50 < 52``);
- a concluding sentence without an equation (``There are 33 ounces of cereal in those 3
  boxes.``): the number in the unit the question asks for ("how many weeks"), else the one
  that restates the latest computed result, else the first; clock times, number-word
  compounds (``6-foot``) and arithmetic operands are no candidates; a leading "Since ...,"
  clause is skipped;
- else the last equation's result, else the last number.
"""

from __future__ import annotations

import re
from fractions import Fraction

_GSM8K = re.compile(r"####\s*([^\n]+)")
# Number in free text: thousands separated by commas or (GSM8K) single spaces, a decimal part.
_NUM = r"-?\$?(?:\d{1,3}(?:,\d{3})+|\d{1,3}(?: \d{3})+(?![\d-])|\d+)(?:\.\d+)?(?:/\d+)?|-?\$?\.\d+"
_NUMBER = re.compile(_NUM)
_CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K calculator annotations: <<48/2=24>>
_EQUALS_NUMBER = re.compile(r"=\s*\$?\s*(" + _NUM + r")")
_PLAIN_NUMBER = re.compile(
    r"^[-+]?\\?\$?\s*(\d{1,3}(?:,\d{3})+|\d{1,3}(?: \d{3})+|\d+(?:\.\d*)?|\.\d+)(?:/(\d+))?\s*(?:\\?%)?$"
)

_FILLER = r"(?:\s+(?:therefore|thus|then|simply|just|indeed|clearly|hence))?"
_PHRASE = re.compile(
    r"(?:"
    # Minerva: "Final Answer: The final answer is X. I hope it is correct."
    r"final\s+answer\s*(?:\*\*)?\s*[:=]\s*(?:\*\*)?\s*(?:the\s+final\s+answer\s+is" + _FILLER + r"\s*:?)?"
    # "the answer is X", "The final answer is X", "The answer is: X" (MetaMath)
    r"|(?:(?:final|correct|required)\s+)?answer\s+(?:is|should\s+be|would\s+be|will\s+be)"
    + _FILLER
    + r"\s*:?"
    # "Answer: X", "**Answer:** X", "**Answer**: X" as a label (a line's or sentence's start),
    # not "we may check our answer: ..."
    r"|(?:(?<![^\n])|(?<=[.!?] ))[ \t]*(?:\*\*|\#{1,6}[ \t]*)?(?:final\s+)?answer\s*(?:\*\*)?\s*[:=]\s*(?:\*\*)?"
    # Markdown header on its own line: "### Final Answer", "**Final Answer**"
    r"|(?<![^\n])[ \t]*(?:\#{1,6}[ \t]*|\*\*)(?:the\s+)?final\s+answer[ \t]*:?[ \t]*(?:\*\*)?[ \t]*:?(?=[ \t]*\n)"
    r")",
    re.IGNORECASE,
)
_IS_THE_ANSWER = re.compile(
    r"(\$[^$\n]+\$|" + _NUM + r")\s+is\s+(?:the|our|my)\s+(?:final\s+|correct\s+)?answer\b", re.IGNORECASE
)
# A phrase followed by one of these words is talk about the answer, not the answer.
_NOT_AN_ANSWER = frozenset(
    "a an the this that these to correct incorrect right wrong not no yes consistent reasonable clear "
    "indeed because as in of found given shown below above obtained valid unique positive negative".split()
)
_SENTENCE_END = re.compile(r"\.(?=\s|$)|(?=I\s+hope\s+it\s+is\s+correct)", re.IGNORECASE)
_CONNECTOR = re.compile(r"^\s*(?:,|,?\s*and|,?\s*or|,?\s*\\text\{\s*(?:and|or)\s*\})\s*$", re.IGNORECASE)


def _boxed_spans(text: str) -> list[tuple[int, str]]:
    """``(start, content)`` of every ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces."""
    spans = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth = 0
        for j in range(m.end() - 1, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    spans.append((m.start(), text[m.end() : j].strip()))
                    break
    return spans


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces, or ``None``.

    Nested braces are kept whole: ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``.
    """
    spans = _boxed_spans(text)
    if spans:
        return spans[-1][1]
    return None


def _clean(span: str) -> str:
    span = span.strip()
    span = re.sub(r"^\*+|\*+$", "", span).strip()  # Markdown bold around the answer
    span = re.sub(r"^\$+|\$+$", "", span).strip()  # inline math delimiters
    span = span.rstrip(" .;,:")
    if re.fullmatch(r"-?\$?\d{1,3}(?: \d{3})+(?:\.\d+)?", span):  # GSM8K's "100 000"
        span = span.replace(" ", "")
    return span


def _math_block(rest: str) -> tuple[str, int] | None:
    """The math at the start of ``rest`` (``$$..$$``, ``\\[..\\]``, ``\\(..\\)``, ``$..$``) and where it ends."""
    for left, right in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")):
        if rest.startswith(left):
            end = rest.find(right, len(left))
            while left == "$" and end > 0 and rest[end - 1] == "\\":  # "$\\$18.90$": an escaped dollar
                end = rest.find(right, end + 1)
            if end < 0 or (left == "$" and "\n" in rest[1:end]):
                return None
            content = rest[len(left) : end].strip()
            if left == "$" and "\\" not in content and re.match(r"\d[\d,.]*\s+\S*[A-Za-z]{3,}", content):
                return None  # "$5. Then she pays $3": dollar signs, not math
            return content, end + len(right)
    return None


def _after_phrase(rest: str) -> str | None:
    """The answer stated right after an answer phrase, or ``None`` when none is there."""
    lead = re.match(r"[\s*:]*", rest)
    rest = rest[lead.end() if lead else 0 :]
    if not rest:
        return None
    if rest.startswith(("\\boxed", "\\fbox")):
        spans = _boxed_spans(rest)
        return spans[0][1] if spans else None
    block = _math_block(rest)
    if block is not None:
        content, end = block
        parts = [content]
        tail = rest[end:]
        while True:  # "$-2$ and $1$", "$x=1$, $x=2$"
            m = re.match(r"(\s*(?:,|,?\s*and|,?\s*or)\s*)(?=\$|\\\()", tail)
            nxt = _math_block(tail[m.end() :]) if m else None
            if nxt is None:
                break
            parts.append(nxt[0])
            tail = tail[m.end() + nxt[1] :]
        inner = last_boxed(content)
        if inner is not None and len(parts) == 1:
            return inner
        return ", ".join(parts)
    line = rest.split("\n", 1)[0]
    end = _SENTENCE_END.search(line)
    span = line[: end.start()] if end else line
    maths = list(re.finditer(r"(?<!\\)\$((?:[^$\\]|\\.)+)\$", span))
    if maths and span[: maths[0].start()].strip():  # "Evelyn has $5$ more": the math of it
        outside = [span[a.end() : b.start()] for a, b in zip(maths, maths[1:], strict=False)]
        if all(_CONNECTOR.match(o) for o in outside) and not span[maths[-1].end() :].strip():
            return ", ".join(m.group(1).strip() for m in maths)
        return maths[-1].group(1).strip()
    span = _clean(span)
    if not span:
        return None
    first = re.match(r"[A-Za-z]+", span)
    if first and first.group() in _NOT_AN_ANSWER:  # lower case only: "A" is a choice, "a" an article
        return None
    if not re.search(r"[\d\\$]", span) and len(span.split()) > 3:
        return None  # a sentence of words is talk, not an answer
    left = span.rsplit("=", 1)[0]
    if "\\" not in span and "$" not in span and not re.search(r"\d[A-Za-z]\b|\b[A-Za-z]\b", left):
        results = _EQUALS_NUMBER.findall(span)  # plain "15 gallons * 8 pints / gallon = 120 pints"
        if results:
            return _clean(results[-1])
    return span


def _sentences(line: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z$\d])", line) if s.strip()]


def _candidates(clause: str) -> list[str]:
    """Numbers in ``clause`` that can be an answer: not clock times, not ``6-foot`` compounds,
    not the operands of an arithmetic expression (``4*2``)."""
    out = []
    for m in _NUMBER.finditer(clause):
        before, after = clause[: m.start()], clause[m.end() :]
        if re.match(r":\d", after) or re.search(r"\d:$", before):
            continue
        if re.match(r"-[A-Za-z]", after):
            continue
        if re.match(r"\s*[-+*/x×÷]\s*\$?[\d.]", after) or re.search(r"[\d.]\s*[-+*/x×÷]\s*$", before):
            continue
        out.append(m.group())
    return out


def _same_number(a: str, b: str) -> bool:
    x, y = plain_number(_clean(a)), plain_number(_clean(b))
    return x is not None and x == y


def _asked_unit(question: str | None) -> str | None:
    """The unit a question asks its answer in: ``"How many weeks ..."`` -> ``"week"``."""
    if not question:
        return None
    if re.search(r"\bwhat\s+percent(?:age)?\b", question, re.IGNORECASE):
        return "%"
    asked = re.findall(r"\bhow\s+many\s+([A-Za-z]+)", question, re.IGNORECASE)
    if not asked:
        return None
    word = asked[-1].lower()
    return word[:-1] if word.endswith("s") and len(word) > 3 else word


def _followed_by(clause: str, number: str, unit: str) -> bool:
    pattern = r"(?<![\d.,])" + re.escape(number) + r"(?![\d,]|\.\d)\s*" + re.escape(unit)
    return re.search(pattern, clause, re.IGNORECASE) is not None


def _pick(candidates: list[str], computed: list[str], clause: str = "", unit: str | None = None) -> str:
    """The candidate in the unit the question asks for, else the one that restates the latest
    computed result, else the first candidate."""
    stated = _in_unit(clause, candidates, unit)
    if stated is not None:
        return stated
    for result in reversed(computed):
        for c in candidates:
            if _same_number(c, result):
                return c
    return candidates[0]


_WORD_NUMBERS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}


def _in_unit(clause: str, candidates: list[str], unit: str | None) -> str | None:
    """The one value among ``candidates`` stated in ``unit`` in ``clause``, else ``None``."""
    if not unit:
        return None
    hits = [c for c in candidates if _followed_by(clause, c, unit)]
    if hits and len({plain_number(_clean(c)) for c in hits}) == 1:
        return hits[0]
    return None


def _free_form(scope: str, context: str, unit: str | None = None) -> tuple[str, str] | None:
    """The answer of a free-form solution's last numbered sentence in ``scope``, and its rule.

    ``context`` is the whole solution: the results of its equations (``= 24``, ``<<48/2=24>>``)
    are the values a concluding sentence is expected to restate; ``unit`` is the unit the
    question asks for (``"week"``), preferred among a sentence's numbers.
    """
    computed = _EQUALS_NUMBER.findall(context)
    lines = [line for line in scope.strip().split("\n") if line.strip()]
    for line in reversed(lines):
        for sentence in reversed(_sentences(line)):
            plain = _CALCULATOR.sub("", sentence)
            if not _NUMBER.search(plain):
                if unit and unit != "%":  # "so it took three days"
                    m = re.search(
                        r"\b(" + "|".join(_WORD_NUMBERS) + r")\s+" + re.escape(unit), plain, re.IGNORECASE
                    )
                    if m:
                        return str(_WORD_NUMBERS[m.group(1).lower()]), "last_number"
                continue
            m = re.search(r"(" + _NUM + r")\s*=\s*[A-Za-z]\b[\s.]*$", plain)  # "or 20 = A."
            if m:
                return _clean(m.group(1)), "last_equation"
            parts = re.split(r"\bbecause\b", plain, maxsplit=1)
            main, reason = parts if len(parts) == 2 else (plain, "")
            main = re.sub(
                r"^\s*(?:(?:but|and|so|then)\s+)?(?:since|as|if|because|when|after)\b[^,]*,",
                "",
                main,
                flags=re.IGNORECASE,
            )
            if reason and "=" not in main:
                results = _EQUALS_NUMBER.findall(reason)
                if results:  # "80% of the girls ... because 12/15=.8": the percent restates it
                    value = plain_number(_clean(results[-1]))
                    for pct in re.findall(r"(" + _NUM + r")\s*(?:%|percent)", main):
                        if value is not None and plain_number(_clean(pct)) == 100 * value:
                            return _clean(pct), "last_equation"
                    return _clean(results[-1]), "last_equation"
                numbers = _candidates(main)  # "He spends $50 ... because 50 < 52"
                if numbers:
                    return _clean(_pick(numbers, computed, main, unit)), "last_number"
                numbers = _candidates(reason)  # "... is Tiffany because 2 > 1.5"
                if numbers:
                    return _clean(numbers[0]), "last_number"
                continue
            results = list(_EQUALS_NUMBER.finditer(plain)) or list(_EQUALS_NUMBER.finditer(sentence))
            if results:
                last = results[-1]
                tail = _CALCULATOR.sub("", (plain if last.string is plain else sentence)[last.end() :])
                again = re.search(
                    r"(?:\b(?:which|that|this)\s+(?:is|equals|means)\s+(?:about\s+|approximately\s+)?"
                    r"|\brounds?(?:\s+(?:up|down))?\s+to\s+(?:about\s+)?|\bor\s+|\bmeaning\b[^.=]*?)("
                    + _NUM
                    + r")",
                    tail,
                )
                if again:
                    return _clean(again.group(1)), "last_equation"
                before_next = re.split(r"\d", tail, maxsplit=1)[0]
                if (
                    unit
                    and re.match(r"\s*[A-Za-z]", tail)
                    and not re.search(re.escape(unit), before_next, re.IGNORECASE)
                ):
                    stated = _in_unit(
                        tail, _candidates(tail), unit
                    )  # "= 16 amoebae after 8 days", asked in days
                    if stated is not None:
                        return _clean(stated), "last_equation"
                return _clean(last.group(1)), "last_equation"
            numbers = _candidates(main)
            if numbers:
                return _clean(_pick(numbers, computed, main, unit)), "last_number"
    return None


def _dollars_as_cents(answer: str, line: str) -> str:
    """``answer`` in cents when ``line`` states it as a dollar amount (``$0.25`` -> ``"25"``)."""
    value = plain_number(answer)
    number = re.escape(answer.lstrip("$"))
    if value is None or not re.search(r"\$\s*(?:<<[^<>]*>>)?" + number + r"(?![\d])", line):
        return answer
    cents = value * 100
    return str(cents.numerator) if cents.denominator == 1 else str(float(cents))


def extract_answer(text: str, question: str | None = None) -> tuple[str | None, str]:
    """The final answer stated in ``text`` and the rule that found it.

    Args:
        text: a solution (Markdown/LaTeX free text).
        question: the question it answers, when known. Used only for free-form solutions:
            the unit it asks for ("how many weeks") picks among a concluding sentence's
            numbers, and a dollar amount answers a question asked in cents as cents
            (``$0.25`` -> ``25``).

    Returns:
        ``(answer, method)``: ``method`` is ``"gsm8k"``, ``"boxed"``, ``"answer_is"``,
        ``"last_equation"``, ``"last_number"`` or ``"none"`` (then ``answer`` is ``None``).
        Among explicit markers (``####``, ``\\boxed``, answer phrases) the last in the text
        wins; the answer is a LaTeX/plain span, not yet normalised.
    """
    if not text:
        return None, "none"
    found: list[tuple[int, str, str]] = []
    for m in _GSM8K.finditer(text):
        found.append((m.start(), _clean(m.group(1)), "gsm8k"))
    for start, content in _boxed_spans(text):
        found.append((start, content, "boxed"))
    for m in _PHRASE.finditer(text):
        span = _after_phrase(text[m.end() :])
        if span:
            found.append((m.start(), span, "answer_is"))
    for m in _IS_THE_ANSWER.finditer(text):
        span = _clean(m.group(1))
        if span:
            found.append((m.start(), span, "answer_is"))
    if found:
        _, answer, method = max(found, key=lambda f: f[0])
        return answer, method
    lines = [line for line in text.strip().split("\n") if line.strip()]
    unit = _asked_unit(question)
    for scope in (lines[-1] if lines else "", text):
        hit = _free_form(scope, text, unit)
        if hit:
            answer, method = hit
            if question and re.search(r"\bhow\s+many\s+cents\b|\bin\s+cents\b", question, re.IGNORECASE):
                answer = _dollars_as_cents(answer, lines[-1] if lines else "")
            return answer, method
    results = _EQUALS_NUMBER.findall(text)  # no sentence states a candidate: the last result
    if results:
        return _clean(results[-1]), "last_equation"
    numbers = _NUMBER.findall(_CALCULATOR.sub("", text))
    if numbers:
        return _clean(numbers[-1]), "last_number"
    return None, "none"


def plain_number(text: str) -> Fraction | None:
    """``text`` as an exact number when it is a plain decimal or fraction, else ``None``.

    Accepts ``"1,234"``, ``"100 000"``, ``"$5"``, ``"\\$5"``, ``"-3.50"``, ``"7/3"``, ``"12%"`` and
    ``"12\\%"`` (both read as 12).
    """
    t = text.strip()
    m = _PLAIN_NUMBER.match(t)
    if not m:
        return None
    sign = -1 if t.startswith("-") else 1
    value = Fraction(m.group(1).replace(",", "").replace(" ", ""))
    if m.group(2):
        denominator = int(m.group(2))
        if denominator == 0:
            return None
        value /= denominator
    return sign * value


_CHOICE = re.compile(
    r"^\s*(?:\\(?:text|textbf|mathrm|mathbf)\s*\{\s*)?(?:option\s+|choice\s+)?"
    r"\(?([A-H])\)?(?:\s*\})?(?:[.):]|\s|$)",
    re.IGNORECASE,
)


def choice_letter(span: str) -> str | None:
    """The multiple-choice letter (``A``-``H``, upper case) a span states, or ``None``.

    Reads ``C``, ``(C)``, ``\\text{(C)}``, ``\\textbf{(C) } 12``, ``C. 12``, ``C) 12``,
    ``Option C``. A lone lower-case letter (a variable) is no choice; the letter must stand
    alone (``Cx`` is no choice).
    """
    m = _CHOICE.match(span)
    if not m:
        return None
    letter = m.group(1)
    if letter.islower() and not re.match(
        r"^\s*(?:\\\w+\s*\{\s*)?(?:option|choice)?\s*\(", span, re.IGNORECASE
    ):
        return None
    return letter.upper()


_UNIT_WORDS_KEEP = frozenset("pi and or i e sqrt frac infty mod cdot times".split())


def strip_unit_words(span: str) -> str:
    """``span`` without the plain unit words that end it (``"18.90 dollars"`` -> ``"18.90"``,
    ``"12 square meters"`` -> ``"12"``, ``"3\\sqrt{5} units"`` -> ``"3\\sqrt{5}"``); other spans as they are.

    Only runs of plain words of two or more letters after a number or closing brace go;
    ``pi``, ``and``/``or`` and words followed by more math stay.
    """
    m = re.search(r"(?<=[\d}])((?:\s+[A-Za-z]{2,}\.?(?:\^\d)?)+)\s*$", span)
    if not m:
        return span
    words = re.findall(r"[A-Za-z]+", m.group(1))
    if any(w.lower() in _UNIT_WORDS_KEEP for w in words):
        return span
    return span[: m.start()].rstrip()
