"""The base of every stage's recipe entry.

Each stage module defines a pydantic config class next to its stage and registers it under
its kind, e.g.::

    @register("filter")
    class LengthConfig(StageConfig):
        type: Literal["length"] = "length"     # the stage's name, written once
        min_chars: int = 0

        def build(self, ctx: BuildContext) -> Stage:
            return LengthFilter(self)

A recipe validates each entry against the classes registered for its section when it is
validated (:func:`distillery.registry.config_field`), so an unknown key or a wrong type is
rejected with its path before any work starts.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from distillery.pipeline.stage import BuildContext, Stage


class StageConfig(BaseModel):
    """Recipe entry of one stage: ``type`` selects the stage, ``name`` renames it.

    Subclasses add a ``type: Literal[...]`` field and their own options, and implement
    :meth:`build`.
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = None

    @property
    def inputs(self) -> tuple[str, ...]:
        """What the stage reads besides ``response``: record fields (``prompt``, ``messages``,
        or a field a strategy adds) and seed fields as ``seed.<field>``.

        The runner checks them before any work: a seed without a ``seed.<field>`` is a bad row
        naming the field; a record field no strategy makes is a recipe error (the distilabel
        ``inputs`` pattern). Default: none.
        """
        return ()

    @property
    def stage_name(self) -> str:
        """The stage's name in verdicts and the report: ``name`` if given, else ``type``."""
        return self.name or str(getattr(self, "type", type(self).__name__))

    def check_recipe(self, recipe: Any, where: str) -> list[str]:
        """Checks of this entry against the whole recipe, run when the recipe is validated (a
        judge that is the teacher, say). ``where`` is the entry's key path (``verifiers.0``).

        Returns:
            warnings (logged; default none).

        Raises:
            distillery.errors.RecipeError: the recipe cannot use this entry as it is.
        """
        return []

    def build(self, ctx: BuildContext) -> Stage:
        """Construct the stage this entry describes.

        Raises:
            distillery.errors.RecipeError: a resource it names cannot be used.
        """
        raise NotImplementedError(f"{type(self).__name__}.build")
