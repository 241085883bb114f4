"""``generation: {strategy: curate}``: responses come from the seeds, nothing is generated.

The rest of the pipeline (verifiers, filters, deduplication, decontamination) runs on them,
as when cleaning an existing dataset. The response is the seed's ``seeds.response_field`` or
``seeds.response_template`` (a Jinja2 template over the seed's fields); setting either makes
``curate`` the default strategy. Seeds whose response is empty are rejected
(``empty_response``).
"""

from __future__ import annotations

from typing import Any, Literal

from distillery.errors import RecipeError
from distillery.generate.candidates import curated_record
from distillery.generate.prompt import PromptBuilder
from distillery.generate.strategy import GenerationContext, Strategy, StrategyConfig
from distillery.io.seeds import SeedRow
from distillery.registry import register


@register("strategy")
class CurateConfig(StrategyConfig):
    """Curate the seeds' own responses (see the module doc); no parameters."""

    strategy: Literal["curate"] = "curate"

    def build(self, recipe: Any) -> Curate:
        return Curate(self, recipe)


class Curate(Strategy):
    """Makes one record per seed from the seed's own response.

    Raises:
        RecipeError: (on construction) the recipe names no response field or template.
    """

    needs_teacher = False
    mode = "curate"

    def __init__(self, config: CurateConfig, recipe: Any) -> None:
        super().__init__(config, recipe)
        template = recipe.response_template()
        if template is None:
            raise RecipeError("generation.strategy curate: set seeds.response_field or seeds.response_template")
        self.responder = PromptBuilder(template)

    @property
    def inputs(self) -> set[str]:
        return set(self.prompt.variables) | set(self.responder.variables)

    def describe(self) -> str:
        return (f"**Mode**: curate: responses come from the seeds (`{self.responder.template}`); "
                "no model was called.")

    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        items, records = ctx.prompts(seeds)
        for item in items:
            record = curated_record(item, ctx.source, self.responder.render(item.row.data), self.prompt.template_hash)
            records.append(ctx.stamp(record))
        return records
