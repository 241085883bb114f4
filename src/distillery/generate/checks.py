"""Checks every strategy makes on model output: is it a refusal (:func:`refusal`), can this
call's result be used at all (:func:`call_failure`), and a chat preamble to remove
(:func:`strip_preamble`).

One refusal detector serves every strategy; each keeps its own threshold through the
parameters: Evol-Instruct and Chan et al.'s strategies count a refusal phrase anywhere in a
short text (the WizardLM rule: "sorry" in a response under 80 words, ``max_words=80``);
Magpie and the persona-family strategies only look at how the text opens (``at_start=True``);
Self-Instruct looks anywhere in an answer that held no list.
"""

from __future__ import annotations

import re

from distillery.backends.base import GenerationResult

REFUSAL_PHRASES: tuple[str, ...] = (
    # "sorry", "I'm sorry", "I am sorry" — not sympathy ("sorry to hear that", "sorry for your loss")
    r"(?:i\s*'?\s*m\s+|i\s+am\s+)?sorry\b(?!\s+(?:to\s+hear|for\s+your\s+loss))",
    r"i\s+apologi[sz]e",
    # "I cannot", "I can't", "I won't", optionally with what is declined ("I cannot provide")
    r"i\s+(?:cannot|can\s*'?\s*t|can\s+not|won\s*'?\s*t|will\s+not)"
    r"(?:\s+(?:help|assist|do|provide|create|write|comply|fulfil|fulfill|rephrase|rewrite|answer)\b)?",
    r"i\s*(?:'?\s*m|\s+am)\s+(?:not\s+able|unable)(?:\s+to\b)?",
    r"can(?:not|\s*'?\s*t|\s+not)\s+(?:assist|help\s+with|comply)\b",
    # "As an AI", "As an AI language model, I cannot", "As a language model"
    r"as\s+an?\s+(?:ai(?:\s+language\s+model)?|language\s+model)\b"
    r"(?:\s*,?\s*i\s+(?:cannot|can\s*'?\s*t|can\s+not|am\s+not\s+able|am\s+unable|do\s+not|don\s*'?\s*t|won\s*'?\s*t|will\s+not)\b)?",
)
"""The phrases (regular expressions over lower-cased text, apostrophes as ``'``) that mark a
refusal: the union of what the strategies looked for ("sorry", "as an AI", "I cannot help",
"I'm unable to", "cannot assist", ...)."""

_PHRASE = "(?:" + "|".join(REFUSAL_PHRASES) + ")"
_AT_START = re.compile(r"\A\W*(" + _PHRASE + ")", re.I)
_ANYWHERE = re.compile(r"\b(" + _PHRASE + ")", re.I)
_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")


def words(text: str | None) -> list[str]:
    """The words (letters/digits runs, with an apostrophe suffix) of ``text``."""
    return _WORD.findall(text or "")


def refusal_phrase(text: str | None, max_words: int | None = None, *, at_start: bool = False) -> str | None:
    """The refusal phrase of :data:`REFUSAL_PHRASES` that ``text`` has (as written in ``text``,
    e.g. ``"I'm sorry"``, ``"I cannot provide"``), or ``None``; see :func:`refusal`."""
    if not text:
        return None
    norm = text.replace("\u2019", "'")  # same length: match positions are the text's
    if max_words is not None and len(words(norm)) >= max_words:
        return None
    m = (_AT_START.match if at_start else _ANYWHERE.search)(norm)
    if not m:
        return None
    return text[m.start(1):m.end(1)].strip(" \t\n.,")


def refusal(text: str | None, max_words: int | None = None, *, at_start: bool = False) -> bool:
    """Whether ``text`` reads as a refusal ("I'm sorry, but I can't...", "As an AI...").

    Args:
        text: the model's output (``None`` and empty text are no refusal).
        max_words: only a text of fewer words counts (a long answer that says "sorry" once
            is not one); ``None``: any length.
        at_start: the phrase must open the text (after punctuation), as a reply that declines
            does; otherwise it may be anywhere.
    """
    return refusal_phrase(text, max_words, at_start=at_start) is not None


def call_failure(result: GenerationResult, step: str, max_tokens: int | None = None) -> str | None:
    """Why the result of the call ``step`` cannot be used (``category: detail naming the
    step``), or ``None``.

    Categories, as for a final call (:func:`distillery.generate.candidates.candidate_record`):
    ``<error_kind>`` (a permanent failure, e.g. ``http_400``), ``content_filter``,
    ``empty_response`` (no text), ``truncated`` (cut off at ``max_tokens``). Transient
    failures never reach here (:meth:`~distillery.generate.strategy.GenerationContext.keep`).
    """
    if result.error_kind is not None:
        return f"{result.error_kind}: the {step} step failed: {result.error}"
    if result.finish_reason == "content_filter":
        return f"content_filter: the server withheld the {step} step's response"
    if not (result.text or "").strip():
        return f"empty_response: the {step} step returned no text"
    if result.finish_reason == "length":
        return f"truncated: the {step} step was cut off at max_tokens={'?' if max_tokens is None else max_tokens}"
    return None


_PREAMBLE = re.compile(
    r"\A\s*(?:sure|certainly|of course|okay|ok|absolutely|great)?[!,.]*\s*"
    r"(?:here(?:'|’)?s|here\s+is|here\s+are|below\s+is)\b[^\n]{0,160}?:\s*\n+(?=\S)",
    re.I,
)


def strip_preamble(text: str) -> tuple[str, str | None]:
    """``text`` without a chat preamble line ("Sure! Here's a simpler version:"), and the line
    removed (``None`` when there was none). Text that is nothing but a preamble is returned whole."""
    m = _PREAMBLE.match(text)
    if not m:
        return text, None
    return text[m.end():], text[: m.end()].strip()
