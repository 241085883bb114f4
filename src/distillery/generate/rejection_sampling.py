"""``generation: {strategy: rejection_sampling}``: rejection sampling with the verifiers in the
loop (adaptive best-of-N), the default strategy.

Candidates are drawn in waves: every prompt that still has fewer accepted candidates than
``accept_per_prompt`` and has budget left (``samples_per_prompt``) asks for more; each wave's
candidates go through the stateless stages (verifiers, filters, decontamination) at once, and
only prompts still short of accepted candidates take part in the next wave. With
``accept_per_prompt`` unset, one wave draws all N samples (plain best-of-N / rejection
sampling, Touvron et al., 2023, "Llama 2"; Yuan et al., 2023, "Scaling relationship on learning
mathematical reasoning with large language models" (RFT)).

A prompt with a transiently failed request, or a candidate a stage could not judge for a
transient failure, draws no further waves in this run (they might not be needed); its batch
is left unfinished, and the next run replays it from the cache and retries only that request.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from distillery.backends.base import GenerationRequest
from distillery.generate.strategy import GenerationContext, Strategy, StrategyConfig
from distillery.io.seeds import SeedRow
from distillery.registry import register


@register("strategy")
class RejectionSamplingConfig(StrategyConfig):
    """Rejection sampling with adaptive best-of-N.

    Attributes:
        samples_per_prompt: most candidates drawn per prompt (N).
        accept_per_prompt: stop sampling a prompt once it has this many accepted candidates
            (``None``: draw all N and keep every accepted one).
        wave_size: candidates requested per prompt per wave (default: the number still wanted).
    """

    strategy: Literal["rejection_sampling"] = "rejection_sampling"
    samples_per_prompt: int = Field(1, ge=1)
    accept_per_prompt: int | None = Field(None, ge=1)
    wave_size: int | None = Field(None, ge=1)

    def build(self, recipe: Any) -> RejectionSampling:
        return RejectionSampling(self, recipe)


class RejectionSampling(Strategy):
    """Draws candidates for a batch of prompts in waves and verifies each wave as it comes.

    Records come out in (seed, sample) order whatever order the backend answered in.
    """

    config: RejectionSamplingConfig

    def _wanted(self, accepted: int, drawn: int) -> int:
        c = self.config
        budget = c.samples_per_prompt - drawn
        if c.accept_per_prompt is None:
            return budget
        need = c.accept_per_prompt - accepted
        if need <= 0:
            return 0
        return min(budget, c.wave_size or need)

    def describe(self) -> str:
        c = self.config
        if c.accept_per_prompt is None:
            how = f"best-of-{c.samples_per_prompt}: every one of {c.samples_per_prompt} samples per prompt is verified"
        else:
            how = (f"adaptive best-of-{c.samples_per_prompt}: sampling a prompt stops once it has "
                   f"{c.accept_per_prompt} accepted candidate(s)")
        return f"**Generation**: rejection sampling ({how}), the verifiers and filters run on each wave."

    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        items, records = ctx.prompts(seeds)
        accepted = [0] * len(items)
        drawn = [0] * len(items)
        blocked = [False] * len(items)  # a transient failure: no more waves for this prompt in this run
        candidates: list[dict[str, Any]] = []
        while True:
            plan: list[tuple[int, int]] = []  # (item position, sample index)
            for p in range(len(items)):
                if blocked[p]:
                    continue
                for _ in range(self._wanted(accepted[p], drawn[p])):
                    plan.append((p, drawn[p]))
                    drawn[p] += 1
            if not plan:
                break
            ctx.ledger.waves += 1
            requests = [GenerationRequest.make(items[p].messages, ctx.sampling, k) for p, k in plan]
            wave: list[dict[str, Any]] = []
            owner: dict[int, int] = {}
            async for i, result in ctx.stream(requests):
                p, k = plan[i]
                if not ctx.keep(result):
                    blocked[p] = True
                    continue
                record = ctx.candidate(items[p], result, k)
                owner[id(record)] = p
                wave.append(record)
            for record in await ctx.check(wave):
                accepted[owner[id(record)]] += 1
            for record in ctx.undecided(wave):
                blocked[owner[id(record)]] = True
            candidates.extend(wave)
        candidates.sort(key=lambda r: (r["seed_index"], r["sample_index"]))
        return records + candidates
