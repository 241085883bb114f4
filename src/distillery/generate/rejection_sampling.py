"""``generation: {strategy: rejection_sampling}``: rejection sampling with the verifiers in the
loop (adaptive best-of-N), the default strategy.

Candidates are drawn in waves: every prompt that still has fewer accepted candidates than
``accept_per_prompt`` and has budget left (``samples_per_prompt``) asks for more; each wave's
candidates go through the stateless stages (verifiers, filters, decontamination) at once, and
only prompts still short of accepted candidates take part in the next wave. With
``accept_per_prompt`` unset, one wave draws all N samples (plain best-of-N / rejection
sampling, Touvron et al., 2023, "Llama 2"; Yuan et al., 2023, "Scaling relationship on learning
mathematical reasoning with large language models" (RFT)).

With ``allocation: posterior`` (and ``accept_per_prompt``), a prompt also stops early when
the next sample is unlikely to be worth its tokens. Each prompt's pass rate ``p`` is taken to be
drawn from one Beta(a, b) prior over the batch's prompts, fitted by maximum marginal likelihood
(beta-binomial empirical Bayes; Robbins, 1956; Efron & Morris, 1975) to every prompt's
accepted/rejected counts of the waves so far; a prompt with ``s`` accepted of ``n`` drawn then
passes its next sample with posterior probability ``q = (a + s) / (a + b + n)``. Before every
wave after the second, a prompt whose ``q`` is below ``stop_below`` times its relative cost
(its mean tokens per sample over the batch's) draws no more: the one-step look-ahead rule of
optimal stopping (Chow, Robbins & Siegmund, 1971, "Great Expectations"), optimal here because
``q`` only falls with each failure; it spends a prompt's samples where the expected accepted
examples per token are highest (compute-optimal, input-adaptive allocation: Snell et al., 2024,
"Scaling LLM Test-Time Compute Optimally"; Damani et al., 2024, "Learning How Hard to Think").
The decisions depend only on the batch's own records, so they are the same on a re-run, under
any executor. What was decided for each prompt is written to
``<run_dir>/state/allocation/batch-<k>.json``; no record's fields change.

A prompt with a transiently failed request, or a candidate a stage could not judge for a
transient failure, draws no further waves in this run (they might not be needed); its batch
is left unfinished, and the next run replays it from the cache and retries only that request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_serializer, model_validator

from distillery.backends.base import GenerationRequest
from distillery.generate.strategy import GenerationContext, Strategy, StrategyConfig
from distillery.io.atomic import atomic_write_text
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
        allocation: ``None`` (the default: every prompt may draw all N) or ``"posterior"``: a
            prompt also stops once its posterior probability of passing the next sample, under
            a Beta prior fitted to the batch's waves so far, falls below ``stop_below`` times its
            relative cost (see the module doc). Needs ``accept_per_prompt``.
        stop_below: the threshold of ``allocation: posterior``, a probability in [0, 1); the
            default 0.07 was chosen on ``builtin:arith`` train seeds of ``seed: 1``, not on the
            benchmark's (``benchmarks/best_of_n.py``).

    Raises:
        ValueError: (a :class:`~distillery.errors.RecipeError` when the recipe is validated)
            ``allocation: posterior`` without ``accept_per_prompt``, or ``stop_below`` without
            ``allocation``.
    """

    strategy: Literal["rejection_sampling"] = "rejection_sampling"
    samples_per_prompt: int = Field(1, ge=1)
    accept_per_prompt: int | None = Field(None, ge=1)
    wave_size: int | None = Field(None, ge=1)
    allocation: Literal["posterior"] | None = None
    stop_below: float | None = Field(None, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check_allocation(self) -> RejectionSamplingConfig:
        if self.allocation == "posterior" and self.accept_per_prompt is None:
            raise ValueError("allocation 'posterior' stops prompts early, so it needs accept_per_prompt (e.g. 1)")
        if self.stop_below is not None and self.allocation is None:
            raise ValueError("stop_below is only used with allocation: posterior")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # the allocation fields are left out while unset, so a recipe without them keeps its
        # data hash and its records' strategy_params (existing run directories stay valid)
        data = handler(self)
        if self.allocation is None:
            data.pop("allocation", None)
            data.pop("stop_below", None)
        elif data.get("stop_below") is None:
            data["stop_below"] = DEFAULT_STOP_BELOW
        return data

    def build(self, recipe: Any) -> RejectionSampling:
        return RejectionSampling(self, recipe)


DEFAULT_STOP_BELOW = 0.07
"""``stop_below`` of ``allocation: posterior`` when the recipe gives none."""

_MEANS = np.linspace(0.0025, 0.9975, 399)[:, None]
_STRENGTHS = np.exp(np.linspace(np.log(0.05), np.log(500.0), 160))[None, :]
_A, _B = _MEANS * _STRENGTHS, (1.0 - _MEANS) * _STRENGTHS


def fit_beta_prior(counts: list[tuple[int, int]]) -> tuple[float, float]:
    """The Beta(a, b) prior of pass rates that makes ``counts`` most likely (beta-binomial
    maximum marginal likelihood, empirical Bayes).

    Each prompt with ``s`` accepted and ``f`` rejected samples contributes
    ``B(a + s, b + f) / B(a, b)``; the order of its samples and the stopping rule that decided
    how many were drawn do not enter (the likelihood principle), so the adaptively drawn waves
    of a batch can be used as they are. The maximum is taken over a fixed grid (399 means in
    (0, 1) by 399 strengths ``a + b`` from 0.05 to 500, log-spaced), so the answer is the same
    on every machine.

    Args:
        counts: ``(accepted, rejected)`` samples of each prompt.

    Returns:
        ``(a, b)``, both > 0; ``(1, 1)`` (uniform) for no samples.
    """
    tally: dict[tuple[int, int], int] = {}
    for s, f in counts:
        if s + f:
            tally[(s, f)] = tally.get((s, f), 0) + 1
    if not tally:
        return 1.0, 1.0
    loglik = np.zeros_like(_A)
    for (s, f), m in sorted(tally.items()):
        term = np.zeros_like(_A)
        for j in range(s):
            term += np.log(_A + j)
        for j in range(f):
            term += np.log(_B + j)
        for j in range(s + f):
            term -= np.log(_A + _B + j)
        loglik += m * term
    i, j = np.unravel_index(int(np.argmax(loglik)), loglik.shape)
    return float(_A[i, j]), float(_B[i, j])


@dataclass
class _Prompt:
    """One prompt's tally in a batch (``allocation: posterior``)."""

    accepted: int = 0
    drawn: int = 0
    tokens: int = 0  # tokens in + out of its answered samples
    answered: int = 0
    blocked: bool = False  # a transient failure: no more waves for this prompt in this run
    stopped: dict[str, Any] | None = None  # the allocation's decision, once it stops the prompt


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
        if c.allocation == "posterior":
            how += (f", or once its posterior chance of passing the next sample (Beta prior fitted to the "
                    f"batch's waves) falls below {self._stop_below()} times its relative cost")
        return f"**Generation**: rejection sampling ({how}), the verifiers and filters run on each wave."

    def _stop_below(self) -> float:
        c = self.config
        return DEFAULT_STOP_BELOW if c.stop_below is None else c.stop_below

    def _allocate(self, tally: list[_Prompt], wave: int) -> dict[str, Any] | None:
        """``allocation: posterior``: stop the prompts not worth another sample, before wave
        ``wave`` (0-based); returns the wave's prior and how many it stopped, or ``None``."""
        if self.config.allocation != "posterior" or wave < 2:
            return None  # two waves are the least that tell a prior's mean from its spread
        a, b = fit_beta_prior([(t.accepted, t.drawn - t.accepted) for t in tally if not t.blocked])
        tokens = sum(t.tokens for t in tally)
        answered = sum(t.answered for t in tally)
        mean_cost = tokens / answered if answered else 0.0
        threshold = self._stop_below()
        stopped = 0
        for t in tally:
            if t.blocked or t.stopped or not self._wanted(t.accepted, t.drawn) or not t.answered:
                continue
            q = (a + t.accepted) / (a + b + t.drawn)
            relative_cost = (t.tokens / t.answered) / mean_cost if mean_cost else 1.0
            if q < threshold * relative_cost:
                t.stopped = {"wave": wave, "drawn": t.drawn, "accepted": t.accepted, "q": round(q, 6),
                             "relative_cost": round(relative_cost, 6)}
                stopped += 1
        return {"wave": wave, "a": round(a, 6), "b": round(b, 6), "mean_cost": round(mean_cost, 3), "stopped": stopped}

    def _write_decisions(self, ctx: GenerationContext, items: list[Any], tally: list[_Prompt],
                         waves: list[dict[str, Any]]) -> None:
        if self.config.allocation != "posterior":
            return
        ctx.ledger.stopped_early += sum(1 for t in tally if t.stopped)  # in the marker and the report
        if ctx.state_dir is None:
            return
        report = {
            "batch": ctx.batch,
            "allocation": "posterior",
            "stop_below": self._stop_below(),
            "prompts": len(items),
            "stopped": sum(1 for t in tally if t.stopped),
            "waves": waves,
            "decisions": {item.seed_id: t.stopped for item, t in zip(items, tally, strict=True) if t.stopped},
        }
        path = ctx.state_dir / "allocation" / f"batch-{ctx.batch:06d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(report, indent=1, sort_keys=True) + "\n")

    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        items, records = ctx.prompts(seeds)
        tally = [_Prompt() for _ in items]
        waves: list[dict[str, Any]] = []  # the allocation's prior and stops, wave by wave
        candidates: list[dict[str, Any]] = []
        wave_no = 0
        while True:
            decision = self._allocate(tally, wave_no)
            if decision is not None:
                waves.append(decision)
            plan: list[tuple[int, int]] = []  # (item position, sample index)
            for p, t in enumerate(tally):
                if t.blocked or t.stopped:
                    continue
                for _ in range(self._wanted(t.accepted, t.drawn)):
                    plan.append((p, t.drawn))
                    t.drawn += 1
            if not plan:
                break
            ctx.ledger.waves += 1
            wave_no += 1
            requests = [GenerationRequest.make(items[p].messages, ctx.sampling, k) for p, k in plan]
            wave: list[dict[str, Any]] = []
            owner: dict[int, int] = {}
            async for i, result in ctx.stream(requests):
                p, k = plan[i]
                if not ctx.keep(result):
                    tally[p].blocked = True
                    continue
                tally[p].tokens += (result.tokens_in or 0) + (result.tokens_out or 0)
                tally[p].answered += 1
                record = ctx.candidate(items[p], result, k)
                owner[id(record)] = p
                wave.append(record)
            for record in await ctx.check(wave):
                tally[owner[id(record)]].accepted += 1
            for record in ctx.undecided(wave):
                tally[owner[id(record)]].blocked = True
            candidates.extend(wave)
        self._write_decisions(ctx, items, tally, waves)
        candidates.sort(key=lambda r: (r["seed_index"], r["sample_index"]))
        return records + candidates
