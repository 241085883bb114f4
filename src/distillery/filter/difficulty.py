"""``filters: difficulty``: keep prompts whose pass rate under a given model lies in a band.

Difficulty filtering by the pass rate of a reference policy, as in online data selection for
RL and distillation (e.g. the pass-rate bands of Kimi k1.5, 2025, and of DAPO's dynamic
sampling, Yu et al., 2025): prompts the student always solves teach it nothing new
(``too_easy``), prompts it never solves give no signal it can learn from yet (``too_hard``).

For each prompt (``seed_id``) the model (default the built-in student, in-process) samples
``n`` completions of the record's own chat ``messages``, with the section's ``sampling``
(default temperature 0.7; at temperature 0 all samples are alike and the rate is 0 or 1).
Each completion is checked by the configured verifier (any verifier a recipe may list,
built from its config, e.g. ``{type: python_program, reference: answer}``); the pass rate is
``passes / completions`` over the completions that came back (failed requests are left out).
A prompt is measured once per run: the rate is kept in memory by ``seed_id``, and every
completion goes through the response cache (``<run_dir>/<name>-cache/``), so a re-run
or resume re-measures without calls.

Reasons: ``too_easy: pass rate 1.00 > 0.9``, ``too_hard: pass rate 0.00 < 0.1``,
``student_error: all 8 samples failed (...)``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from distillery.backends.base import GenerationRequest
from distillery.backends.cache import cache_location
from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import BuildContext, Check, Stage, reason_category
from distillery.records import new_record, prompt_text
from distillery.registry import config_field, register
from distillery.verify.model_section import StageBackend, model_section, run_sync


def _default_model() -> Any:
    return model_section({"backend": "transformers", "model": "builtin:student"})


@register("filter")
class DifficultyConfig(StageConfig):
    """Recipe entry of the difficulty band.

    Attributes:
        model: the model whose pass rate is measured, shaped like ``teacher:``; default
            ``{backend: transformers, model: builtin:student}``.
        verifier: the verifier that checks its completions (a verifier entry of a recipe).
        n: completions sampled per prompt.
        low, high: the band of pass rates kept (inclusive).
        cache: response cache folder, or a ``.sqlite`` file (default ``<run_dir>/<name>-cache/``, none outside a run).
    """

    type: Literal["difficulty"] = "difficulty"
    model: Any = Field(default_factory=_default_model)
    verifier: config_field("verifier")  # type: ignore[valid-type]
    n: int = Field(8, ge=1)
    low: float = Field(0.1, ge=0, le=1)
    high: float = Field(0.9, ge=0, le=1)
    cache: str | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, value: Any) -> Any:
        return model_section(value)

    @model_validator(mode="after")
    def _band(self) -> DifficultyConfig:
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        return self

    @property
    def inputs(self) -> tuple[str, ...]:
        """``prompt`` and what its verifier reads."""
        return ("prompt", *self.verifier.inputs)

    def build(self, ctx: BuildContext) -> Stage:
        if self.cache:
            cache: Path | None = Path(ctx.resolve(self.cache))
        elif ctx.run_dir is not None:
            cache = cache_location(Path(ctx.run_dir) / f"{self.stage_name}-cache")
        else:
            cache = None
        return DifficultyFilter(self, StageBackend(self.model, ctx.base_dir, cache, role="difficulty"), self.verifier.build(ctx))


@dataclass
class Measurement:
    """A prompt's measured pass rate: ``passes`` of ``n`` completions; ``failed`` requests left out;
    ``reasons``: categories of the verifier's rejections; ``error``: first request failure."""

    passes: int = 0
    n: int = 0
    failed: int = 0
    reasons: Counter = field(default_factory=Counter)
    error: str | None = None
    transient: bool = False

    @property
    def pass_rate(self) -> float:
        """``passes / n`` (0.0 when nothing came back)."""
        return self.passes / self.n if self.n else 0.0


class DifficultyFilter(Stage):
    """Keeps records whose prompt's pass rate under the model lies in ``[low, high]``.

    Args:
        config: the recipe entry.
        backend: the measured model's (cached) backend.
        verifier: the stage that checks each completion.

    Verdict detail: ``pass_rate``, ``n``, ``passes``, ``failed_requests``, ``band``,
    ``verifier_reasons`` (rejection categories over the completions), ``measured_before``
    (the rate came from this run's memory).
    """

    kind = "filter"
    cost = 2000.0

    def __init__(self, config: DifficultyConfig, backend: StageBackend, verifier: Stage) -> None:
        super().__init__(config.stage_name)
        self.config = config
        self.backend = backend
        self.verifier = verifier
        self.sampling = config.model.sampling.params()
        self.measured: dict[Any, Measurement] = {}
        self._undecided: dict[Any, Measurement] = {}  # measured with transient failures, this batch only

    @staticmethod
    def _prompt_key(record: dict[str, Any]) -> Any:
        return record.get("seed_id") or prompt_text(record)

    async def measure(self, records: list[dict[str, Any]]) -> None:
        """Measure the pass rate of every prompt of ``records`` not measured yet (one call for all)."""
        todo: dict[Any, dict[str, Any]] = {}
        for r in records:
            key = self._prompt_key(r)
            if key not in self.measured and key not in todo:
                todo[key] = r
        if not todo:
            return
        plan = [(key, k) for key in todo for k in range(self.config.n)]
        requests = [GenerationRequest.make(todo[key]["prompt"], self.sampling, k) for key, k in plan]
        results = await self.backend.generate(requests)
        samples: list[dict[str, Any]] = []
        owners: list[Any] = []
        found: dict[Any, Measurement] = defaultdict(Measurement)
        for (key, k), result in zip(plan, results, strict=True):
            m = found[key]
            if result.error_kind is not None or result.text is None:
                m.failed += 1
                m.error = m.error or f"{result.error_kind}: {str(result.error)[:200]}"
                m.transient = m.transient or result.transient
                continue
            source = todo[key]
            samples.append(
                new_record(
                    id=f"{source.get('id')}~{self.name}#{k}",
                    seed_id=source.get("seed_id"),
                    seed=source.get("seed") or {},
                    prompt=source.get("prompt") or [],
                    response=result.text,
                    finish_reason=result.finish_reason,
                    sample_index=k,
                )
            )
            owners.append(key)
        checks = await self.verifier.check_batch_async(samples) if samples else []
        for key, check in zip(owners, checks, strict=True):
            m = found[key]
            m.n += 1
            if check.passed:
                m.passes += 1
            else:
                m.reasons[reason_category(check.reason)] += 1
        for key in todo:
            if not found[key].transient:  # a rate from fewer samples than asked is measured again next run
                self.measured[key] = found[key]
            else:
                self._undecided[key] = found[key]

    def check_batch(self, records: list[dict[str, Any]]) -> list[Check]:
        """Synchronous form (runs its own event loop); the runner uses :meth:`check_batch_async`."""
        return run_sync(self.check_batch_async(records))

    async def check_batch_async(self, records: list[dict[str, Any]]) -> list[Check]:
        self._undecided.clear()
        before = {self._prompt_key(r) for r in records} & set(self.measured)
        await self.measure(records)
        return [self._judge(r, self._prompt_key(r) in before) for r in records]

    def _judge(self, record: dict[str, Any], measured_before: bool) -> Check:
        key = self._prompt_key(record)
        if key in self._undecided:
            m = self._undecided[key]
            return Check(False, f"student_error: {m.failed} of {self.config.n} samples failed ({m.error})", transient=True)
        m = self.measured[key]
        lo, hi = self.config.low, self.config.high
        detail = {
            "pass_rate": round(m.pass_rate, 4),
            "n": m.n,
            "passes": m.passes,
            "failed_requests": m.failed,
            "band": [lo, hi],
            "verifier_reasons": dict(m.reasons),
            "measured_before": measured_before,
        }
        if m.n == 0:
            return Check(False, f"student_error: all {m.failed} samples failed ({m.error})", detail)
        if m.pass_rate > hi:
            return Check(False, f"too_easy: pass rate {m.pass_rate:.2f} > {hi:g}", detail)
        if m.pass_rate < lo:
            return Check(False, f"too_hard: pass rate {m.pass_rate:.2f} < {lo:g}", detail)
        return Check(True, None, detail)

    def close(self) -> None:
        self.backend.close()
        self.verifier.close()
