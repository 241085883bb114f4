"""``generation: {strategy: constitutional}``: Constitutional AI's critique-and-revise loop.

After Bai et al., 2022, "Constitutional AI: Harmlessness from AI Feedback" (the supervised
stage): a *constitution* is a short list of principles, each a critique request and a revision
request. For every prompt

1. ``answer``: the teacher answers the prompt (the recipe's ``prompt:`` section builds it, as
   for rejection sampling);
2. for each of ``rounds`` rounds ``n`` a principle is sampled (seeded per seed and round,
   :func:`sample_principle`), then
   - ``critique-r{n}``: the teacher critiques the current reply against the principle's
     critique request (template ``critique``),
   - ``revise-r{n}``: the teacher rewrites the reply following the critique and the
     principle's revision request (template ``revise``); the revision is the next round's reply.

The final revision is the record's response (SFT data, as the paper fine-tunes on revisions);
with ``pairs: true`` the record is also a preference pair, the final revision ``chosen`` over
the original answer ``rejected`` (:data:`~distillery.records.PREFERENCE_OUTPUTS`, what
``distillery distill --method dpo`` trains on). Every call is in the record's ``steps``
(``answer``, ``critique-r1``, ``revise-r1``, ...), and ``principles`` lists the ids of the
principles used, one per round.

A chain is rejected (one rejected record, its raw text kept) when a call fails, is empty or is
cut off at ``max_tokens`` (:func:`distillery.generate.checks.call_failure`, naming the step),
when a critique or a revision opens with a refusal and is short (``refusal: ...``; the paper
wants harmless but *non-evasive* revisions, so a bare refusal is no improvement), when a
revision is empty once its preface is removed, and when a revision repeats the reply it
revises or the final revision repeats the original answer (``unchanged: ...``)
(:func:`critique_problem`, :func:`revision_problem`). A failed round rejects the whole chain:
its earlier revisions are in ``steps``.

The constitution shipped (``distillery/generate/data/constitution.jsonl``, ten principles on
harm, dangerous help, honesty, privacy, fairness, manipulation, legality, wellbeing, respect
and non-evasiveness) and the templates are distillery's own words; a recipe names its own
constitution file with ``constitution:`` (JSON lines ``{"id", "critique", "revision"}``) and
overrides the templates under ``generation.templates``. The templates see ``prompt`` (the
user's request: the last user message), ``response`` (the reply under review),
``critique_request`` / ``revision_request`` (the principle's texts), ``critique`` (revise
only) and the seed's fields.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from distillery.backends.base import GenerationRequest
from distillery.errors import RecipeError
from distillery.generate.candidates import PromptItem
from distillery.generate.checks import call_failure, refusal_phrase, strip_preamble, words
from distillery.generate.parse import strip_wrapping
from distillery.generate.strategy import GenerationContext, Strategy
from distillery.generate.templates import TemplatedConfig, required_variables
from distillery.io.jsonl import read_objects
from distillery.io.seeds import SeedRow
from distillery.records import PREFERENCE_OUTPUTS
from distillery.registry import register

PROVIDED = frozenset({"prompt", "response", "critique_request", "revision_request", "critique"})
"""Template variables the strategy fills (the rest come from the seed)."""


@dataclass(frozen=True)
class Principle:
    """One principle of a constitution.

    Attributes:
        id: a short name, recorded in ``principles``.
        critique: the critique request (what to look for in a reply).
        revision: the revision request (how to rewrite the reply).
    """

    id: str
    critique: str
    revision: str


def shipped_constitution() -> Path:
    """The path of the constitution distillery ships (ten principles, JSON lines)."""
    return Path(str(resources.files("distillery.generate") / "data" / "constitution.jsonl"))


def load_constitution(path: str | Path) -> list[Principle]:
    """The principles of the constitution file ``path``: JSON lines, one object per principle
    with string fields ``id``, ``critique`` and ``revision`` (blank lines and lines starting
    with ``#`` are skipped).

    Raises:
        RecipeError: the file is missing, a line is not such an object, two principles share an
            id, or there is no principle at all (each error names the file and line).
    """
    path = Path(path)
    out: list[Principle] = []
    seen: set[str] = set()
    for n, obj in read_objects(path, "generation.constitution", comments=True):
        for key in ("id", "critique", "revision"):
            if not isinstance(obj.get(key), str) or not obj[key].strip():
                raise RecipeError(f"generation.constitution: {path}:{n}: {key!r} must be a non-empty string")
        pid = obj["id"].strip()
        if pid in seen:
            raise RecipeError(f"generation.constitution: {path}:{n}: duplicate principle id {pid!r}")
        seen.add(pid)
        out.append(Principle(pid, obj["critique"].strip(), obj["revision"].strip()))
    if not out:
        raise RecipeError(f"generation.constitution: {path} has no principle")
    return out


def sample_principle(principles: list[Principle], seed: int, seed_id: str, round_: int) -> Principle:
    """The principle of round ``round_`` (1-based) for seed ``seed_id``: a uniform choice with
    ``random.Random(f"{seed}-{seed_id}-{round_}")``, the same in every run and process (the
    paper samples a principle at random for each critique-revision step).

    Raises:
        ValueError: ``principles`` is empty.
    """
    if not principles:
        raise ValueError("the constitution has no principle")
    return random.Random(f"{seed}-{seed_id}-{round_}").choice(principles)


_LABEL = re.compile(
    r"^(?:#+\s*)?\**\s*(?:(?:the\s+)?(?:revised|improved|rewritten|new|updated|final)\s+(?:reply|response|answer|version)"
    r"|revision)\s*\**\s*[:：]\s*\**\s*", re.I)


def clean_revision(text: str | None) -> str:
    """A revision without what models wrap it in: a chat preface line ("Sure, here is the
    revised reply:"), a leading label (``Revised reply:``, ``**Revision:**``), a code fence or
    surrounding quotes."""
    t, _ = strip_preamble((text or "").strip())
    t = _LABEL.sub("", t.strip(), count=1)
    return strip_wrapping(t).strip()


_BARE = re.compile(r"i\s+(?:cannot|can\s*'?\s*t|can\s+not|won\s*'?\s*t|will\s+not)", re.I)


def declines(text: str | None, max_words: int = 40) -> str | None:
    """The refusal phrase ``text`` opens with, when it has fewer than ``max_words`` words
    (:func:`~distillery.generate.checks.refusal_phrase` with ``at_start``), or ``None``. A bare
    "I cannot" / "I can't" is no refusal here unless a declined verb follows ("I cannot help",
    "I can't provide"): a critique may well begin "I can't see any problem with this reply"."""
    phrase = refusal_phrase(text, max_words, at_start=True)
    if phrase and _BARE.fullmatch(phrase.replace("\u2019", "'")):
        return None
    return phrase


def _same(a: str, b: str) -> bool:
    def norm(s: str) -> str:
        return " ".join(s.lower().split()).rstrip(" .!")
    return norm(a) == norm(b)


def critique_problem(text: str | None, step: str, refusal_max_words: int = 40) -> str | None:
    """Why a critique (already past :func:`~distillery.generate.checks.call_failure`) cannot be
    used, or ``None``: ``empty_response`` (no words) or ``refusal`` (it opens with a refusal
    phrase and has fewer than ``refusal_max_words`` words: :func:`declines`)."""
    if not words(text):
        return f"empty_response: the {step} step returned no words"
    phrase = declines(text, refusal_max_words)
    if phrase:
        return f"refusal: the {step} step declined to critique ({phrase!r})"
    return None


def revision_problem(previous: str, revision: str, step: str, refusal_max_words: int = 40) -> str | None:
    """Why a cleaned revision (:func:`clean_revision`) cannot be used, or ``None``:
    ``empty_response`` (nothing left), ``refusal`` (it opens with a refusal phrase and has
    fewer than ``refusal_max_words`` words: an evasive reply, not a better one) or
    ``unchanged`` (it repeats ``previous``, the reply it revises, ignoring case, spacing and
    final punctuation)."""
    if not words(revision):
        return f"empty_response: the {step} step returned no reply once its preface was removed"
    phrase = declines(revision, refusal_max_words)
    if phrase:
        return f"refusal: the {step} revision is a bare refusal ({phrase!r})"
    if _same(previous, revision):
        return f"unchanged: the {step} revision repeats the reply it revises"
    return None


@register("strategy")
class ConstitutionalConfig(TemplatedConfig):
    """Constitutional AI's critique-and-revise loop (Bai et al., 2022; see the module doc).

    Attributes:
        constitution: a constitution file (JSON lines ``{"id", "critique", "revision"}``,
            relative to the recipe's folder); ``null``: the ten principles distillery ships.
        rounds: critique-revision rounds per prompt (the paper: up to 4; 1 is most of the gain).
        seed: seeds the choice of principle per (seed, round).
        pairs: also make each record a preference pair (final revision chosen over the
            original answer); ``false``: SFT records only (``chosen``/``rejected`` unset).
        refusal_max_words: a critique or revision that opens with a refusal phrase and has
            fewer words than this is rejected as a refusal.
    """

    strategy: Literal["constitutional"] = "constitutional"
    constitution: str | None = None
    rounds: int = Field(1, ge=1, le=10)
    seed: int = 0
    pairs: bool = True
    refusal_max_words: int = Field(40, ge=1)

    def constitution_path(self, base_dir: str | Path | None) -> Path:
        """The constitution file this section names (the shipped one when unset)."""
        if self.constitution is None:
            return shipped_constitution()
        path = Path(self.constitution).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        return path

    def build(self, recipe: Any) -> Constitutional:
        return Constitutional(self, recipe)


@dataclass
class _Chain:
    item: PromptItem
    request: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    original: str = ""
    current: str = ""
    principles: list[str] = field(default_factory=list)
    rounds: int = 0
    alive: bool = True
    critique: str = ""


class Constitutional(Strategy):
    """Answers, critiques and revises a batch of prompts, one call per step and round for the
    whole batch; one record per prompt (id ``<seed id>#0``)."""

    config: ConstitutionalConfig
    outputs = {**PREFERENCE_OUTPUTS, "principles": pa.list_(pa.string()), "rounds": pa.int64()}

    def __init__(self, config: ConstitutionalConfig, recipe: Any) -> None:
        super().__init__(config, recipe)
        self.templates = config.load_templates(recipe.base_dir)
        self.constitution_file = config.constitution_path(recipe.base_dir)
        self.principles = load_constitution(self.constitution_file)

    @property
    def inputs(self) -> set[str]:
        """The recipe prompt's fields and any seed field an (overridden) template reads."""
        needed = set(self.prompt.variables)
        for name in ("critique", "revise"):
            needed |= required_variables(self.templates[name], PROVIDED)
        return needed

    def describe(self) -> str:
        c = self.config
        where = "distillery's constitution" if c.constitution is None else f"the constitution `{c.constitution}`"
        pairs = ("; each record is also a preference pair, the final revision chosen over the original answer"
                 if c.pairs else "")
        return (f"**Generation**: Constitutional AI (Bai et al., 2022): the teacher answers each prompt, then for "
                f"{c.rounds} round(s) critiques its reply against a principle sampled from {where} "
                f"({len(self.principles)} principles) and revises it; the final revision is the response{pairs}. "
                f"Refused, empty or unchanged critiques and revisions are rejected.")

    def _record(self, ctx: GenerationContext, chain: _Chain, reason: str | None = None,
                raw: str | None = None) -> dict[str, Any]:
        pair = self.config.pairs and reason is None
        return ctx.record(
            chain.item, chain.current if reason is None else None, 0, chain.steps, reject=reason, raw=raw,
            chosen=[{"role": "assistant", "content": chain.current}] if pair else None,
            rejected=[{"role": "assistant", "content": chain.original}] if pair else None,
            principles=list(chain.principles), rounds=chain.rounds,
        )

    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        c = self.config
        items, records = ctx.prompts(seeds)
        max_tokens = ctx.sampling.max_tokens if ctx.sampling else None
        chains = [_Chain(item, next((m["content"] for m in reversed(item.messages) if m["role"] == "user"), ""))
                  for item in items]
        out: list[dict[str, Any]] = []

        def fail(chain: _Chain, reason: str, raw: str | None) -> None:
            chain.alive = False
            out.append(self._record(ctx, chain, reason, raw))

        # 1. the original answer
        requests = [GenerationRequest.make(ch.item.messages, ctx.sampling, 0, step="answer") for ch in chains]
        for ch, request, result in zip(chains, requests, await ctx.generate(requests), strict=True):
            if not ctx.keep(result):
                ch.alive = False  # transient: no record; the batch is redone by the next run
                continue
            ch.steps.append(ctx.step("answer", request, result))
            problem = call_failure(result, "answer", max_tokens)
            if problem:
                fail(ch, problem, result.text)
            else:
                ch.original = ch.current = (result.text or "").strip()

        for n in range(1, c.rounds + 1):
            # 2. critique against a sampled principle
            live = [ch for ch in chains if ch.alive]
            if not live:
                break
            chosen = [sample_principle(self.principles, c.seed, ch.item.seed_id, n) for ch in live]
            step = f"critique-r{n}"
            requests = [GenerationRequest.make(self.templates["critique"].messages({
                **ch.item.row.data, "prompt": ch.request, "response": ch.current, "critique_request": p.critique}),
                ctx.sampling, 0, step=step) for ch, p in zip(live, chosen, strict=True)]
            revising: list[tuple[_Chain, Principle]] = []
            for ch, p, request, result in zip(live, chosen, requests, await ctx.generate(requests), strict=True):
                if not ctx.keep(result):
                    ch.alive = False
                    continue
                ch.steps.append(ctx.step(step, request, result))
                ch.principles.append(p.id)
                problem = call_failure(result, step, max_tokens) or critique_problem(result.text, step, c.refusal_max_words)
                if problem:
                    fail(ch, problem, result.text)
                    continue
                ch.critique = (result.text or "").strip()
                revising.append((ch, p))

            # 3. revise following the critique
            step = f"revise-r{n}"
            requests = [GenerationRequest.make(self.templates["revise"].messages({
                **ch.item.row.data, "prompt": ch.request, "response": ch.current, "critique": ch.critique,
                "critique_request": p.critique, "revision_request": p.revision}),
                ctx.sampling, 0, step=step) for ch, p in revising]
            for (ch, _), request, result in zip(revising, requests, await ctx.generate(requests), strict=True):
                if not ctx.keep(result):
                    ch.alive = False
                    continue
                ch.steps.append(ctx.step(step, request, result))
                problem = call_failure(result, step, max_tokens)
                revision = clean_revision(result.text) if problem is None else ""
                problem = problem or revision_problem(ch.current, revision, step, c.refusal_max_words)
                if problem:
                    fail(ch, problem, result.text)
                    continue
                ch.current, ch.rounds = revision, n

        for ch in chains:
            if not ch.alive:
                continue
            if _same(ch.original, ch.current):  # later rounds undid the first one's changes
                fail(ch, f"unchanged: after {ch.rounds} rounds the revision repeats the original answer", ch.current)
            else:
                out.append(self._record(ctx, ch))
        out.sort(key=lambda r: r["seed_index"])
        return records + out
