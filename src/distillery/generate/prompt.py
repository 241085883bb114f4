"""Prompts: a system message, optional few-shot turns and a user template filled with a seed.

Templates are Jinja2 (the format distilabel and Hugging Face chat templates use) with
undefined variables made errors, so ``{{ questoin }}`` fails before any request is sent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import jinja2
import jinja2.meta

from distillery.errors import RecipeError

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


@dataclass
class PromptBuilder:
    """Builds chat messages for a seed.

    Args:
        template: Jinja2 template of the user message, over the seed's fields.
        system: optional system message (also a template).
        few_shot: ``[{"user": ..., "assistant": ...}]`` turns placed before the user message.

    Raises:
        RecipeError: a template does not parse.
    """

    template: str
    system: str | None = None
    few_shot: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        try:
            self._user = _ENV.from_string(self.template)
            self._system = _ENV.from_string(self.system) if self.system else None
        except jinja2.TemplateSyntaxError as e:
            raise RecipeError(f"prompt: template syntax error on line {e.lineno}: {e.message}") from e

    @property
    def variables(self) -> set[str]:
        """Seed fields the templates use."""
        names: set[str] = set()
        for source in (self.template, self.system or ""):
            names |= jinja2.meta.find_undeclared_variables(_ENV.parse(source))
        return names

    @property
    def template_hash(self) -> str:
        """sha256 (first 16 hex digits) of system, template and few-shot: the prompt's identity."""
        blob = json.dumps({"system": self.system, "template": self.template, "few_shot": self.few_shot}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def render(self, seed: dict[str, Any]) -> str:
        """The user template alone, filled with ``seed``.

        Raises:
            KeyError: the seed lacks a field the template uses.
        """
        try:
            return self._user.render(**seed)
        except jinja2.UndefinedError as e:
            raise KeyError(str(e.message)) from e

    def messages(self, seed: dict[str, Any]) -> list[dict[str, str]]:
        """The chat messages for ``seed``: ``[{"role", "content"}, ...]``.

        Raises:
            KeyError: the seed lacks a field the template uses (message names the field).
        """
        try:
            out: list[dict[str, str]] = []
            if self._system is not None:
                out.append({"role": "system", "content": self._system.render(**seed)})
            for turn in self.few_shot:
                out.append({"role": "user", "content": turn["user"]})
                out.append({"role": "assistant", "content": turn["assistant"]})
            out.append({"role": "user", "content": self._user.render(**seed)})
            return out
        except jinja2.UndefinedError as e:
            raise KeyError(str(e.message)) from e
