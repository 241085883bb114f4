"""``generation: {strategy: ai_feedback}``: preference pairs from AI feedback (RLAIF / UltraFeedback).

After Lee et al., 2023, "RLAIF: Scaling Reinforcement Learning from Human Feedback with AI
Feedback" and Cui et al., 2023, "UltraFeedback: Boosting Language Models with High-quality
Feedback": several candidate replies per prompt, from one or more teachers, are each rated by a
judge model on named aspects with a rationale per aspect, and the prompt's candidates are
binarized into one (chosen, rejected) pair.

For every prompt (built by the recipe's ``prompt:`` section):

1. ``candidate``: each teacher writes ``samples_per_teacher`` replies — the recipe's
   ``teacher:`` first, then every model under ``teachers:`` (sample indexes ``j * n + i`` for
   teacher ``j``'s ``i``-th reply, so every candidate of a prompt has its own);
2. ``rate``: the judge (``judge:``, default the main teacher) rates each reply on every aspect
   of ``aspects`` (UltraFeedback's four by default: helpfulness, honesty, instruction following,
   truthfulness), 1 to ``scale``, in one call per reply answering JSON
   ``{aspect: {"rating", "rationale"}}`` (:func:`parse_ratings`); a reply's score is the mean
   of its ratings (UltraFeedback's binarized sets use this mean);
3. binarization (:func:`binarize`) by the rule ``binarize``:
   - ``best_vs_random``: the best-scored reply over one drawn at random from those scoring
     lower (UltraFeedback binarized, as Zephyr used it);
   - ``best_vs_worst``: the best over the worst;
   - ``margin``: the best over one drawn at random from those scoring at least ``margin``
     below it (pairs the judge is sure about).
   Ties for best (or worst) are broken at random; the draws are seeded per prompt (``seed``).

Each prompt gives one record (id ``<seed id>#0``): ``prompt`` the recipe's prompt, ``response``
the chosen reply, ``chosen`` / ``rejected`` the pair (:data:`~distillery.records.PREFERENCE_OUTPUTS`,
what ``distillery distill --method dpo`` trains on), and ``ratings`` (JSON: every candidate's
teacher, sample index, per-aspect ratings and rationales, score, or why it was dropped),
``chosen_score``, ``rejected_score``, ``chosen_teacher``, ``rejected_teacher``, ``binarize``.
Every call is in ``steps`` (``candidate-<c>`` and ``rate-<c>`` for candidate ``c``).

A candidate whose call failed, was empty or cut off at ``max_tokens``, that repeats an earlier
candidate of the prompt word for word, or whose ratings do not parse (no JSON, an aspect
missing, a rating out of range) is dropped, with its reason in ``ratings``; a prompt left
without a pair (fewer than two rated candidates, all scores equal, none below the margin) is a
rejected record ``no_pair: ...``. Never a crash.

The judge's prompt (template ``rate``) is distillery's own wording; a recipe overrides it under
``generation.templates`` (it sees ``prompt``, ``response``, ``aspects`` — a list of
``{name, description}`` — ``scale`` and the seed's fields). Letting the teacher judge its own
replies is cheap but biased towards them (self-preference); name another ``judge:`` for data
that matters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, field_validator

from distillery.backends.base import GenerationRequest, GenerationResult, SamplingParams
from distillery.backends.cache import CachedBackend
from distillery.backends.config import TeacherConfig
from distillery.generate.candidates import PromptItem
from distillery.generate.checks import call_failure
from distillery.generate.parse import extract_json, score
from distillery.generate.strategy import GenerationContext, Strategy
from distillery.generate.templates import TemplatedConfig, required_variables
from distillery.io.seeds import SeedRow
from distillery.records import PREFERENCE_OUTPUTS
from distillery.registry import register
from distillery.verify.model_section import StageBackend

DEFAULT_ASPECTS: tuple[str, ...] = ("helpfulness", "honesty", "instruction_following", "truthfulness")
"""UltraFeedback's four fine-grained aspects."""

ASPECT_DESCRIPTIONS: dict[str, str] = {
    "helpfulness": "does the reply meet the user's need — relevant, correct in substance, complete and clearly explained?",
    "honesty": "does the reply show the right amount of confidence, admit what it does not know and avoid misleading the user?",
    "instruction_following": "does the reply do what the request asks, within its constraints, format and scope, and nothing else?",
    "truthfulness": "are the reply's statements factually correct, free of invented details and consistent with the request?",
}
"""Our own descriptions of the default aspects, shown to the judge (``aspect_descriptions`` adds or replaces)."""

RULES = ("best_vs_random", "best_vs_worst", "margin")
"""The binarization rules (see :func:`binarize`)."""

_RATING_KEYS = ("rating", "score", "value", "grade")
_RATIONALE_KEYS = ("rationale", "reason", "explanation", "justification", "comment")
_NESTS = ("ratings", "scores", "evaluation", "aspects", "assessment")


def aspect_key(name: str) -> str:
    """``name`` as an aspect key: lower case, runs of other characters as ``_``
    (``"Instruction Following"`` -> ``instruction_following``)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _rating(value: Any, scale: int) -> tuple[float | None, str | None]:
    if isinstance(value, bool):
        return None, "wrong_type: a rating is a boolean"
    if isinstance(value, int | float):
        return float(value), None
    if isinstance(value, str):
        return score(value, 1, scale)
    return None, f"wrong_type: a rating is {type(value).__name__}"


def parse_ratings(text: str | None, aspects: list[str] | tuple[str, ...], scale: int = 5
                  ) -> tuple[dict[str, dict[str, Any]] | None, str | None]:
    """The judge's per-aspect ratings of one reply.

    Accepts a JSON object (the whole answer, a fenced block, or the first object in prose)
    mapping each aspect — keys matched by :func:`aspect_key`, so ``"Instruction Following"``
    is ``instruction_following`` — to ``{"rating": n, "rationale": "..."}`` (also ``score`` /
    ``reason`` / ``explanation``), to a bare number, or to a string such as ``"4/5"``; the
    object may sit under ``ratings`` / ``scores`` / ``evaluation``.

    Args:
        text: the judge's answer.
        aspects: the aspect keys to find (every one is required).
        scale: ratings must lie in ``[1, scale]``.

    Returns:
        ``({aspect: {"rating": float, "rationale": str}}, None)``, or ``(None, reason)``:
        ``empty_response``, ``malformed_json``, ``missing_aspect: <name>``, ``wrong_type: ...``,
        ``no_score: ...`` or ``rating_out_of_range: <name>=<value> not in [1, scale]``.
    """
    obj, reason = extract_json(text, dict)
    if reason:
        return None, reason
    table = {aspect_key(str(k)): v for k, v in obj.items()}
    if not any(a in table for a in aspects):
        for nest in _NESTS:
            inner = table.get(nest)
            if isinstance(inner, dict):
                table = {aspect_key(str(k)): v for k, v in inner.items()}
                break
    out: dict[str, dict[str, Any]] = {}
    for aspect in aspects:
        if aspect not in table or table[aspect] is None:
            return None, f"missing_aspect: {aspect} (keys: {sorted(table)[:8]})"
        entry = table[aspect]
        rationale = ""
        if isinstance(entry, dict):
            fields = {aspect_key(str(k)): v for k, v in entry.items()}
            raw = next((fields[k] for k in _RATING_KEYS if k in fields), None)
            if raw is None:
                return None, f"missing_aspect: {aspect} has no rating (keys: {sorted(fields)[:8]})"
            why = next((fields[k] for k in _RATIONALE_KEYS if k in fields), "")
            rationale = why.strip() if isinstance(why, str) else json.dumps(why)
        else:
            raw = entry
        value, problem = _rating(raw, scale)
        if problem:
            return None, f"{problem} (aspect {aspect})"
        if not 1 <= value <= scale:  # type: ignore[operator]
            return None, f"rating_out_of_range: {aspect}={value:g} not in [1, {scale}]"
        out[aspect] = {"rating": value, "rationale": rationale}
    return out, None


def overall(ratings: dict[str, dict[str, Any]]) -> float:
    """A reply's score: the mean of its aspect ratings (UltraFeedback's binarization)."""
    return sum(r["rating"] for r in ratings.values()) / len(ratings)


def binarize(scores: list[float], rule: str, margin: float = 1.0, rng: random.Random | None = None
             ) -> tuple[tuple[int, int] | None, str | None]:
    """The (chosen, rejected) positions in ``scores`` by ``rule``.

    Args:
        scores: the rated candidates' scores (higher is better).
        rule: ``best_vs_random`` (the best over a random one that scores lower),
            ``best_vs_worst`` (the best over the worst) or ``margin`` (the best over a random
            one scoring at least ``margin`` below it).
        margin: the least gap of rule ``margin``.
        rng: draws for ties and the random pick (default ``random.Random(0)``).

    Returns:
        ``((chosen, rejected), None)``, or ``(None, "no_pair: ...")`` when fewer than two
        candidates were rated, every score is equal, or (``margin``) none is far enough below
        the best.

    Raises:
        ValueError: an unknown ``rule``.
    """
    if rule not in RULES:
        raise ValueError(f"unknown binarize rule {rule!r}; use one of {', '.join(RULES)}")
    rng = rng or random.Random(0)
    if len(scores) < 2:
        return None, f"no_pair: {len(scores)} rated candidate(s), a pair needs 2"
    best = max(scores)
    low = min(scores)
    if best == low:
        return None, f"no_pair: all {len(scores)} rated candidates score {best:g}"
    chosen = rng.choice([i for i, s in enumerate(scores) if s == best])
    if rule == "best_vs_worst":
        return (chosen, rng.choice([i for i, s in enumerate(scores) if s == low])), None
    gap = 0.0 if rule == "best_vs_random" else margin
    pool = [i for i, s in enumerate(scores) if s < best and best - s >= gap]
    if not pool:
        return None, f"no_pair: no candidate scores {margin:g} or more below the best ({best:g}; lowest {low:g})"
    return (chosen, rng.choice(pool)), None


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


@register("strategy")
class AIFeedbackConfig(TemplatedConfig):
    """AI-feedback preference pairs (Lee et al., 2023, RLAIF; Cui et al., 2023, UltraFeedback;
    see the module doc).

    Attributes:
        samples_per_teacher: replies each teacher writes per prompt.
        teachers: more teachers beside the recipe's ``teacher:`` (sections shaped like it,
            each with its own ``sampling``); UltraFeedback draws from a pool of models.
        judge: the rating model (a ``teacher:``-shaped section); ``null``: the main teacher
            (biased towards its own replies).
        aspects: the aspects rated (keys as :func:`aspect_key` makes them).
        aspect_descriptions: what each aspect means, shown to the judge (the four defaults have
            descriptions; others are shown by name unless described here).
        scale: ratings run from 1 to 5 or 1 to 10.
        binarize: ``best_vs_random``, ``best_vs_worst`` or ``margin``.
        margin: least score gap of the ``margin`` rule (in rating points).
        seed: seeds ties and random picks, per prompt.
        judge_temperature: the judge's temperature (``null``: its sampling's own).
    """

    strategy: Literal["ai_feedback"] = "ai_feedback"
    samples_per_teacher: int = Field(2, ge=1, le=64)
    teachers: list[TeacherConfig] = Field(default_factory=list)
    judge: TeacherConfig | None = None
    aspects: list[str] = Field(default_factory=lambda: list(DEFAULT_ASPECTS), min_length=1)
    aspect_descriptions: dict[str, str] = Field(default_factory=dict)
    scale: Literal[5, 10] = 5
    binarize: Literal["best_vs_random", "best_vs_worst", "margin"] = "best_vs_random"
    margin: float = Field(1.0, gt=0)
    seed: int = 0
    judge_temperature: float | None = Field(0.0, ge=0)

    @field_validator("aspects")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        keys = [aspect_key(a) for a in value]
        if any(not k for k in keys):
            raise ValueError("an aspect name has no letters or digits")
        if len(set(keys)) != len(keys):
            raise ValueError(f"aspects repeat: {value}")
        return keys

    def build(self, recipe: Any) -> AIFeedback:
        return AIFeedback(self, recipe)


@dataclass
class _Candidate:
    position: int
    teacher: str
    sample_index: int
    request: GenerationRequest
    result: GenerationResult | None = None
    text: str = ""
    ratings: dict[str, dict[str, Any]] | None = None
    score: float | None = None
    dropped: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"candidate": self.position, "teacher": self.teacher, "sample_index": self.sample_index,
                "ratings": self.ratings, "score": self.score, "dropped": self.dropped}


class AIFeedback(Strategy):
    """Writes candidates with every teacher, rates them with the judge and binarizes each
    prompt's candidates into one preference record."""

    config: AIFeedbackConfig
    outputs = {
        **PREFERENCE_OUTPUTS,
        "ratings": pa.string(),
        "chosen_score": pa.float64(),
        "rejected_score": pa.float64(),
        "chosen_teacher": pa.string(),
        "rejected_teacher": pa.string(),
        "binarize": pa.string(),
    }

    def __init__(self, config: AIFeedbackConfig, recipe: Any) -> None:
        super().__init__(config, recipe)
        self.templates = config.load_templates(recipe.base_dir)
        self.aspects = [{"name": a, "description": config.aspect_descriptions.get(a, ASPECT_DESCRIPTIONS.get(a, ""))}
                        for a in config.aspects]
        self._extra: list[StageBackend] | None = None  # opened on first use
        self._judge: StageBackend | None = None

    @property
    def inputs(self) -> set[str]:
        """The recipe prompt's fields and any seed field an (overridden) ``rate`` template reads."""
        return set(self.prompt.variables) | required_variables(self.templates["rate"], {"prompt", "response", "aspects", "scale"})

    def describe(self) -> str:
        c = self.config
        models = [self.recipe.teacher.model if self.recipe.teacher else "the teacher", *(t.model for t in c.teachers)]
        judge = f"`{c.judge.model}`" if c.judge else "the main teacher itself (self-judging favours its own replies)"
        rule = {"best_vs_random": "the best over a random lower-scored one",
                "best_vs_worst": "the best over the worst",
                "margin": f"the best over a random one at least {c.margin:g} points below it"}[c.binarize]
        return (f"**Generation**: AI-feedback preferences (RLAIF, Lee et al., 2023; UltraFeedback, Cui et al., 2023): "
                f"{c.samples_per_teacher} candidate(s) per prompt from each of {', '.join(f'`{m}`' for m in models)}, "
                f"each rated 1-{c.scale} on {', '.join(c.aspects)} by {judge}; binarized as {rule}.")

    # -- backends ---------------------------------------------------------------------------------
    def _open(self, ctx: GenerationContext) -> None:
        if self._extra is not None:
            return
        cache = ctx.backend.cache.path if isinstance(ctx.backend, CachedBackend) else None
        base = self.recipe.base_dir
        self._extra = [StageBackend(t, base, cache, role="teacher") for t in self.config.teachers]
        self._judge = StageBackend(self.config.judge, base, cache, role="judge") if self.config.judge else None

    async def _call(self, ctx: GenerationContext, backend: StageBackend | None,
                    requests: list[GenerationRequest]) -> list[GenerationResult]:
        if backend is None:
            return await ctx.generate(requests)
        if not requests:
            return []
        started = time.perf_counter()
        try:
            results = await backend.generate(requests)
        finally:
            ctx.ledger.seconds += time.perf_counter() - started
        for result in results:
            ctx.ledger.count(result)
        return results

    def close(self) -> None:
        for backend in [*(self._extra or []), *([self._judge] if self._judge else [])]:
            backend.close()
        self._extra, self._judge = None, None

    def _judge_sampling(self, ctx: GenerationContext) -> SamplingParams:
        base = self.config.judge.sampling.params() if self.config.judge else ctx.sampling
        t = self.config.judge_temperature
        return base if t is None else dataclasses.replace(base, temperature=t)

    def _schema(self) -> dict[str, Any]:
        entry = {"type": "object", "properties": {"rating": {"type": "integer", "minimum": 1, "maximum": self.config.scale},
                                                  "rationale": {"type": "string"}}, "required": ["rating", "rationale"]}
        return {"type": "object", "properties": {a: entry for a in self.config.aspects}, "required": list(self.config.aspects)}

    # -- generation --------------------------------------------------------------------------------
    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        c = self.config
        self._open(ctx)
        items, records = ctx.prompts(seeds)
        n = c.samples_per_teacher
        teachers: list[tuple[str, StageBackend | None, SamplingParams]] = [(ctx.backend.model if ctx.backend else "teacher", None, ctx.sampling)]
        teachers += [(t.model, b, t.sampling.params()) for t, b in zip(c.teachers, self._extra or [], strict=True)]

        # 1. candidates from every teacher (concurrently)
        cands: list[list[_Candidate]] = [[] for _ in items]
        plans: list[list[tuple[int, _Candidate]]] = []
        for j, (model, _, sampling) in enumerate(teachers):
            plan = []
            for p, item in enumerate(items):
                for i in range(n):
                    k = j * n + i
                    cand = _Candidate(len(cands[p]), model, k, GenerationRequest.make(item.messages, sampling, k, step="candidate"))
                    cands[p].append(cand)
                    plan.append((p, cand))
            plans.append(plan)
        answers = await asyncio.gather(*(self._call(ctx, b, [cand.request for _, cand in plan])
                                         for (_, b, _), plan in zip(teachers, plans, strict=True)))
        blocked = [False] * len(items)  # a transient failure: the prompt waits for the next run
        for plan, results in zip(plans, answers, strict=True):
            for (p, cand), result in zip(plan, results, strict=True):
                if not ctx.keep(result):
                    blocked[p] = True
                    continue
                cand.result = result
                cand.steps.append(ctx.step(f"candidate-{cand.position}", cand.request, result))
                cand.dropped = call_failure(result, f"candidate-{cand.position}", cand.request.sampling.max_tokens)
                cand.text = (result.text or "").strip()
        for group in cands:
            seen: dict[str, int] = {}
            for cand in group:
                if cand.dropped is None and cand.result is not None:
                    first = seen.setdefault(_norm(cand.text), cand.position)
                    if first != cand.position:
                        cand.dropped = f"duplicate: the same text as candidate {first}"

        # 2. the judge rates every usable candidate
        sampling = self._judge_sampling(ctx)
        schema = self._schema()
        rated = [(p, cand) for p in range(len(items)) if not blocked[p]
                 for cand in cands[p] if cand.dropped is None and cand.result is not None]
        requests = [GenerationRequest.make(self.templates["rate"].messages({
            **items[p].row.data, "prompt": _request_text(items[p]), "response": cand.text,
            "aspects": self.aspects, "scale": c.scale}), sampling, cand.sample_index, step="rate", schema=schema)
            for p, cand in rated]
        results = await self._call(ctx, self._judge, requests)
        for (p, cand), request, result in zip(rated, requests, results, strict=True):
            if not ctx.keep(result):
                blocked[p] = True
                continue
            cand.steps.append(ctx.step(f"rate-{cand.position}", request, result))
            problem = call_failure(result, f"rate-{cand.position}", sampling.max_tokens)
            if problem is None:
                cand.ratings, problem = parse_ratings(result.text, c.aspects, c.scale)
            if problem:
                cand.dropped = f"unparseable_ratings: {problem}"
                cand.ratings = None
            else:
                cand.score = round(overall(cand.ratings), 6)  # type: ignore[arg-type]

        # 3. binarize each prompt's candidates
        out: list[dict[str, Any]] = []
        for p, item in enumerate(items):
            if blocked[p]:
                continue
            group = cands[p]
            steps = [s for cand in group for s in cand.steps]
            ratings = json.dumps([cand.summary() for cand in group], ensure_ascii=False)
            scored = [cand for cand in group if cand.score is not None]
            pair, reason = binarize([cand.score for cand in scored], c.binarize, c.margin,  # type: ignore[misc]
                                    random.Random(f"{c.seed}-{item.seed_id}"))
            if pair is None:
                dropped = len(group) - len(scored)
                why = f"{reason} ({dropped} of {len(group)} candidates dropped)" if dropped else reason
                out.append(ctx.record(item, None, 0, steps, reject=why, ratings=ratings, binarize=c.binarize))
                continue
            good, bad = scored[pair[0]], scored[pair[1]]
            out.append(ctx.record(
                item, good.text, 0, steps,
                chosen=[{"role": "assistant", "content": good.text}], rejected=[{"role": "assistant", "content": bad.text}],
                ratings=ratings, chosen_score=good.score, rejected_score=bad.score,
                chosen_teacher=good.teacher, rejected_teacher=bad.teacher, binarize=c.binarize))
        return records + out


def _request_text(item: PromptItem) -> str:
    """The user's request: the prompt's last user message."""
    return next((m["content"] for m in reversed(item.messages) if m["role"] == "user"), "")
