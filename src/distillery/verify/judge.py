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
retries), ``bad_reference`` (the seed lacks the reference field), ``outvoted`` (several judges).

A judge you can trust (Zheng et al., 2023, list the biases: position, verbosity,
self-enhancement; the measures are ours):

- **Self-preference**: a judge that is the teacher model grades its own outputs.
  :func:`check_self_judging` (called when a recipe is checked) refuses such a recipe unless the
  judge sets ``allow_self_judging: true``, and then returns a warning for the card.
- **Formatting**: with ``normalize_format: true`` the answers are stripped of Markdown
  (:func:`~distillery.verify.judge_parse.strip_markdown`) before the judge sees them.
- **Several judges**: ``judges: [model sections]`` asks each (a panel), and ``combine`` merges
  their verdicts: ``majority`` (more than half must pass), ``all`` (every one), or ``mean``
  (the mean score, or mean win rate, against the threshold).
- **Run-level bias in the report**: each batch adds its counts to the stage's
  ``StageStats.summary`` (calls, cache hits, rubric scores; pairwise comparisons, order
  consistency, first-position picks, wins of the longer answer), whose rates reach
  ``report.json`` under ``stages[].summary.rates`` (``consistency_rate``,
  ``first_position_rate``, ``longer_wins_rate``, ``mean_score``, ``pass_rate``).
- **Calibration**: ``calibration: file.jsonl`` holds human verdicts (rubric: ``{prompt,
  response, label: pass|fail}`` or a numeric ``label`` score, passing at ``threshold``;
  pairwise: ``{prompt, answer_a, answer_b, label: a|b|tie}``; optional ``seed`` mapping for
  templates using seed fields). Before its first batch the stage judges the set (through its
  cached backends, so a re-run pays nothing), computes agreement and Cohen's kappa
  (:func:`~distillery.verify.judge_parse.cohen_kappa`), records them in the summary
  (``calibration``), and refuses to run (:class:`~distillery.errors.RecipeError` with the
  figures) when kappa is below ``min_kappa``.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
from pydantic import Field, field_validator, model_validator

from distillery.backends.base import GenerationRequest, GenerationResult
from distillery.backends.cache import cache_location
from distillery.errors import BackendError, RecipeError
from distillery.io.jsonl import read_objects
from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import BuildContext, Check, Stage
from distillery.records import prompt_text
from distillery.registry import register
from distillery.verify.judge_parse import (
    PairwiseBias,
    agreement,
    cohen_kappa,
    combine_verdicts,
    parse_score,
    parse_verdict,
    strip_markdown,
    win_rate,
)
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
_CALIBRATION_FIELD = "__calibration_answer_b"
_JUDGE_DEFAULTS = {"sampling": {"temperature": 0.0, "max_tokens": 512}}
log = logging.getLogger(__name__)


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
            none outside a run; judge ``k`` of a panel uses ``<cache>-k`` for ``k >= 1``).
        allow_self_judging: accept a judge that is the teacher model (see :func:`check_self_judging`).
        normalize_format: strip Markdown from the answers before judging.
        judges: a panel of judge models (each shaped like ``model``), instead of ``model``.
        combine: how a panel's verdicts are merged: ``majority``, ``mean`` or ``all``.
        calibration: JSONL file of human verdicts (see the module doc), relative to the recipe.
        min_kappa: refuse to run when the judge's Cohen's kappa on ``calibration`` is below it.
    """

    type: Literal["judge"] = "judge"
    mode: Literal["rubric", "pairwise"] = "rubric"
    model: Any = None
    system: str | None = None
    template: str | None = None
    threshold: float = 7.0
    min_score: float = 1.0
    max_score: float = 10.0
    reference: str | None = None
    min_win_rate: float = Field(0.5, ge=0, le=1)
    cache: str | None = None
    allow_self_judging: bool = False
    normalize_format: bool = False
    judges: list[Any] | None = None
    combine: Literal["majority", "mean", "all"] = "majority"
    calibration: str | None = None
    min_kappa: float | None = Field(None, ge=-1, le=1)

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, value: Any) -> Any:
        return None if value is None else model_section(value, _JUDGE_DEFAULTS)

    @field_validator("judges", mode="before")
    @classmethod
    def _judges(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            raise ValueError("judges: a non-empty list of model sections")
        return [model_section(v, _JUDGE_DEFAULTS) for v in value]

    @property
    def models(self) -> list[Any]:
        """The judge models: ``judges``, or ``[model]``."""
        return list(self.judges) if self.judges else [self.model]

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
        if (self.model is None) == (self.judges is None):
            raise ValueError("set model (one judge) or judges (a panel), not both" if self.model is not None
                             else "model is required (or judges: a list of model sections)")
        if self.min_kappa is not None and self.calibration is None:
            raise ValueError("min_kappa needs a calibration file (calibration: human verdicts, JSONL)")
        return self

    def check_recipe(self, recipe: Any, where: str) -> list[str]:
        """Refuse a judge that is the recipe's teacher (self-preference: a model grades its own
        outputs more kindly; Zheng et al., 2023) unless ``allow_self_judging``; then warn.

        The same ``model`` name with the same ``backend`` (and, for ``openai``, the same
        ``base_url``, a trailing slash aside) is the same model; every judge of a panel is checked.

        Raises:
            RecipeError: a judge is the teacher and ``allow_self_judging`` is not set; names both.
        """
        teacher = getattr(recipe, "teacher", None)
        if teacher is None:
            return []
        warnings: list[str] = []
        for model in self.models:
            if not _same_model(model, teacher):
                continue
            said = (f"{where} ({self.stage_name}): the judge model {model.model!r} ({model.backend}, {model.base_url}) "
                    f"is the teacher model {teacher.model!r} ({teacher.backend}, {teacher.base_url}): it grades its own "
                    "outputs (self-preference)")
            if not self.allow_self_judging:
                raise RecipeError(f"{said}; use another judge model, or set allow_self_judging: true to accept it")
            warnings.append(f"{said}; allowed by allow_self_judging: true, so its verdicts may favour the teacher")
            log.warning(warnings[-1])
        return warnings

    def build(self, ctx: BuildContext) -> Stage:
        """The stage (its calibration file, if any, is read now and judged before the first batch).

        Raises:
            RecipeError: the calibration file is missing or malformed.
        """
        if self.cache:
            cache: Path | None = Path(ctx.resolve(self.cache))
        elif ctx.run_dir is not None:
            cache = cache_location(Path(ctx.run_dir) / f"{self.stage_name}-cache")
        else:
            cache = None
        backends = []
        for k, model in enumerate(self.models):
            where = cache if cache is None or k == 0 else cache.with_name(f"{cache.name}-{k}")
            backends.append(StageBackend(model, ctx.base_dir, where, role="judge"))
        calibration = load_calibration(Path(ctx.resolve(self.calibration)), self.mode) if self.calibration else None
        return JudgeStage(self, backends, calibration)


def _same_model(a: Any, b: Any) -> bool:
    """Whether two model sections name the same model on the same server (or in-process backend)."""
    if a is None or b is None or a.model != b.model or a.backend != b.backend:
        return False
    if a.backend == "openai":
        return (a.base_url or "").rstrip("/") == (b.base_url or "").rstrip("/")
    return True


def load_calibration(path: Path, mode: str) -> list[dict[str, Any]]:
    """The human verdicts of a calibration file (JSONL; see the module doc), each with its
    normalised ``label``: ``pass``/``fail`` or a float score (rubric), ``a``/``b``/``tie`` (pairwise).

    Raises:
        RecipeError: the file is missing or empty, or a line is not JSON or lacks a field (names the line).
    """
    if not path.exists():
        raise RecipeError(f"judge: calibration: file not found: {path}")
    items: list[dict[str, Any]] = []
    needed = ("prompt", "response", "label") if mode == "rubric" else ("prompt", "answer_a", "answer_b", "label")
    for n, item in read_objects(path, "judge: calibration"):
        missing = [f for f in needed if item.get(f) is None]
        if missing:
            raise RecipeError(f"judge: calibration: {path} line {n}: missing {', '.join(missing)} ({mode} mode needs "
                              f"{', '.join(needed)})")
        label = item["label"]
        if mode == "rubric":
            if isinstance(label, str) and label.strip().lower() in ("pass", "fail"):
                label = label.strip().lower()
            elif isinstance(label, int | float) and not isinstance(label, bool):
                label = float(label)
            else:
                raise RecipeError(f"judge: calibration: {path} line {n}: label {label!r}: pass, fail or a score")
        else:
            label = str(label).strip().lower()
            if label not in ("a", "b", "tie"):
                raise RecipeError(f"judge: calibration: {path} line {n}: label {item['label']!r}: a, b or tie")
        items.append({**item, "label": label, "line": n})
    if not items:
        raise RecipeError(f"judge: calibration: {path} holds no verdicts")
    return items


def _template(source: str, what: str) -> jinja2.Template:
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise RecipeError(f"judge: {what} syntax error on line {e.lineno}: {e.message}") from e


def _short(text: str | None, limit: int = _REPLY_CHARS) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class JudgeStage(Stage):
    """LLM-as-judge verifier (see the module doc for both modes, panels and calibration).

    Args:
        config: the recipe entry.
        backends: the judges' (cached) backends, one per model (a single one is accepted too).
        calibration: the human verdicts of :func:`load_calibration`, judged before the first batch.

    Rubric verdict detail: ``score``, ``threshold``, ``form`` (how the score was read),
    ``reply`` (truncated). Pairwise: ``comparisons`` (each ``other``, ``verdict_candidate_first``,
    ``verdict_candidate_second``, ``outcome``, ``consistent``, ``len_candidate``, ``len_other``,
    ``replies``), ``wins``, ``ties``, ``losses``, ``win_rate``. A panel's detail: ``combine``,
    ``judges`` (each judge's ``model``, ``passed``, ``reason`` and detail) and ``score`` (mean
    score) or ``win_rate`` (mean win rate), ``passed_judges``.
    """

    kind = "verify"
    cost = 1000.0

    def __init__(self, config: JudgeConfig, backends: StageBackend | list[StageBackend],
                 calibration: list[dict[str, Any]] | None = None) -> None:
        super().__init__(config.stage_name)
        self.config = config
        self.backends = backends if isinstance(backends, list) else [backends]
        self.backend = self.backends[0]
        pairwise = config.mode == "pairwise"
        system = config.system if config.system is not None else (PAIRWISE_SYSTEM if pairwise else RUBRIC_SYSTEM)
        template = config.template or (PAIRWISE_TEMPLATE if pairwise else RUBRIC_TEMPLATE)
        self._system = _template(system, "system") if system else None
        self._user = _template(template, "template")
        if pairwise and not config.reference:
            self.scope = "prompt"  # type: ignore[misc]  # needs every candidate of the prompt at once
        self.samplings = [m.sampling.params() for m in config.models]
        self.sampling = self.samplings[0]
        self.bias = PairwiseBias()
        self.calibration_items = calibration
        self.calibration: dict[str, Any] | None = None
        self._rubric_counts: Counter = Counter()

    # -- requests ------------------------------------------------------------------------
    def _text(self, text: str | None) -> str:
        return strip_markdown(text) if self.config.normalize_format else (text or "")

    def _messages(self, record: dict[str, Any], **values: str) -> list[dict[str, str]]:
        seed = dict(record.get("seed") or {})
        env = {**seed, "seed": seed, "prompt": prompt_text(record), **{k: self._text(v) for k, v in values.items()}}
        out = []
        if self._system is not None:
            out.append({"role": "system", "content": self._system.render(**env)})
        out.append({"role": "user", "content": self._user.render(**env)})
        return out

    async def _ask(self, conversations: list[list[dict[str, str]]], judge: int = 0) -> list[GenerationResult]:
        """Judge ``judge``'s replies to ``conversations``, identical ones asked once."""
        keys: dict[tuple, int] = {}
        unique: list[GenerationRequest] = []
        where: list[int] = []
        for messages in conversations:
            request = GenerationRequest.make(messages, self.samplings[judge], 0)
            if request.messages not in keys:
                keys[request.messages] = len(unique)
                unique.append(request)
            where.append(keys[request.messages])
        results = await self.backends[judge].generate(unique) if unique else []
        return [results[i] for i in where]

    # -- the stage -------------------------------------------------------------------------
    def check_batch(self, records: list[dict[str, Any]]) -> list[Check]:
        """Synchronous form (runs its own event loop); the runner uses :meth:`check_batch_async`."""
        return run_sync(self.check_batch_async(records))

    async def check_batch_async(self, records: list[dict[str, Any]]) -> list[Check]:
        """Checks of ``records`` by the judge (or the panel, combined).

        Raises:
            RecipeError: the judge's Cohen's kappa on the calibration set is below ``min_kappa``.
            BackendError: a calibration verdict failed transiently (the next run retries it).
        """
        if self.calibration_items is not None and self.calibration is None:
            await self.calibrate()
        before = asdict(self.bias)
        calls = [(b.calls, b.cache_hits) for b in self.backends]
        per_judge = [await self._judge(records, j) for j in range(len(self.backends))]
        checks = per_judge[0] if len(per_judge) == 1 else [self._combine([c[i] for c in per_judge])
                                                             for i in range(len(records))]
        self._count(checks, before, calls)
        return checks

    async def _judge(self, records: list[dict[str, Any]], judge: int) -> list[Check]:
        if self.config.mode == "rubric":
            return await self._rubric(records, judge)
        if self.config.reference:
            return await self._against_reference(records, judge)
        return await self._among_candidates(records, judge)

    async def _rubric(self, records: list[dict[str, Any]], judge: int = 0) -> list[Check]:
        replies = await self._ask([self._messages(r, response=r.get("response") or "") for r in records], judge)
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

    async def _against_reference(self, records: list[dict[str, Any]], judge: int = 0, field: str | None = None) -> list[Check]:
        field = field or self.config.reference
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
        replies = await self._ask(conversations, judge)
        for k, (i, reference) in enumerate(jobs):
            first, second = replies[2 * k], replies[2 * k + 1]
            comparison = self._compare("reference", records[i].get("response") or "", reference, first, second)
            checks[i] = self._decide([comparison])
        return checks  # type: ignore[return-value]

    async def _among_candidates(self, records: list[dict[str, Any]], judge: int = 0) -> list[Check]:
        groups: dict[Any, list[int]] = defaultdict(list)
        for i, record in enumerate(records):
            groups[record.get("seed_id") or prompt_text(record)].append(i)
        pairs = [(a, b) for members in groups.values() for x, a in enumerate(members) for b in members[x + 1 :]]
        conversations: list[list[dict[str, str]]] = []
        for a, b in pairs:
            ra, rb = records[a].get("response") or "", records[b].get("response") or ""
            conversations.append(self._messages(records[a], answer_a=ra, answer_b=rb))
            conversations.append(self._messages(records[a], answer_a=rb, answer_b=ra))
        replies = await self._ask(conversations, judge)
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

    def _combine(self, checks: list[Check]) -> Check:
        """One check from a panel's checks of the same record (``combine``): any transient or
        failed call, then any unreadable reply, decides first (never a pass)."""
        c = self.config
        judges = [{"model": m.model, "passed": ch.passed, "reason": ch.reason, **ch.detail}
                  for m, ch in zip(c.models, checks, strict=True)]
        detail: dict[str, Any] = {"combine": c.combine, "judges": judges}
        for ch in checks:
            if ch.transient:
                return Check(False, ch.reason, detail, transient=True)
        for prefix in ("judge_error", "judge_unparseable", "bad_reference"):
            for ch in checks:
                if not ch.passed and (ch.reason or "").startswith(prefix):
                    return Check(False, ch.reason, detail)
        passed = sum(ch.passed for ch in checks)
        detail["passed_judges"] = passed
        n = len(checks)
        if c.combine == "mean":
            if c.mode == "rubric":
                value, limit, name = sum(ch.detail["score"] for ch in checks) / n, c.threshold, "score"
                reason = f"low_score: mean {value:.2f} < {limit:g} over {n} judges"
            else:
                rates = [ch.detail.get("win_rate", 1.0) for ch in checks]  # no comparison: a pass
                value, limit, name = sum(rates) / n, c.min_win_rate, "win_rate"
                reason = f"lost_pairwise: mean win rate {value:.2f} < {limit:g} over {n} judges"
            detail[name] = round(value, 4)
            return Check(True, None, detail) if value >= limit else Check(False, reason, detail)
        need = n if c.combine == "all" else n // 2 + 1
        if passed >= need:
            return Check(True, None, detail)
        rule = "all" if c.combine == "all" else "a majority"
        return Check(False, f"outvoted: {passed} of {n} judges passed it, {rule} needed", detail)

    def _count(self, checks: list[Check], before: dict[str, int], calls: list[tuple[int, int]]) -> None:
        """Add this call's figures to the batch's ``stats.summary`` (see :class:`StageStats`)."""
        counts: Counter = Counter()
        counts["calls"] = sum(b.calls - c for b, (c, _) in zip(self.backends, calls, strict=True))
        counts["cache_hits"] = sum(b.cache_hits - h for b, (_, h) in zip(self.backends, calls, strict=True))
        ratios: dict[str, list[str]] = {}
        if self.config.mode == "pairwise":
            for name, value in asdict(self.bias).items():
                counts[f"pairwise_{name}"] = value - before[name]
            ratios = {"consistency_rate": ["pairwise_consistent", "pairwise_comparisons"],
                      "first_position_rate": ["pairwise_first_pick", "pairwise_raw_decisive"],
                      "longer_wins_rate": ["pairwise_longer_won", "pairwise_decisive"]}
        else:
            for ch in checks:
                details = ch.detail.get("judges") or [ch.detail]
                scores = [d.get("score") for d in details if d.get("score") is not None]
                if scores and not ch.transient:
                    counts["rubric_scored"] += 1
                    counts["rubric_score_sum"] += sum(scores) / len(scores)
                    counts["rubric_passed"] += ch.passed
            self._rubric_counts.update(counts)
            ratios = {"mean_score": ["rubric_score_sum", "rubric_scored"], "pass_rate": ["rubric_passed", "rubric_scored"]}
        summary = self.stats.summary
        summary.setdefault("counts", {})
        for name, value in counts.items():
            summary["counts"][name] = summary["counts"].get(name, 0) + value
        summary["ratios"] = ratios
        summary["judges"] = [m.model for m in self.config.models]
        if self.config.normalize_format:
            summary["normalize_format"] = True
        if self.calibration is not None:
            summary["calibration"] = self.calibration

    # -- calibration ---------------------------------------------------------------------
    async def calibrate(self) -> dict[str, Any]:
        """Judge the calibration set and compare with the human labels.

        Returns:
            ``{items, agreement, kappa, min_kappa, labels}`` (``labels``: counts of the human and
            judge labels), also kept in :attr:`calibration` and the report's summary.

        Raises:
            RecipeError: kappa below ``min_kappa`` (or undefined while ``min_kappa`` is set).
            BackendError: a verdict failed transiently.
        """
        items = self.calibration_items or []
        c = self.config
        saved = self.bias
        self.bias = PairwiseBias()  # calibration comparisons are not the run's
        try:
            records = [self._calibration_record(it) for it in items]
            per_judge = [await self._calibration_judge(records, j) for j in range(len(self.backends))]
        finally:
            self.bias = saved
        judge_labels = [self._panel_label([p[i] for p in per_judge]) for i in range(len(items))]
        human = [self._human_label(it["label"]) for it in items]
        kappa = cohen_kappa(human, judge_labels)
        figures = {
            "items": len(items),
            "agreement": round(agreement(human, judge_labels), 4),
            "kappa": None if kappa is None else round(kappa, 4),
            "min_kappa": c.min_kappa,
            "labels": {"human": dict(Counter(human)), "judge": dict(Counter(str(j) for j in judge_labels))},
        }
        self.calibration = figures
        if c.min_kappa is not None and (kappa is None or kappa < c.min_kappa):
            why = "undefined (a single label throughout)" if kappa is None else f"{kappa:.3f} < min_kappa {c.min_kappa:g}"
            raise RecipeError(
                f"judge {self.name}: refusing to run: Cohen's kappa with the human verdicts of {c.calibration} is {why} "
                f"(agreement {figures['agreement']:.3f} on {len(items)} items; human labels {figures['labels']['human']}, "
                f"judge labels {figures['labels']['judge']}); fix the judge (model, template) or lower min_kappa")
        return figures

    def _human_label(self, label: Any) -> str:
        if isinstance(label, float):
            return "pass" if label >= self.config.threshold else "fail"
        return label

    def _calibration_record(self, item: dict[str, Any]) -> dict[str, Any]:
        seed = dict(item.get("seed") or {})
        if self.config.mode == "pairwise":
            seed[_CALIBRATION_FIELD] = str(item["answer_b"])
        return {"id": f"calibration-{item['line']}", "seed_id": f"calibration-{item['line']}", "seed": seed,
                "prompt": [{"role": "user", "content": str(item["prompt"])}],
                "response": str(item.get("response") if self.config.mode == "rubric" else item["answer_a"])}

    async def _calibration_judge(self, records: list[dict[str, Any]], judge: int) -> list[Check]:
        try:
            if self.config.mode == "rubric":
                checks = await self._rubric(records, judge)
            else:
                checks = await self._against_reference(records, judge, _CALIBRATION_FIELD)
        except jinja2.UndefinedError as e:
            raise RecipeError(f"judge {self.name}: calibration: the template needs a field the calibration items lack "
                              f"(give it in each item's seed mapping): {e}") from None
        for ch in checks:
            if ch.transient:
                raise BackendError(f"judge {self.name}: calibration verdict failed transiently: {ch.reason}")
        return checks

    def _label(self, check: Check) -> str | None:
        """A judge's calibration label from its check (``None``: unreadable or failed)."""
        reason = check.reason or ""
        if not check.passed and reason.startswith(("judge_error", "judge_unparseable", "bad_reference")):
            return None
        if self.config.mode == "rubric":
            return "pass" if check.passed else "fail"
        outcome = check.detail["comparisons"][0]["outcome"]
        return {"win": "a", "loss": "b", "tie": "tie"}[outcome]

    def _panel_label(self, checks: list[Check]) -> str | None:
        """The panel's calibration label, combined as its verdicts are (``combine``)."""
        labels = [self._label(ch) for ch in checks]
        if len(labels) == 1 or None in labels:
            return labels[0] if len(labels) == 1 else None
        c = self.config
        if c.mode == "rubric":
            return "pass" if self._combine(checks).passed else "fail"
        if c.combine == "mean":
            value = sum({"a": 1.0, "tie": 0.5, "b": 0.0}[x] for x in labels) / len(labels)  # type: ignore[index]
            return "a" if value > 0.5 else "b" if value < 0.5 else "tie"
        top, count = Counter(labels).most_common(1)[0]
        need = len(labels) if c.combine == "all" else len(labels) // 2 + 1
        return top if count >= need else "tie"

    def summary(self) -> dict[str, Any]:
        """Run-level figures of this stage in this process: judge calls, cache hits, (pairwise)
        position and length bias (:meth:`~distillery.verify.judge_parse.PairwiseBias.to_dict`),
        (rubric) mean score and pass rate, and the calibration figures. The per-batch counts
        reach ``report.json`` through ``stats.summary``."""
        out: dict[str, Any] = {"calls": sum(b.calls for b in self.backends),
                               "cache_hits": sum(b.cache_hits for b in self.backends)}
        if self.config.mode == "pairwise":
            out["pairwise"] = self.bias.to_dict()
        else:
            n = self._rubric_counts["rubric_scored"]
            out["rubric"] = {"scored": n, "mean_score": round(self._rubric_counts["rubric_score_sum"] / n, 4) if n else None,
                             "pass_rate": round(self._rubric_counts["rubric_passed"] / n, 4) if n else None}
        if self.calibration is not None:
            out["calibration"] = self.calibration
        return out

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
