"""The base of every stage's recipe entry.

Each stage module defines a pydantic config class next to its stage, e.g.::

    class LengthConfig(StageConfig):
        type: Literal["length"] = "length"
        min_chars: int = 0

        def build(self, ctx: BuildContext) -> Stage:
            return LengthFilter(self)

The recipe gathers these classes into a discriminated union on ``type``, so an unknown
key or a wrong type in a recipe is rejected with its path before any work starts.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from distillery.pipeline.stage import BuildContext, Stage


class StageConfig(BaseModel):
    """Recipe entry of one stage: ``type`` selects the stage, ``name`` renames it.

    Subclasses add a ``type: Literal[...]`` field and their own options, and implement
    :meth:`build`.
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = None

    def build(self, ctx: BuildContext) -> Stage:
        """Construct the stage this entry describes.

        Raises:
            distillery.errors.RecipeError: a resource it names cannot be used.
        """
        raise NotImplementedError(f"{type(self).__name__}.build")
