"""Robust parsing of model output for the generation strategies.

Models wrap JSON in code fences or prose, number their lists a dozen ways and answer "4/5" or
"Score: 4" when asked for a number. Each parser returns ``(value, None)`` on success or
``(None, reason)`` with a short ``reason`` (``category: detail``) — never raises and never
returns a silent ``None`` — so a strategy turns malformed output into a rejected record that
keeps the raw text (:meth:`distillery.generate.strategy.GenerationContext.reject`).
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)
_ITEM = re.compile(r"^\s*(?:\d+\s*[.):]|[-*•]|\(\d+\)|#{1,3}\s*\d+\s*[.:]?)\s+(.*\S)\s*$")


def _clip(text: str, n: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def extract_json(text: str | None, expect: type | tuple[type, ...] = (dict, list)) -> tuple[Any, str | None]:
    """The first JSON value of type ``expect`` in ``text``: the whole text, a fenced block, or
    the first ``{...}`` / ``[...]`` span that parses.

    Returns:
        ``(value, None)``, or ``(None, "malformed_json: ...")`` / ``(None, "empty_response: ...")``.
    """
    if not text or not text.strip():
        return None, "empty_response: the model returned no text"
    candidates = [text.strip()] + [m.group(1).strip() for m in _FENCE.finditer(text)]
    decoder = json.JSONDecoder()
    for start, ch in enumerate(text):
        if ch in "{[":
            candidates.append(text[start:])
            break
    for c in candidates:
        for begin in [i for i, ch in enumerate(c) if ch in "{["][:20]:
            try:
                value, _ = decoder.raw_decode(c[begin:])
            except json.JSONDecodeError:
                continue
            if isinstance(value, expect):
                return value, None
    names = expect.__name__ if isinstance(expect, type) else "/".join(t.__name__ for t in expect)
    return None, f"malformed_json: no JSON {names} found in {_clip(text)!r}"


def json_fields(text: str | None, required: dict[str, type | tuple[type, ...]]) -> tuple[dict[str, Any] | None, str | None]:
    """A JSON object from ``text`` that has every key of ``required`` with the given type
    (strings are stripped and must be non-empty).

    Returns:
        ``(object, None)``, or ``(None, reason)``: ``malformed_json``, ``missing_field: <key>``
        or ``wrong_type: <key>``.
    """
    value, reason = extract_json(text, dict)
    if reason:
        return None, reason
    for key, kind in required.items():
        if key not in value or value[key] is None:
            return None, f"missing_field: {key} (keys: {sorted(value)[:8]})"
        if not isinstance(value[key], kind):
            return None, f"wrong_type: {key} is {type(value[key]).__name__}"
        if isinstance(value[key], str):
            value[key] = value[key].strip()
            if not value[key]:
                return None, f"missing_field: {key} is empty"
    return value, None


def numbered_list(text: str | None, min_items: int = 1) -> tuple[list[str] | None, str | None]:
    """The items of a numbered or bulleted list (``1.``, ``2)``, ``-``, ``*``, ``(3)``), or of
    a JSON list of strings that is the whole answer (or a fenced block); continuation lines
    join their item. A JSON list inside an item (``1. Sort ["b", "a"]``) stays in the item.

    Returns:
        ``(items, None)``, or ``(None, "no_list: ...")`` when fewer than ``min_items`` are found.
    """
    if not text or not text.strip():
        return None, "empty_response: the model returned no text"
    items: list[str] = []
    for line in text.splitlines():
        m = _ITEM.match(line)
        if m:
            items.append(m.group(1).strip())
        elif items and line.strip() and not line.startswith(("```",)):
            items[-1] += "\n" + line.strip()
    if len(items) < min_items:  # a JSON list of strings, when it is the whole answer or a fenced block
        whole = [text.strip()] + [m.group(1).strip() for m in _FENCE.finditer(text)]
        for block in whole:
            try:
                value = json.loads(block)
            except json.JSONDecodeError:
                continue
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                items = [v.strip() for v in value if v.strip()]
                break
    if len(items) < min_items:
        return None, f"no_list: found {len(items)} list item(s), wanted {min_items} in {_clip(text)!r}"
    return items, None


_SCORE = re.compile(r"(?<![\d.])([0-9]+(?:\.[0-9]+)?)\s*(?:/\s*([0-9]+))?")


def score(text: str | None, low: int = 1, high: int = 5, key: str = "score") -> tuple[float | None, str | None]:
    """A numeric rating in ``[low, high]`` from ``text``: a JSON object's ``key``, else the first
    number in range after the *last* "score"/"rating"/"grade" word that one follows (``Score: 4``,
    ``4/5``), else the first number in range anywhere.

    Returns:
        ``(value, None)``, or ``(None, "no_score: ...")``.
    """
    if not text or not text.strip():
        return None, "empty_response: the model returned no text"
    value, _ = extract_json(text, dict)
    if isinstance(value, dict) and isinstance(value.get(key), int | float) and low <= value[key] <= high:
        return float(value[key]), None
    # after the last "score" word that a rating follows ("I'd score it 3 at first... Score: 2" is 2),
    # else the first number in range anywhere
    words = [m.end() for m in re.finditer(r"(?i)\b(?:score|rating|grade)\b", text)]
    for start in [*reversed(words), 0]:
        for m in _SCORE.finditer(text[start:]):
            v = float(m.group(1))
            if m.group(2) and float(m.group(2)) != high:
                continue
            if low <= v <= high:
                return v, None
    return None, f"no_score: no rating in [{low}, {high}] found in {_clip(text)!r}"


def strip_wrapping(text: str | None) -> str:
    """``text`` without a leading label (``Instruction:``, ``Question:``, ``Rewritten prompt:``),
    surrounding quotes or a code fence: the content a model wraps in them."""
    if not text:
        return ""
    t = text.strip()
    m = _FENCE.fullmatch(t)
    if m:
        t = m.group(1).strip()
    t = re.sub(r"^(?:#+\s*)?\**(?:new |rewritten |rephrased |evolved )?(?:instruction|question|prompt|task|query|rewrite)\**\s*[:：]\s*(?:\*\*\s*)?", "", t, flags=re.I)
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":
        t = t[1:-1].strip()
    return t
