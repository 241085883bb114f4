"""``generation: {strategy: persona}``: persona-conditioned generation (Persona Hub).

After Ge et al., 2024, "Scaling Synthetic Data Creation with 1,000,000,000 Personas": a pool
of personas (short descriptions of people) steers a teacher into writing varied prompts — the
paper's *persona-to-X* prompting: "create a math problem this persona would face", "a request
this persona would send to an assistant". For each seed and each of ``samples`` samples, one
persona is drawn from the pool (seeded: ``random.Random(f"{seed}-{seed_id}-{sample}")``, so a
re-run draws the same ones), then two calls are made:

1. ``create`` (template named by ``task``: ``math``, ``instruction`` or ``reasoning``) asks
   the teacher to write a prompt for that persona, optionally about the seed's fields (the
   shipped templates use a seed's ``topic`` when it has one);
2. ``respond`` (template ``respond``, default just ``{{ instruction }}``) answers it.

The record's ``prompt`` is the ``respond`` messages (the created instruction: what the student
trains on), its ``response`` the answer; the ``create`` call is in ``steps``. Each record
carries ``persona`` (the text) and ``persona_index`` (its 0-based position in the pool).
Malformed ``create`` output (empty after removing labels, a refusal) is rejected with the raw
text; so is a refused answer. The recipe's ``prompt:`` section is not used.

The pool is a text file (one persona a line; blank lines and ``#`` comments skipped) or JSONL
(``.jsonl`` / ``.jsonl.gz``, one object a line with a ``persona`` string field, as the
Persona Hub release is shaped). The shipped pool (``data/personas.txt``, ~60 personas written
for distillery) is the default.

This module also holds :func:`clean_instruction` (instruction backtranslation uses it) and
:func:`set_response` (the attributes strategy's); the checks every strategy makes are in
:mod:`distillery.generate.checks`, the template helpers in :mod:`distillery.generate.templates`.
"""

from __future__ import annotations

import functools
import gzip
import random
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from distillery.backends.base import GenerationRequest
from distillery.errors import RecipeError
from distillery.generate.candidates import PromptItem, seed_id
from distillery.generate.checks import call_failure, refusal
from distillery.generate.parse import strip_wrapping
from distillery.generate.strategy import GenerationContext, Strategy
from distillery.generate.templates import TemplatedConfig, combined, required_variables
from distillery.io.jsonl import read_objects
from distillery.io.seeds import BadRow, SeedRow
from distillery.records import add_verdict, conversation
from distillery.registry import register

# -- helpers shared with the attributes strategy -------------------------------------------------


def set_response(record: dict[str, Any], text: str, removed: str) -> None:
    """Replace ``record``'s response with ``text`` (its ``completion`` and ``messages`` follow),
    noting the ``removed`` preamble in a passed ``preamble`` verdict."""
    record["response"] = text
    record["completion"], record["messages"] = conversation(record["prompt"], text)
    add_verdict(record, "generate", "preamble", True, {"removed": removed})


# -- the persona pool ---------------------------------------------------------------------------

SHIPPED_POOL = "personas.txt"


def shipped_pool_path() -> Path:
    """The path of the shipped persona pool (``distillery/generate/data/personas.txt``)."""
    return Path(str(resources.files("distillery.generate") / "data" / SHIPPED_POOL))


def load_personas(path: str | Path) -> list[str]:
    """The personas of a pool file, in file order.

    A ``.jsonl`` / ``.jsonl.gz`` file has one JSON object a line with a non-empty ``persona``
    string; any other file has one persona a line. Blank lines (and, in text files, lines
    starting with ``#``) are skipped.

    Raises:
        RecipeError: the file is missing or unreadable, has no persona, or (JSONL) a line is
            not a JSON object with a ``persona`` string (the message names the file and line).
    """
    p = Path(path).expanduser()
    try:
        stat = p.stat()
    except OSError:
        raise RecipeError(f"generation.personas: file not found: {p}") from None
    return list(_read_pool(str(p.resolve()), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _read_pool(path: str, mtime_ns: int, size: int) -> tuple[str, ...]:  # keyed by mtime/size: edits are seen
    jsonl = path.lower().endswith((".jsonl", ".jsonl.gz"))
    opener = gzip.open if path.lower().endswith(".gz") else open
    personas: list[str] = []
    if jsonl:  # one {"persona": "..."} object a line
        for line_no, obj in read_objects(path, "generation.personas"):
            if "persona" not in obj:
                raise RecipeError(f"{path}:{line_no}: no 'persona' field (found: {sorted(obj)[:8]})")
            persona = obj["persona"]
            if not isinstance(persona, str) or not persona.strip():
                raise RecipeError(f"{path}:{line_no}: 'persona' must be a non-empty string")
            personas.append(persona.strip())
    else:  # one persona a line; lines starting with # are comments
        try:
            with opener(path, "rt", encoding="utf-8") as fh:
                personas = [s for s in (line.strip() for line in fh) if s and not s.startswith("#")]
        except (OSError, UnicodeDecodeError) as e:
            raise RecipeError(f"generation.personas: cannot read {path}: {e}") from None
    if not personas:
        raise RecipeError(f"{path}: the persona pool is empty (one persona a line, or JSONL with a 'persona' field)")
    return tuple(personas)


def draw_persona(pool: list[str], seed: int, seed_key: str, sample: int) -> int:
    """The pool index drawn for sample ``sample`` of seed ``seed_key``:
    ``random.Random(f"{seed}-{seed_key}-{sample}").randrange(len(pool))`` (stable across runs,
    machines and batch sizes)."""
    return random.Random(f"{seed}-{seed_key}-{sample}").randrange(len(pool))


_LABEL = re.compile(r"^(?:#+\s*)?\**(?:(?:new|math|word|logic(?:al)?|reasoning)\s+)*(?:problem|request|puzzle)\**\s*[:：]\**\s*", re.I)
_SOLUTION = re.compile(r"\n\s*(?:#+\s*)?\**(?:solution|answer|step[- ]by[- ]step solution)\**\s*[:：]", re.I)


def clean_instruction(text: str | None) -> tuple[str | None, str | None]:
    """The prompt a ``create`` call wrote, without labels (``Problem:``, ``**Request:**``),
    quotes, a fence, or a solution the model added after it.

    Returns:
        ``(instruction, None)`` or ``(None, reason)``: ``refusal: ...``, ``empty_instruction: ...``
        or ``too_short: ...`` (fewer than 3 words).
    """
    if refusal(text, at_start=True):
        return None, "refusal: the teacher declined to write the prompt"
    t = strip_wrapping(text)
    t = _LABEL.sub("", t, count=1).strip()
    m = _SOLUTION.search(t)
    if m:
        t = t[: m.start()].rstrip()
    t = strip_wrapping(t)
    if not t:
        return None, f"empty_instruction: no prompt in {' '.join((text or '').split())[:80]!r}"
    if len(t.split()) < 3:
        return None, f"too_short: the prompt {t[:80]!r} has {len(t.split())} word(s) (< 3)"
    return t, None


# -- the strategy --------------------------------------------------------------------------------

@register("strategy")
class PersonaConfig(TemplatedConfig):
    """Persona-conditioned generation (Ge et al., 2024, "Scaling Synthetic Data Creation with
    1,000,000,000 Personas"; see the module doc).

    Attributes:
        personas: the persona pool file (text: one a line; or ``.jsonl`` with a ``persona``
            field), relative to the recipe's folder; ``None``: the shipped pool.
        task: which ``create`` template writes the prompt: ``math`` (a math word problem the
            persona would face), ``instruction`` (a request the persona would send an
            assistant) or ``reasoning`` (a logic puzzle from the persona's world); override a
            template's text under ``templates`` to make a task of your own.
        samples: personas drawn per seed (one record each; sample indexes ``0..samples-1``).
        seed: seed of the persona draws.
        templates: overrides of ``math``, ``instruction``, ``reasoning``, ``respond``.
    """

    strategy: Literal["persona"] = "persona"
    personas: str | None = None
    task: str = "instruction"
    samples: int = Field(1, ge=1)
    seed: int = 0

    def build(self, recipe: Any) -> Persona:
        return Persona(self, recipe)


class Persona(Strategy):
    """Draws a persona per (seed, sample), has the teacher write a prompt for it, then answer it.

    Raises:
        RecipeError: (on construction) the pool file is missing, empty or malformed, or
            ``task`` names no template.
    """

    config: PersonaConfig
    outputs = {"persona": pa.string(), "persona_index": pa.int64()}
    PROVIDED = frozenset({"persona", "seed"})

    def __init__(self, config: PersonaConfig, recipe: Any) -> None:
        super().__init__(config, recipe)
        self.templates = config.load_templates(recipe.base_dir)
        tasks = sorted(n for n in self.templates if n != "respond")
        if config.task not in tasks:
            raise RecipeError(f"generation.task: {config.task!r} is not a persona task; use one of {', '.join(tasks)}")
        self.create = self.templates[config.task]
        self.respond = self.templates["respond"]
        # the pool is read here (a small file, cached) so that a bad one stops the recipe before any work
        self.pool_path = self._pool_path(config, recipe)
        self.pool = load_personas(self.pool_path)
        self.prompt = combined([self.create, self.respond])

    @staticmethod
    def _pool_path(config: PersonaConfig, recipe: Any) -> Path:
        if config.personas is None:
            return shipped_pool_path()
        p = Path(config.personas).expanduser()
        if not p.is_absolute() and recipe.base_dir is not None:
            p = Path(recipe.base_dir) / p
        return p

    @property
    def inputs(self) -> set[str]:
        return required_variables(self.create, self.PROVIDED) | required_variables(self.respond, self.PROVIDED | {"instruction"})

    def describe(self) -> str:
        c = self.config
        pool = "the shipped pool" if c.personas is None else f"`{c.personas}`"
        return (f"**Generation**: persona-conditioned (Persona Hub, Ge et al., 2024): {c.samples} persona(s) per seed "
                f"drawn from {pool} ({len(self.pool)} personas, seed {c.seed}); the teacher wrote a `{c.task}` prompt "
                "for each persona, then answered it. The record's prompt is the written prompt.")

    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        c = self.config
        plan: list[tuple[SeedRow, str, int, int, list[dict[str, str]]]] = []  # row, seed id, sample, persona index, messages
        records: list[dict[str, Any]] = []
        for row in seeds:
            sid = seed_id(row, ctx.id_field, ctx.source_name)
            for k in range(c.samples):
                index = draw_persona(self.pool, c.seed, sid, k)
                try:
                    messages = self.create.messages({**row.data, "seed": row.data, "persona": self.pool[index]})
                except KeyError as e:
                    records.append(ctx.bad_row(BadRow(row.index, row.line, f"missing_field: {e.args[0]}")))
                    break
                plan.append((row, sid, k, index, messages))
        ctx.prompted += len({p[1] for p in plan})

        creates = [GenerationRequest.make(m, ctx.sampling, k, step="create") for _, _, k, _, m in plan]
        made: dict[int, dict[str, Any]] = {}
        answers: list[tuple[int, PromptItem, dict[str, Any]]] = []  # plan position, respond item, create step
        async for i, result in ctx.stream(creates):
            if not ctx.keep(result):
                continue
            row, sid, k, index, messages = plan[i]
            extra = {"persona": self.pool[index], "persona_index": index}
            instruction, reason = clean_instruction(result.text)
            if call_failure(result, "create", ctx.sampling.max_tokens if ctx.sampling else None) or reason:
                # the record keeps the create call's prompt and raw text; candidate() rejects failed,
                # empty and truncated results itself, reject() the rest
                record = ctx.candidate(PromptItem(row, sid, messages), result, k, **extra)
                made[i] = ctx.reject(record, reason or "", raw=result.text) if reason else record
                continue
            try:
                respond = self.respond.messages({**row.data, "seed": row.data, "persona": self.pool[index],
                                                 "instruction": instruction})
            except KeyError as e:
                record = ctx.candidate(PromptItem(row, sid, messages), result, k, **extra)
                made[i] = ctx.reject(record, f"missing_field: the respond template needs {e.args[0]}")
                continue
            answers.append((i, PromptItem(row, sid, respond), ctx.step("create", creates[i], result)))

        requests = [GenerationRequest.make(item.messages, ctx.sampling, plan[i][2], step="respond") for i, item, _ in answers]
        async for j, result in ctx.stream(requests):
            if not ctx.keep(result):
                continue
            i, item, step = answers[j]
            index = plan[i][3]
            record = ctx.candidate(item, result, plan[i][2], [step], persona=self.pool[index], persona_index=index)
            if record["accepted"] and refusal(result.text, at_start=True):
                ctx.reject(record, "refusal: the teacher declined to answer the prompt it wrote", raw=result.text)
            made[i] = record
        return records + [made[i] for i in sorted(made)]
