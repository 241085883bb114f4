"""Prompt templates of the generation strategies, in files users can override.

Each strategy's templates ship as Jinja2 files in ``distillery/generate/templates/<strategy>/``
(``<name>.jinja``), written for distillery (no paper's prompt text is copied). A recipe
overrides any of them under ``generation.templates``, by name, with a path (``.jinja`` /
``.txt``, relative to the recipe's folder) or the template text itself::

    generation:
      strategy: evol_instruct
      templates:
        deepen: prompts/my-deepen.jinja
        eliminate: "Is {{ evolved }} better than {{ parent }}? Answer yes or no."

A template is a user message; a file whose first line is ``{# system: ... #}`` also sets a
system message. Undefined variables are errors (:class:`~distillery.generate.prompt.PromptBuilder`).

Helpers for strategies with several templates: :func:`required_variables` (the seed fields a
template reads, for a strategy's ``inputs``) and :func:`combined` (one identity for all of them).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
from pydantic import Field

from distillery.errors import RecipeError
from distillery.generate.prompt import PromptBuilder
from distillery.generate.strategy import StrategyConfig

_SYSTEM = re.compile(r"\A\{#\s*system:\s*(.*?)\s*#\}\n?", re.S)
_PARSE = jinja2.Environment()


def shipped(strategy: str) -> dict[str, str]:
    """The shipped templates of ``strategy``: name -> template text (empty if none ship)."""
    folder = resources.files("distillery.generate") / "templates" / strategy
    if not folder.is_dir():
        return {}
    return {p.name.removesuffix(".jinja"): p.read_text(encoding="utf-8")
            for p in folder.iterdir() if p.name.endswith(".jinja")}


def builder(text: str) -> PromptBuilder:
    """A :class:`PromptBuilder` from template text (a leading ``{# system: ... #}`` comment
    becomes the system message).

    Raises:
        RecipeError: the template does not parse.
    """
    m = _SYSTEM.match(text)
    if m:
        return PromptBuilder(text[m.end():], system=m.group(1))
    return PromptBuilder(text)


class TemplatedConfig(StrategyConfig):
    """Base of the ``generation:`` sections of strategies with their own prompt templates.

    Attributes:
        templates: overrides by template name: a file path (relative to the recipe's folder)
            or the template text.
    """

    templates: dict[str, str] = Field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        out = super().params()
        if not out.get("templates"):
            out.pop("templates", None)
        return out

    def load_templates(self, base_dir: str | Path | None) -> dict[str, PromptBuilder]:
        """Every template of this strategy (shipped, with the recipe's overrides), as builders.

        Raises:
            RecipeError: an override names a template the strategy does not have, or a file
                that does not exist, or a template that does not parse.
        """
        texts = shipped(self.strategy)
        for name, value in self.templates.items():
            if name not in texts:
                known = ", ".join(sorted(texts)) or "(none)"
                raise RecipeError(f"generation.templates.{name}: strategy {self.strategy!r} has no template {name!r}; "
                                  f"its templates: {known}")
            texts[name] = _override_text(name, value, base_dir)
        out = {}
        for name, text in texts.items():
            try:
                out[name] = builder(text)
            except RecipeError as e:
                raise RecipeError(f"generation.templates.{name}: {e}") from None
        return out


def _override_text(name: str, value: str, base_dir: str | Path | None) -> str:
    if "\n" not in value and value.endswith((".jinja", ".txt", ".j2")):
        path = Path(value).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.exists():
            raise RecipeError(f"generation.templates.{name}: file not found: {path}")
        return path.read_text(encoding="utf-8")
    return value


def required_variables(builder: PromptBuilder, provided: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Variables of ``builder``'s templates (user and system) that seeds must supply: every
    variable but those in ``provided`` (the strategy fills them) and those the template treats
    as optional (tested with ``is defined`` / ``is undefined`` or given a ``default``).

    A strategy's ``inputs`` are these for every template it renders with seed fields, so a
    recipe whose (overridden) template reads a field the seeds lack stops before any call."""
    names: set[str] = set()
    optional: set[str] = set()
    for source in (builder.template, builder.system or ""):
        ast = _PARSE.parse(source)
        names |= jinja2.meta.find_undeclared_variables(ast)
        for node in ast.find_all((jinja2.nodes.Test, jinja2.nodes.Filter)):
            if isinstance(node.node, jinja2.nodes.Name) and node.name in ("defined", "undefined", "default", "d"):
                optional.add(node.node.name)
    return names - optional - set(provided)


def combined(builders: list[PromptBuilder]) -> PromptBuilder:
    """One builder whose ``template_hash`` identifies all of ``builders`` (a record's
    ``prompt_template_hash`` for a strategy with several templates); never rendered."""
    system = "\n\n".join(b.system for b in builders if b.system) or None
    return PromptBuilder("\n\n".join(b.template for b in builders), system=system)
