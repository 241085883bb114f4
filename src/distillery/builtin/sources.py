"""Seed sources of the built-in task, usable in a recipe as ``seeds.path: builtin:arith``.

Options (``seeds.options``): ``n`` (problems, default 1000), ``split`` (``train``,
``validation`` or ``test``; default ``train``), ``seed`` (default 0), ``difficulties``
(default ``[1, 2, 3, 4, 5]``, cycled). Each seed has ``id``, ``question``, ``answer``
(``"42"`` or ``"7/3"``), ``program`` (the gold solution), ``difficulty`` and ``template``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from distillery.registry import register


@register("seed_source", name="arith")
def arith_seeds(options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Problems of the ``arith`` task as seed dicts (see the module docstring for options).

    Raises:
        ValueError: an unknown option, split or difficulty.
    """
    from distillery.builtin.arith import generate

    known = {"n", "split", "seed", "difficulties"}
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"builtin:arith: unknown options {sorted(unknown)}; use {sorted(known)}")
    problems = generate(
        int(options.get("n", 1000)),
        split=options.get("split", "train"),
        seed=int(options.get("seed", 0)),
        difficulties=tuple(options.get("difficulties", (1, 2, 3, 4, 5))),
    )
    for p in problems:
        yield p.to_dict()



@register("seed_source", name="pydoc_topics")
def pydoc_topics(options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The Python documentation topics that ship with every Python (``pydoc_data.topics``,
    PSF license) as documents: ``{"id", "title", "text"}``, sorted by title — real prose and
    code for rephrasing (WRAP) and instruction backtranslation without a download.

    Options: ``min_chars`` (skip shorter topics; default 200), ``max_chars`` (cut longer ones
    at a paragraph boundary; default 4000).

    Raises:
        ValueError: an unknown option.
    """
    from pydoc_data.topics import topics

    known = {"min_chars", "max_chars"}
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"builtin:pydoc_topics: unknown options {sorted(unknown)}; use {sorted(known)}")
    low, high = int(options.get("min_chars", 200)), int(options.get("max_chars", 4000))
    for title in sorted(topics):
        text = topics[title].strip()
        if len(text) < low:
            continue
        if len(text) > high:
            cut = text.rfind("\n\n", 0, high)
            text = text[: cut if cut > low else high].rstrip()
        yield {"id": f"pydoc-{title}", "title": title, "text": text}
