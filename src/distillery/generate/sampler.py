"""Rejection sampling with the verifier in the loop (adaptive best-of-N).

Candidates are drawn in waves: every prompt that still has fewer accepted candidates than
``accept_per_prompt`` and has budget left (``samples_per_prompt``) asks for more; each wave's
candidates go through the stateless stages (verifiers, filters, decontamination) at once, and
only prompts still short of accepted candidates take part in the next wave. With
``accept_per_prompt`` unset, one wave draws all N samples (plain best-of-N / rejection
sampling, Touvron et al., 2023; Yuan et al., 2023 "RFT").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distillery.backends.base import Backend, GenerationRequest, SamplingParams
from distillery.generate.candidates import PromptItem, candidate_record
from distillery.pipeline.stage import Stage, StageStats


async def run_stages(stages: list[Stage], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply ``stages`` in order to the live records of ``records``; return the survivors."""
    live = [r for r in records if r["accepted"]]
    for stage in stages:
        live = await stage.apply_async(live)
    return live


@dataclass
class SamplerResult:
    """What one call of :meth:`RejectionSampler.sample` produced."""

    records: list[dict[str, Any]]
    generate: StageStats
    waves: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: dict[str, int] = field(default_factory=dict)


class RejectionSampler:
    """Draws candidates for a batch of prompts and verifies them as they come.

    Args:
        backend: the (cached) teacher backend.
        stages: stateless stages run on each wave, cheapest first.
        sampling: sampling parameters of every request.
        samples_per_prompt: budget N per prompt.
        accept_per_prompt: target of accepted candidates per prompt, or ``None``.
        wave_size: candidates per prompt per wave (default: the number still wanted).
        source, template_hash: provenance copied into records.
        on_result: called with each record as soon as it is built (progress display).
    """

    def __init__(
        self,
        backend: Backend,
        stages: list[Stage],
        sampling: SamplingParams,
        samples_per_prompt: int,
        accept_per_prompt: int | None,
        wave_size: int | None,
        source: str,
        template_hash: str,
        on_result: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.backend = backend
        self.stages = stages
        self.sampling = sampling
        self.samples_per_prompt = samples_per_prompt
        self.accept_per_prompt = accept_per_prompt
        self.wave_size = wave_size
        self.source = source
        self.template_hash = template_hash
        self.on_result = on_result

    def _wanted(self, accepted: int, drawn: int) -> int:
        budget = self.samples_per_prompt - drawn
        if self.accept_per_prompt is None:
            return budget
        need = self.accept_per_prompt - accepted
        if need <= 0:
            return 0
        return min(budget, self.wave_size or need)

    async def sample(self, items: list[PromptItem]) -> SamplerResult:
        """Generate and verify candidates for ``items``; every candidate becomes a record.

        ``generate.seconds`` counts only time spent waiting for the backend; the stages
        time themselves.
        """
        result = SamplerResult([], StageStats("generate", "generate"))
        stats = result.generate
        accepted = [0] * len(items)
        drawn = [0] * len(items)
        while True:
            plan: list[tuple[int, int]] = []  # (item position, sample index)
            for p in range(len(items)):
                for _ in range(self._wanted(accepted[p], drawn[p])):
                    plan.append((p, drawn[p]))
                    drawn[p] += 1
            if not plan:
                break
            result.waves += 1
            requests = [GenerationRequest.make(items[p].messages, self.sampling, k) for p, k in plan]
            wave: list[dict[str, Any]] = []
            owner: dict[int, int] = {}
            started = time.perf_counter()
            async for i, generated in self.backend.stream(requests):
                p, k = plan[i]
                result.cache_hits += int(generated.cached)
                result.retries += generated.retries
                record = candidate_record(
                    items[p], self.source, self.backend.model, self.backend.kind, self.sampling,
                    self.template_hash, k, generated,
                )
                if not record["accepted"]:
                    kind = record["reject_reason"].split(":", 1)[0]
                    result.failures[kind] = result.failures.get(kind, 0) + 1
                    stats.reasons[kind] += 1
                owner[id(record)] = p
                wave.append(record)
                if self.on_result:
                    self.on_result(record)
            stats.seconds += time.perf_counter() - started
            stats.records_in += len(wave)
            stats.records_out += sum(r["accepted"] for r in wave)
            for record in await run_stages(self.stages, wave):
                accepted[owner[id(record)]] += 1
            # keep the records in (prompt, sample) order whatever order they completed in
            wave.sort(key=lambda r: (owner[id(r)], r["sample_index"]))
            result.records.extend(wave)
        result.records.sort(key=lambda r: (r["seed_index"], r["sample_index"]))
        return result
