"""Reading an LLM judge's reply, and combining pairwise verdicts given in both orders.

Pure functions, no model: :func:`parse_score` (rubric mode), :func:`parse_verdict` and
:func:`combine_verdicts` (pairwise mode), :func:`pairwise_summary` (run-level position and
length bias). The pairwise protocol follows Zheng et al. (2023), "Judging LLM-as-a-Judge with
MT-Bench and Chatbot Arena": each pair is judged twice with the answers' positions swapped;
a candidate wins only when it wins in both orders, and an inconsistent pair is a tie, which
cancels position bias.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

OUTCOMES = ("win", "tie", "loss")
VERDICTS = ("A", "B", "tie")

_NUM = r"(-?\d+(?:\.\d+)?)"
_SCORE_PATTERNS = (
    re.compile(r"\[\[\s*" + _NUM + r"\s*(?:/\s*\d+)?\s*\]\]"),  # MT-Bench: Rating: [[7]]
    re.compile(
        r"(?:score|rating|grade)\s*(?:\(\s*\d+\s*-\s*\d+\s*\))?\s*(?:[:=]|is|of)\s*\**\s*" + _NUM, re.IGNORECASE
    ),
    re.compile(_NUM + r"\s*(?:/|out\s+of)\s*10\b", re.IGNORECASE),
)
_BARE_NUMBER = re.compile(r"^\W*" + _NUM + r"\W*$")
_BRACKET_VERDICT = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)
_WORD_VERDICT = re.compile(
    r"(?:verdict|winner|better\s+(?:response|answer)|final\s+answer)\s*(?:is|:)\s*\**\s*"
    r"(?:response\s+|answer\s+|assistant\s+)?\(?(A|B|C|tie)\b\)?",
    re.IGNORECASE,
)
_BARE_VERDICT = re.compile(r"^\W*(?:response\s+|answer\s+)?(A|B|C|tie)\W*$", re.IGNORECASE)


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_score(text: str | None, low: float = 1, high: float = 10) -> tuple[float | None, str]:
    """The score a rubric judge gave, or ``None`` and why it could not be read.

    Recognised, in order of precedence (the last occurrence of the first form found wins):
    ``[[7]]`` (MT-Bench), ``Score: 7`` / ``Rating is 7`` / ``score of 7``, ``7/10`` /
    ``7 out of 10``, and a reply that is a bare number. A score outside ``[low, high]`` is
    unreadable (``why`` says so), never clipped.

    Returns:
        ``(score, form)`` with ``form`` naming the pattern that matched, or ``(None, why)``.
    """
    if not text or not text.strip():
        return None, "empty reply"
    for k, pattern in enumerate(_SCORE_PATTERNS):
        found = pattern.findall(text)
        if found:
            value = float(found[-1])
            if not low <= value <= high:
                return None, f"score {found[-1]} outside [{low:g}, {high:g}]"
            return value, ("brackets", "labelled", "fraction")[k]
    bare = _BARE_NUMBER.match(text.strip())
    if bare:
        value = float(bare.group(1))
        if not low <= value <= high:
            return None, f"score {bare.group(1)} outside [{low:g}, {high:g}]"
        return value, "bare"
    return None, f'no score in "{_short(text)}"'


def parse_verdict(text: str | None) -> str | None:
    """The pairwise verdict of a judge reply: ``"A"``, ``"B"``, ``"tie"``, or ``None`` if unreadable.

    Recognised: ``[[A]]`` / ``[[B]]`` / ``[[C]]`` (MT-Bench; ``C`` is a tie) or ``[[tie]]``
    (last occurrence wins); ``Verdict: A``, ``Winner: Response B``, ``Better response: A``;
    and a reply that is just ``A``, ``B``, ``C`` or ``tie``.
    """
    if not text or not text.strip():
        return None
    found = _BRACKET_VERDICT.findall(text) or _WORD_VERDICT.findall(text)
    if not found:
        bare = _BARE_VERDICT.match(text.strip())
        found = [bare.group(1)] if bare else []
    if not found:
        return None
    v = found[-1].upper()
    return "tie" if v in ("C", "TIE") else v


def outcome_for(verdict: str, candidate_position: str) -> str:
    """The candidate's outcome (``win``/``tie``/``loss``) from a raw verdict, given the
    candidate's position (``"A"`` or ``"B"``).

    Raises:
        ValueError: an unknown verdict or position.
    """
    if verdict not in VERDICTS or candidate_position not in ("A", "B"):
        raise ValueError(f"verdict {verdict!r} / position {candidate_position!r}")
    if verdict == "tie":
        return "tie"
    return "win" if verdict == candidate_position else "loss"


def combine_verdicts(candidate_first: str, candidate_second: str) -> tuple[str, bool]:
    """Combine the two raw verdicts of a pair judged in both orders (Zheng et al., 2023).

    Args:
        candidate_first: the verdict (``"A"``, ``"B"``, ``"tie"``) when the candidate was shown
            first (as A) and the other answer second.
        candidate_second: the verdict when the other answer was shown first and the candidate
            second (as B).

    Returns:
        ``(outcome, consistent)``: the candidate's outcome is ``win``/``loss`` only when both
        orders agree, otherwise ``tie``; ``consistent`` says whether the two orders gave the
        same outcome (two ties are consistent). A judge that always picks the first position
        yields ``("tie", False)`` for every pair.

    Raises:
        ValueError: a verdict outside ``A``, ``B``, ``tie``.
    """
    first = outcome_for(candidate_first, "A")
    second = outcome_for(candidate_second, "B")
    if first == second:
        return first, True
    return "tie", False


def win_rate(outcomes: Iterable[str]) -> float:
    """``(wins + ties / 2) / n`` over the candidate's combined outcomes.

    Raises:
        ValueError: no outcomes.
    """
    items = list(outcomes)
    if not items:
        raise ValueError("win rate of no comparisons")
    return (sum(o == "win" for o in items) + 0.5 * sum(o == "tie" for o in items)) / len(items)


@dataclass
class PairwiseBias:
    """Run-level position and length bias of pairwise judgements, accumulated comparison by comparison.

    Attributes:
        comparisons: comparisons with two readable verdicts.
        consistent: of those, how many gave the same outcome in both orders.
        raw_decisive, first_pick: raw verdicts naming A or B, and how many named A (the answer shown first).
        decisive, longer_won: combined wins/losses between answers of different lengths, and
            how many went to the longer answer (characters).
    """

    comparisons: int = 0
    consistent: int = 0
    raw_decisive: int = 0
    first_pick: int = 0
    decisive: int = 0
    longer_won: int = 0

    def add(self, c: dict[str, Any]) -> None:
        """Count one ``comparisons`` entry of a pairwise verdict detail (skipped if a verdict is missing)."""
        verdicts = (c.get("verdict_candidate_first"), c.get("verdict_candidate_second"))
        if None in verdicts:
            return
        self.comparisons += 1
        self.consistent += bool(c.get("consistent"))
        for v in verdicts:
            if v in ("A", "B"):
                self.raw_decisive += 1
                self.first_pick += v == "A"
        if c["outcome"] in ("win", "loss") and c["len_candidate"] != c["len_other"]:
            self.decisive += 1
            self.longer_won += (c["outcome"] == "win") == (c["len_candidate"] > c["len_other"])

    def to_dict(self) -> dict[str, Any]:
        """``comparisons``; ``consistency_rate``; ``first_position_rate`` (share of decisive raw
        verdicts choosing the answer shown first: 0.5 unbiased, 1.0 always A); ``decisive`` and
        ``longer_wins_rate`` (share of decisive outcomes won by the longer answer); rates are
        ``None`` when their denominator is 0."""

        def rate(a: int, b: int) -> float | None:
            return round(a / b, 4) if b else None

        return {
            "comparisons": self.comparisons,
            "consistency_rate": rate(self.consistent, self.comparisons),
            "first_position_rate": rate(self.first_pick, self.raw_decisive),
            "decisive": self.decisive,
            "longer_wins_rate": rate(self.longer_won, self.decisive),
        }


def pairwise_summary(comparisons: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """:meth:`PairwiseBias.to_dict` over ``comparisons`` entries of pairwise verdict details
    (e.g. read back from ``accepted.parquet`` and ``rejected.parquet``). A pair judged from both
    sides (candidates mode) appears in both records' details and counts twice."""
    bias = PairwiseBias()
    for c in comparisons:
        bias.add(c)
    return bias.to_dict()


# -- format normalization ---------------------------------------------------------------------
_FENCE = re.compile(r"^[ \t]*(?:```|~~~)[^\n]*$\n?", re.M)
_HEADER = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(?=[^\s\d$-])", re.M)  # not GSM8K's "#### 72"
_BULLET = re.compile(r"^([ \t]*)[-*+•][ \t]+", re.M)
_QUOTE = re.compile(r"^[ \t]*>[ \t]?", re.M)
_RULE = re.compile(r"^[ \t]*(?:[-*_][ \t]*){3,}$\n?", re.M)
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", re.S)
_EMPH = re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n]+?)(?<=\S)\*(?![\w*])|(?<![\w_])_(?=[^\s_])([^_\n]+?)(?<=\S)_(?![\w_])")
_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"!?\[([^\]\n]*)\]\([^)\n]*\)")


def strip_markdown(text: str | None) -> str:
    """``text`` without Markdown formatting, so that formatting cannot buy a judge's favour.

    Removed: code-fence marker lines (the code stays), header marks (``## Title`` -> ``Title``;
    a line such as GSM8K's ``#### 72`` is kept), bullet marks (``-``, ``*``, ``+``, ``•``;
    numbered lists keep their numbers), block-quote marks, horizontal rules, bold and italics
    (``**x**``, ``__x__``, ``*x*``, ``_x_``; ``snake_case`` and ``2 * 3 * 4`` are left alone),
    inline-code backticks, and link syntax (``[text](url)`` -> ``text``). Runs of blank lines
    become one. ``None`` gives ``""``.
    """
    if not text:
        return ""
    out = _FENCE.sub("", text)
    out = _RULE.sub("", out)
    out = _HEADER.sub("", out)
    out = _QUOTE.sub("", out)
    out = _BULLET.sub(r"\1", out)
    out = _LINK.sub(r"\1", out)
    out = _CODE.sub(r"\1", out)
    for _ in range(2):  # nested: ***x***
        out = _STRONG.sub(r"\2", out)
    out = _EMPH.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), out)
    return re.sub(r"\n{3,}", "\n\n", out).strip()


# -- calibration against human verdicts ---------------------------------------------------------
def agreement(human: list[Any], judge: list[Any]) -> float:
    """Share of items where the judge's label equals the human one (a missing judge label,
    ``None``, is a disagreement).

    Raises:
        ValueError: the lists differ in length or are empty.
    """
    if len(human) != len(judge) or not human:
        raise ValueError(f"agreement of {len(human)} human and {len(judge)} judge labels")
    return sum(h == j for h, j in zip(human, judge, strict=True)) / len(human)


def cohen_kappa(human: list[Any], judge: list[Any]) -> float | None:
    """Cohen's kappa (Cohen, 1960) between two raters' labels of the same items:
    ``(p_o - p_e) / (1 - p_e)``, ``p_o`` the observed agreement and ``p_e`` the agreement
    expected by chance from each rater's label frequencies. 1 is perfect agreement, 0 chance
    level, below 0 worse than chance. A judge label ``None`` (unreadable) is a category of its own.

    Returns:
        kappa, or ``None`` when it is undefined (``p_e == 1``: both raters gave every item the
        same single label).

    Raises:
        ValueError: the lists differ in length or are empty.
    """
    n = len(human)
    p_o = agreement(human, judge)
    labels = set(human) | set(judge)
    p_e = sum((human.count(k) / n) * (judge.count(k) / n) for k in labels)
    if p_e >= 1:
        return None
    return (p_o - p_e) / (1 - p_e)
