"""``verifiers: judge``: an LLM as judge, by rubric score or by pairwise comparison.

The judge model is any backend (a ``model:`` section shaped like the recipe's ``teacher:``,
see :mod:`distillery.verify.model_section`); its replies go through the response cache
(``<run_dir>/<stage name>-cache/`` by default), so a re-run never pays for a judgement
twice. Requests of a batch are sent together and run concurrently up to the backend's
``concurrency`` (:meth:`JudgeStage.check_batch_async`). Unless the section sets ``sampling``,
the judge decodes greedily (temperature 0, 512 tokens).

Modes:

- ``rubric``: the judge scores each response on a scale (default 1-10) from a Jinja2 rubric
  over ``prompt``, ``response``, ``seed`` and the seed's fields; scores below ``threshold``
  are rejected (``low_score: 4 < 7``). The score is read by :func:`parse_score`.
- ``pairwise``: the candidate is compared with a reference answer (``reference``: a seed
  field, e.g. the gold solution) or, without one, with every other live candidate of the same
  prompt (then the stage is prompt-scoped). Each pair is judged in both orders and the two
  verdicts are combined as in Zheng et al. (2023), "Judging LLM-as-a-Judge with MT-Bench and
  Chatbot Arena": a win in both orders is a win, a disagreement a tie, cancelling position
  bias (:func:`combine_verdicts`). The candidate's win rate ``(wins + ties/2) / comparisons``
  must reach ``min_win_rate`` (default 0.5: against a reference, a win or a tie passes). Each
  comparison records both raw verdicts, whether they agreed, and both answers' lengths in
  characters (length bias); :meth:`JudgeStage.summary` gives run-level position and length bias.
  In candidates mode a prompt with a single live candidate has nothing to compare and passes
  (``detail.comparisons`` is empty); ``k`` candidates cost ``k * (k - 1)`` judge calls.

A reply that cannot be read is a rejection, never a pass: ``judge_unparseable: ...``. Other
reasons: ``low_score``, ``lost_pairwise``, ``judge_error`` (the backend failed after its
retries), ``bad_reference`` (the seed lacks the reference field).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
from pydantic import Field, field_validator, model_validator

from distillery.backends.base import GenerationRequest, GenerationResult
from distillery.backends.cache import cache_location
from distillery.errors import RecipeError
from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import BuildContext, Check, Stage
from distillery.records import prompt_text
from distillery.registry import register
from distillery.verify.judge_parse import PairwiseBias, combine_verdicts, parse_score, parse_verdict, win_rate
from distillery.verify.model_section import StageBackend, model_section, run_sync

RUBRIC_SYSTEM = "You are a careful, impartial grader of answers to user requests."
RUBRIC_TEMPLATE = """\
Grade the response to the request below. Consider, in this order: whether it is correct, \
whether it fully answers the request, and whether it is clear and concise. A response with \
a wrong final result scores at most 3.

[Request]
{{ prompt }}

[Response]
{{ response }}

First explain your assessment in at most three sentences. Then write the score, an integer \
from 1 (worst) to 10 (best), on the last line exactly as: Score: [[n]]"""

PAIRWISE_SYSTEM = "You are a careful, impartial judge comparing two answers to the same request."
PAIRWISE_TEMPLATE = """\
Compare the two responses to the request below and decide which is better: more correct \
first, then more complete and clearer. The order in which the responses are shown and their \
length must not influence you.

[Request]
{{ prompt }}

[Response A]
{{ answer_a }}

[Response B]
{{ answer_b }}

First explain your comparison in at most three sentences. Then give your verdict on the \
last line exactly as [[A]] if Response A is better, [[B]] if Response B is better, or [[C]] \
for a tie."""

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
_OWN_VARIABLES = {"prompt", "response", "answer_a", "answer_b", "seed"}
_REPLY_CHARS = 300


@register("verifier")
class JudgeConfig(StageConfig):
    """Recipe entry of the LLM judge.

    Attributes:
        mode: ``rubric`` (score each response) or ``pairwise`` (compare, both orders).
        model: the judge model, shaped like ``teacher:`` (``backend``, ``model``, ``base_url``,
            ``concurrency``, ``sampling``...); required.
        system, template: the judge's system message and user message (Jinja2). Defaults:
            :data:`RUBRIC_SYSTEM`/:data:`RUBRIC_TEMPLATE` or :data:`PAIRWISE_SYSTEM`/
            :data:`PAIRWISE_TEMPLATE`. Variables: ``prompt`` (the last user message),
            ``response`` (rubric), ``answer_a``/``answer_b`` (pairwise), ``seed`` and each seed field.
            ``system: ""`` sends no system message.
        threshold: least rubric score that passes; min_score, max_score: the rubric's scale
            (a score outside it is unreadable).
        reference: pairwise: seed field holding the answer to compare with; unset: compare
            with the prompt's other candidates.
        min_win_rate: pairwise: least ``(wins + ties/2) / comparisons`` that passes.
        cache: the judge's response cache (default the folder ``<run_dir>/<name>-cache/``,
            none outside a run).
    """

    type: Literal["judge"] = "judge"
    mode: Literal["rubric", "pairwise"] = "rubric"
    model: Any
    system: str | None = None
    template: str | None = None
    threshold: float = 7.0
    min_score: float = 1.0
    max_score: float = 10.0
    reference: str | None = None
    min_win_rate: float = Field(0.5, ge=0, le=1)
    cache: str | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, value: Any) -> Any:
        return model_section(value, {"sampling": {"temperature": 0.0, "max_tokens": 512}})

    @property
    def inputs(self) -> tuple[str, ...]:
        """``prompt``, and each seed field the templates use (and the pairwise ``reference``)."""
        pairwise = self.mode == "pairwise"
        system = self.system if self.system is not None else (PAIRWISE_SYSTEM if pairwise else RUBRIC_SYSTEM)
        names: set[str] = set()
        for source in (system or "", self.template or (PAIRWISE_TEMPLATE if pairwise else RUBRIC_TEMPLATE)):
            names |= jinja2.meta.find_undeclared_variables(_ENV.parse(source))
        fields = names - _OWN_VARIABLES
        if pairwise and self.reference:
            fields.add(self.reference)
        return ("prompt", *(f"seed.{f}" for f in sorted(fields)))

    @model_validator(mode="after")
    def _scale(self) -> JudgeConfig:
        if self.min_score >= self.max_score:
            raise ValueError(f"min_score {self.min_score} must be below max_score {self.max_score}")
        if self.mode == "rubric" and self.reference is not None:
            raise ValueError("reference is a pairwise option (set mode: pairwise)")
        return self

    def build(self, ctx: BuildContext) -> Stage:
        if self.cache:
            cache: Path | None = Path(ctx.resolve(self.cache))
        elif ctx.run_dir is not None:
            cache = cache_location(Path(ctx.run_dir) / f"{self.stage_name}-cache")
        else:
            cache = None
        return JudgeStage(self, StageBackend(self.model, ctx.base_dir, cache, role="judge"))


def _template(source: str, what: str) -> jinja2.Template:
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise RecipeError(f"judge: {what} syntax error on line {e.lineno}: {e.message}") from e


def _short(text: str | None, limit: int = _REPLY_CHARS) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class JudgeStage(Stage):
    """LLM-as-judge verifier (see the module doc for both modes and the reasons).

    Args:
        config: the recipe entry.
        backend: the judge's (cached) backend.

    Rubric verdict detail: ``score``, ``threshold``, ``form`` (how the score was read),
    ``reply`` (truncated). Pairwise: ``comparisons`` (each ``other``, ``verdict_candidate_first``,
    ``verdict_candidate_second``, ``outcome``, ``consistent``, ``len_candidate``, ``len_other``,
    ``replies``), ``wins``, ``ties``, ``losses``, ``win_rate``.
    """

    kind = "verify"
    cost = 1000.0

    def __init__(self, config: JudgeConfig, backend: StageBackend) -> None:
        super().__init__(config.stage_name)
        self.config = config
        self.backend = backend
        pairwise = config.mode == "pairwise"
        system = config.system if config.system is not None else (PAIRWISE_SYSTEM if pairwise else RUBRIC_SYSTEM)
        template = config.template or (PAIRWISE_TEMPLATE if pairwise else RUBRIC_TEMPLATE)
        self._system = _template(system, "system") if system else None
        self._user = _template(template, "template")
        if pairwise and not config.reference:
            self.scope = "prompt"  # type: ignore[misc]  # needs every candidate of the prompt at once
        self.sampling = config.model.sampling.params()
        self.bias = PairwiseBias()

    # -- requests ------------------------------------------------------------------------
    def _messages(self, record: dict[str, Any], **values: str) -> list[dict[str, str]]:
        seed = dict(record.get("seed") or {})
        env = {**seed, "seed": seed, "prompt": prompt_text(record), **values}
        out = []
        if self._system is not None:
            out.append({"role": "system", "content": self._system.render(**env)})
        out.append({"role": "user", "content": self._user.render(**env)})
        return out

    async def _ask(self, conversations: list[list[dict[str, str]]]) -> list[GenerationResult]:
        """Judge replies to ``conversations``, identical ones asked once."""
        keys: dict[tuple, int] = {}
        unique: list[GenerationRequest] = []
        where: list[int] = []
        for messages in conversations:
            request = GenerationRequest.make(messages, self.sampling, 0)
            if request.messages not in keys:
                keys[request.messages] = len(unique)
                unique.append(request)
            where.append(keys[request.messages])
        results = await self.backend.generate(unique) if unique else []
        return [results[i] for i in where]

    # -- the stage -------------------------------------------------------------------------
    def check_batch(self, records: list[dict[str, Any]]) -> list[Check]:
        """Synchronous form (runs its own event loop); the runner uses :meth:`check_batch_async`."""
        return run_sync(self.check_batch_async(records))

    async def check_batch_async(self, records: list[dict[str, Any]]) -> list[Check]:
        if self.config.mode == "rubric":
            return await self._rubric(records)
        if self.config.reference:
            return await self._against_reference(records)
        return await self._among_candidates(records)

    async def _rubric(self, records: list[dict[str, Any]]) -> list[Check]:
        replies = await self._ask([self._messages(r, response=r.get("response") or "") for r in records])
        c = self.config
        checks = []
        for result in replies:
            if result.error_kind is not None:
                checks.append(Check(False, f"judge_error: {result.error_kind}: {_short(result.error, 200)}",
                                    transient=result.transient))
                continue
            score, form = parse_score(result.text, c.min_score, c.max_score)
            detail: dict[str, Any] = {"score": score, "threshold": c.threshold, "reply": _short(result.text)}
            if score is None:
                checks.append(Check(False, f"judge_unparseable: {form}", detail))
                continue
            detail["form"] = form
            if score < c.threshold:
                checks.append(Check(False, f"low_score: {score:g} < {c.threshold:g}", detail))
            else:
                checks.append(Check(True, None, detail))
        return checks

    async def _against_reference(self, records: list[dict[str, Any]]) -> list[Check]:
        field = self.config.reference
        assert field is not None
        checks: list[Check | None] = [None] * len(records)
        conversations: list[list[dict[str, str]]] = []
        jobs: list[tuple[int, str]] = []
        for i, record in enumerate(records):
            value = (record.get("seed") or {}).get(field)
            if value is None or not str(value).strip():
                checks[i] = Check(False, f"bad_reference: seed field {field!r} is missing or empty")
                continue
            reference, response = str(value), record.get("response") or ""
            conversations.append(self._messages(record, answer_a=response, answer_b=reference))
            conversations.append(self._messages(record, answer_a=reference, answer_b=response))
            jobs.append((i, reference))
        replies = await self._ask(conversations)
        for k, (i, reference) in enumerate(jobs):
            first, second = replies[2 * k], replies[2 * k + 1]
            comparison = self._compare("reference", records[i].get("response") or "", reference, first, second)
            checks[i] = self._decide([comparison])
        return checks  # type: ignore[return-value]

    async def _among_candidates(self, records: list[dict[str, Any]]) -> list[Check]:
        groups: dict[Any, list[int]] = defaultdict(list)
        for i, record in enumerate(records):
            groups[record.get("seed_id") or prompt_text(record)].append(i)
        pairs = [(a, b) for members in groups.values() for x, a in enumerate(members) for b in members[x + 1 :]]
        conversations: list[list[dict[str, str]]] = []
        for a, b in pairs:
            ra, rb = records[a].get("response") or "", records[b].get("response") or ""
            conversations.append(self._messages(records[a], answer_a=ra, answer_b=rb))
            conversations.append(self._messages(records[a], answer_a=rb, answer_b=ra))
        replies = await self._ask(conversations)
        comparisons: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for k, (a, b) in enumerate(pairs):
            ab, ba = replies[2 * k], replies[2 * k + 1]
            ra, rb = records[a].get("response") or "", records[b].get("response") or ""
            comparisons[a].append(self._compare(records[b].get("id"), ra, rb, ab, ba))
            comparisons[b].append(self._compare(records[a].get("id"), rb, ra, ba, ab))
        return [self._decide(comparisons[i]) for i in range(len(records))]

    def _compare(
        self, other: Any, candidate: str, other_text: str, first: GenerationResult, second: GenerationResult
    ) -> dict[str, Any]:
        """One comparison: ``first`` = the reply with the candidate shown as A, ``second`` = as B."""
        comparison: dict[str, Any] = {
            "other": other,
            "len_candidate": len(candidate),
            "len_other": len(other_text),
            "replies": [_short(first.text, 200), _short(second.text, 200)],
        }
        errors = [r for r in (first, second) if r.error_kind is not None]
        if errors:
            comparison["error"] = f"{errors[0].error_kind}: {_short(errors[0].error, 200)}"
            comparison["transient"] = any(r.transient for r in errors)
            return comparison
        v1, v2 = parse_verdict(first.text), parse_verdict(second.text)
        comparison["verdict_candidate_first"], comparison["verdict_candidate_second"] = v1, v2
        if v1 is None or v2 is None:
            which = "candidate first" if v1 is None else "candidate second"
            bad = first.text if v1 is None else second.text
            comparison["unparseable"] = f'no verdict ({which}) in "{_short(" ".join((bad or "").split()), 80)}"'
            return comparison
        comparison["outcome"], comparison["consistent"] = combine_verdicts(v1, v2)
        self.bias.add(comparison)
        return comparison

    def _decide(self, comparisons: list[dict[str, Any]]) -> Check:
        detail: dict[str, Any] = {"comparisons": comparisons}
        for c in comparisons:
            if "error" in c:
                return Check(False, f"judge_error: {c['error']}", detail, transient=c.get("transient", False))
        for c in comparisons:
            if "unparseable" in c:
                return Check(False, f"judge_unparseable: {c['unparseable']}", detail)
        if not comparisons:
            detail["note"] = "no other live candidate of this prompt to compare with"
            return Check(True, None, detail)
        outcomes = [c["outcome"] for c in comparisons]
        wins, ties, losses = (outcomes.count(o) for o in ("win", "tie", "loss"))
        rate = win_rate(outcomes)
        detail.update(wins=wins, ties=ties, losses=losses, win_rate=round(rate, 4))
        if rate < self.config.min_win_rate:
            against = "the reference" if self.config.reference else f"{len(comparisons)} other candidate(s)"
            return Check(
                False,
                f"lost_pairwise: win rate {rate:.2f} < {self.config.min_win_rate:g} "
                f"({wins} win, {ties} tie, {losses} loss vs {against})",
                detail,
            )
        return Check(True, None, detail)

    def summary(self) -> dict[str, Any]:
        """Run-level figures of this stage: judge calls, cache hits and (pairwise) position and
        length bias (:meth:`~distillery.verify.judge_parse.PairwiseBias.to_dict`)."""
        out: dict[str, Any] = {"calls": self.backend.calls, "cache_hits": self.backend.cache_hits}
        if self.config.mode == "pairwise":
            out["pairwise"] = self.bias.to_dict()
        return out

    def close(self) -> None:
        self.backend.close()
