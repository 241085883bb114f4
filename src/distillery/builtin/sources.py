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

