"""``generation: {strategy: evol_instruct}``: Evol-Instruct, instructions made harder over
generations, with the paper's elimination step (Xu et al., 2023, "WizardLM: Empowering Large
Language Models to Follow Complex Instructions").

Every seed instruction starts a lineage. In each of ``generations`` rounds, the live
instruction of every lineage is rewritten by the teacher with one operation chosen at random
(seeded per seed and generation, so a re-run picks the same ones):

- in-depth evolving (harder versions of the same task): ``add_constraints``, ``deepen``,
  ``concretize``, ``increase_reasoning``, ``complicate_input``;
- in-breadth evolving (``breadth``): a new instruction of the same domain on a rarer topic.

The rewrite is cleaned (:func:`clean_evolution`: code fences, quotes, a leading
``Instruction:`` or ``#Rewritten Instruction#`` label), then eliminated — a rejected record with
reason ``eliminated: <rule>: ...`` — by the paper's four rules, cheapest first:

1. it copies the evolving prompt's own wording: a marker of the templates (``#Original
   Instruction#``, ``#Rewritten Instruction#``, ... read from the template files, overrides
   included) or one of ``copy_markers`` ("given prompt", "rewritten prompt", ...) appears in it
   (:func:`copied_wording`) — the paper's rule 4; an empty rewrite, one equal to its parent,
   or a refusal is eliminated here too, without a judge call;
2. it adds no information over its parent, as the teacher judges with the ``eliminate``
   template (step ``eliminate-g<n>``; JSON ``{"adds_information": bool}`` or a yes/no answer,
   parsed by :func:`parse_judgement`; an answer that says neither is a rejection with its
   reason, never a crash) — rule 1;
3. its response (``respond: true``, step ``respond-g<n>``) is a refusal — a refusal phrase
   ("sorry", "as an AI", "I cannot", ...: :func:`distillery.generate.checks.refusal`) in fewer
   than ``refusal_max_words`` words (the paper: "sorry" in a response under 80 words) — or
   shorter than ``min_response_words`` words, or nothing but punctuation and stop words
   (:func:`response_problem`) — rules 2 and 3.

A failed call (permanent error, content filter, no text, a rewrite cut off at ``max_tokens``)
eliminates its evolution with :func:`distillery.generate.checks.call_failure`'s reason, which
names the step (``eliminated: empty_response: the evolve-g2 step returned no text``).

A lineage whose evolution is eliminated keeps its parent live for the next generation
(``on_failure: keep_parent``, our reading of the paper: a failed evolution's instruction goes
back to the pool as it was and is evolved again in the next round), or stops (``on_failure: stop``). Verifiers and filters of the recipe run on the
records afterwards like on any record; they do not change the lineages.

Records: one per (seed, generation) evolution attempt, id ``<seed id>#<generation>``
(``sample_index`` = generation, 1-based). The prompt is the evolved instruction (the
``respond`` template, by default the instruction alone, as a user message) and the response is
the teacher's answer to it. ``steps`` holds that generation's ``evolve-g<n>`` and
``eliminate-g<n>`` calls; the earlier generations are reached through ``parent_id``. With
``respond: false`` no answer is generated and no response rule applies: the record is an
evolution pair — prompt the operation's meta-prompt, response the evolved instruction — for
training an instruction evolver.

Output fields: ``parent_id`` (the id of the record this one evolved from, or the seed's id in
generation 1 and while no evolution of the seed has survived), ``root_id`` (the seed's id),
``operation``, ``generation`` (int), ``evolved_instruction``, ``parent_instruction``,
``lineage`` (the operations from the seed to this record, this one's last).

The prompt templates are distillery's own words; a recipe overrides any of them by name
(``generation.templates``): the six operations, ``eliminate`` (which must ask whether the
evolved instruction *adds* information: yes keeps it) and ``respond``.
"""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from distillery.backends.base import GenerationRequest, SamplingParams
from distillery.generate.candidates import PromptItem, seed_id
from distillery.generate.checks import call_failure, refusal, words
from distillery.generate.parse import extract_json, strip_wrapping
from distillery.generate.strategy import GenerationContext, Strategy
from distillery.generate.templates import TemplatedConfig, required_variables
from distillery.io.seeds import BadRow, SeedRow
from distillery.registry import register

Operation = Literal["add_constraints", "deepen", "concretize", "increase_reasoning", "complicate_input", "breadth"]
IN_DEPTH: tuple[str, ...] = ("add_constraints", "deepen", "concretize", "increase_reasoning", "complicate_input")
"""The in-depth operations (harder versions of the same instruction)."""
OPERATIONS: tuple[str, ...] = (*IN_DEPTH, "breadth")
"""Every operation: in-depth, then in-breadth (``breadth``: a new instruction of the same domain)."""

DEFAULT_COPY_MARKERS: tuple[str, ...] = (
    "#given prompt#", "#rewritten prompt#", "given prompt", "rewritten prompt", "original instruction",
    "rewritten instruction",
)
"""Phrases of an evolving prompt a real instruction does not contain (besides the templates' own markers)."""

STOP_WORDS = frozenset(
    "a an the and or but if then else of to in on at by for with from as is are was were be been being it its this "
    "that these those there here i you he she we they me him her us them my your his our their what which who whom "
    "not no yes do does did so than too very can will just also only about into over out up down ok okay".split()
)
"""Stop words for the "nothing but punctuation and stop words" rule (English)."""

_MARKER = re.compile(r"#[A-Za-z][A-Za-z ]{1,40}#")

JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"adds_information": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["adds_information"],
}
"""JSON schema of the ``eliminate`` judge's answer (sent to backends with structured output)."""


# -- the paper's rules, as pure functions ---------------------------------------------------------
def choose_operation(seed: int, seed_id: str, generation: int, operations: list[str] | tuple[str, ...]) -> str:
    """The operation that evolves seed ``seed_id`` in ``generation`` (1-based): a uniform choice
    from ``operations`` with ``random.Random(f"{seed}-{seed_id}-{generation}")`` (the same in
    every run and process).

    Raises:
        ValueError: ``operations`` is empty.
    """
    if not operations:
        raise ValueError("operations is empty")
    return random.Random(f"{seed}-{seed_id}-{generation}").choice(list(operations))


def template_markers(texts: list[str]) -> list[str]:
    """The section markers (``#Original Instruction#``-style words between ``#`` signs) in the
    template ``texts``, lower-cased, first occurrence first."""
    out: list[str] = []
    for text in texts:
        for m in _MARKER.findall(text):
            if m.lower() not in out:
                out.append(m.lower())
    return out


def clean_evolution(text: str | None, markers: list[str] | tuple[str, ...] = ()) -> str:
    """``text`` without what a model wraps an instruction in: a code fence, quotes, a leading
    label (``Instruction:``, ``Rewritten prompt:``) or a leading template marker
    (``#Rewritten Instruction#:``). A marker anywhere else is left for :func:`copied_wording`."""
    t = strip_wrapping(text)
    for _ in range(2):  # a label and a marker can come together
        low = t.lower()
        for marker in sorted(markers, key=len, reverse=True):
            if low.startswith(marker):
                t = strip_wrapping(t[len(marker):].lstrip(" \t:：-*\n"))
                break
        else:
            break
    return t.strip()


def copied_wording(text: str, markers: list[str] | tuple[str, ...]) -> str | None:
    """The first of ``markers`` (lower-case) that ``text`` contains, case-insensitively, or ``None``."""
    low = text.lower()
    for marker in markers:
        if marker and marker in low:
            return marker
    return None


def response_problem(text: str | None, min_words: int = 3, refusal_max_words: int = 80) -> str | None:
    """Why the response to an evolved instruction eliminates it (the paper's rules 2 and 3),
    or ``None``: ``"refusal: ..."``, ``"too_short: ..."`` (fewer than ``min_words`` words),
    ``"no_content: ..."`` (only punctuation and stop words)."""
    ws = words(text)
    if refusal(text, refusal_max_words):
        return f"refusal: the response declines the instruction ({len(ws)} words)"
    if len(ws) < min_words:
        return f"too_short: the response has {len(ws)} word(s) < {min_words}"
    if all(w.lower() in STOP_WORDS for w in ws):
        return "no_content: the response is only punctuation and stop words"
    return None


def evolution_problem(parent: str, evolved: str, markers: list[str] | tuple[str, ...],
                      refusal_max_words: int = 80) -> str | None:
    """Why an evolved instruction is eliminated before any judge (the paper's rule 4 and the
    obvious failures), or ``None``: ``"empty: ..."``, ``"unchanged: ..."``, ``"copied_prompt:
    ..."`` (it contains a marker of the evolving prompt), ``"refusal: ..."``."""
    if not evolved.strip():
        return "empty: the rewrite is empty"
    if " ".join(evolved.lower().split()) == " ".join(parent.lower().split()):
        return "unchanged: the rewrite repeats its parent"
    marker = copied_wording(evolved, markers)
    if marker:
        return f"copied_prompt: the rewrite copies the evolving prompt's wording ({marker!r})"
    if refusal(evolved, refusal_max_words):
        return "refusal: the teacher declined to rewrite the instruction"
    return None


_YES = {"yes": True, "y": True, "true": True, "no": False, "n": False, "false": False}
_JUDGE_KEYS = ("adds_information", "adds_info", "information_gain", "answer", "verdict", "result", "decision")


def parse_judgement(text: str | None) -> tuple[bool | None, str | None]:
    """Whether the ``eliminate`` judge says the evolved instruction adds information.

    Accepts a JSON object (``adds_information`` / ``answer`` / ``verdict`` as a boolean or
    yes/no string, or ``equal``: the inverse), an answer that starts with yes/no/true/false, or
    prose in which only one of "yes" and "no" occurs.

    Returns:
        ``(True | False, None)``, or ``(None, "unparseable_judgement: ...")`` /
        ``(None, "empty_response: ...")``.
    """
    if not text or not text.strip():
        return None, "empty_response: the judge returned no text"
    value, _ = extract_json(text, dict)
    if isinstance(value, dict):
        for key in (*_JUDGE_KEYS, "equal", "same"):
            v = value.get(key)
            if isinstance(v, str):
                v = _YES.get(v.strip().lower().rstrip(".!"))
            if isinstance(v, bool):
                return (not v if key in ("equal", "same") else v), None
    low = text.strip().lower()
    m = re.match(r"^[\W_]*(yes|no|true|false)\b(?!\W*(?:and|or)\W+(?:yes|no)\b)", low)
    if m:
        return _YES[m.group(1)], None
    found = {w for w in re.findall(r"\b(yes|no)\b", low)}
    if len(found) == 1:
        return _YES[found.pop()], None
    shown = " ".join(text.split())[:80]
    return None, f"unparseable_judgement: no yes/no or adds_information in {shown!r}"


# -- shared with the other strategies of this issue (chan.py) --------------------------------------
def rejected_record(ctx: GenerationContext, item: PromptItem, sample_index: int, steps: list[dict[str, Any]],
                    reason: str, raw: str | None = None, response: str | None = None, **outputs: Any) -> dict[str, Any]:
    """A record rejected at stage ``generate`` with ``reason`` (the model's ``raw`` text kept in
    the verdict), built by :meth:`GenerationContext.record` so it has every field."""
    return ctx.record(item, response, sample_index, steps, reject=reason, raw=raw, **outputs)


# -- the strategy ----------------------------------------------------------------------------------
@register("strategy")
class EvolInstructConfig(TemplatedConfig):
    """Evol-Instruct (Xu et al., 2023, "WizardLM"): evolve seed instructions over generations and
    eliminate failed evolutions (see the module doc).

    Attributes:
        instruction_field: the seed field holding the instruction (map another column to it
            with ``seeds.fields``, e.g. ``{instruction: question}``).
        generations: rounds of evolution (the paper: 4).
        operations: the operations to choose from, uniformly (default all: five in-depth and
            ``breadth``).
        seed: seeds the operation choice (:func:`choose_operation`).
        respond: answer every evolved instruction (the record's response, and rule 3's input);
            ``false``: records are (evolve meta-prompt, evolved instruction) pairs.
        min_response_words: a response with fewer words eliminates its instruction.
        refusal_max_words: a response with a refusal phrase and fewer words than this is a
            refusal (the paper: 80).
        on_failure: ``keep_parent`` (an eliminated evolution leaves its parent live for the
            next generation, as in the paper) or ``stop`` (the lineage ends).
        judge_temperature: temperature of the ``eliminate`` judge (``null``: the recipe's).
        copy_markers: phrases whose presence in an evolution means it copied the evolving
            prompt, besides the ``#...#`` markers of the templates.
    """

    strategy: Literal["evol_instruct"] = "evol_instruct"
    instruction_field: str = "instruction"
    generations: int = Field(3, ge=1, le=20)
    operations: list[Operation] = Field(default_factory=lambda: list(OPERATIONS), min_length=1)
    seed: int = 0
    respond: bool = True
    min_response_words: int = Field(3, ge=0)
    refusal_max_words: int = Field(80, ge=1)
    on_failure: Literal["keep_parent", "stop"] = "keep_parent"
    judge_temperature: float | None = Field(0.0, ge=0)
    copy_markers: list[str] = Field(default_factory=lambda: list(DEFAULT_COPY_MARKERS))

    def build(self, recipe: Any) -> EvolInstruct:
        return EvolInstruct(self, recipe)


@dataclass
class _Lineage:
    row: SeedRow
    sid: str
    instruction: str
    parent_id: str
    ops: list[str] = field(default_factory=list)
    alive: bool = True


@dataclass
class _Attempt:
    lineage: _Lineage
    operation: str
    generation: int
    meta: list[dict[str, str]]
    steps: list[dict[str, Any]] = field(default_factory=list)
    evolved: str = ""
    raw: str | None = None


class EvolInstruct(Strategy):
    """Evolves a batch of seed instructions generation by generation (one call per step and
    generation for the whole batch) and records every evolution attempt."""

    config: EvolInstructConfig
    outputs = {
        "parent_id": pa.string(),
        "root_id": pa.string(),
        "operation": pa.string(),
        "generation": pa.int64(),
        "evolved_instruction": pa.string(),
        "parent_instruction": pa.string(),
        "lineage": pa.list_(pa.string()),
    }

    def __init__(self, config: EvolInstructConfig, recipe: Any) -> None:
        super().__init__(config, recipe)
        self.templates = config.load_templates(recipe.base_dir)
        self.prompt = self.templates["respond"]  # what makes a record's prompt (and its prompt_template_hash)
        texts = [(b.system or "") + "\n" + b.template for name, b in self.templates.items() if name in OPERATIONS]
        self.markers = list(dict.fromkeys([*template_markers(texts), *(m.lower() for m in config.copy_markers if m)]))

    @property
    def inputs(self) -> set[str]:
        """The instruction field, and every seed field the operation templates read (they are
        rendered over the seed with ``instruction`` set to the live instruction)."""
        needed = {self.config.instruction_field}
        for op in dict.fromkeys(self.config.operations):
            needed |= required_variables(self.templates[op], {"instruction"})
        return needed

    def describe(self) -> str:
        c = self.config
        then = "an eliminated evolution leaves its parent live" if c.on_failure == "keep_parent" else "an eliminated evolution ends its lineage"
        answer = "each surviving instruction is answered by the teacher" if c.respond else "records pair the evolving prompt with the evolved instruction"
        return (f"**Generation**: Evol-Instruct (Xu et al., 2023): {c.generations} generation(s) of evolving the seed "
                f"instructions with one of {', '.join(c.operations)} each; evolutions that copy the evolving prompt, add "
                f"no information over their parent (teacher-judged) or get a refusal or too short a response are "
                f"eliminated ({then}); {answer}.")

    def _judge_sampling(self, sampling: SamplingParams) -> SamplingParams:
        t = self.config.judge_temperature
        return sampling if t is None else dataclasses.replace(sampling, temperature=t)

    def _outputs(self, a: _Attempt) -> dict[str, Any]:
        lin = a.lineage
        return {
            "parent_id": lin.parent_id, "root_id": lin.sid, "operation": a.operation, "generation": a.generation,
            "evolved_instruction": a.evolved or None, "parent_instruction": lin.instruction, "lineage": [*lin.ops, a.operation],
        }

    def _item(self, a: _Attempt) -> PromptItem:
        if self.config.respond:
            return PromptItem(a.lineage.row, a.lineage.sid, self.templates["respond"].messages({"instruction": a.evolved}))
        return PromptItem(a.lineage.row, a.lineage.sid, a.meta)

    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        c = self.config
        records: list[dict[str, Any]] = []
        lineages: list[_Lineage] = []
        for row in seeds:
            text = row.data.get(c.instruction_field)
            if not isinstance(text, str) or not text.strip():
                records.append(ctx.bad_row(BadRow(row.index, row.line, f"missing_field: {c.instruction_field!r} is empty",
                                                  field=c.instruction_field)))
                continue
            sid = seed_id(row, ctx.id_field, ctx.source_name)
            lineages.append(_Lineage(row, sid, text.strip(), sid))
        ctx.prompted += len(lineages)
        candidates: list[dict[str, Any]] = []
        for g in range(1, c.generations + 1):
            live = [lin for lin in lineages if lin.alive]
            if not live:
                break
            candidates.extend(await self._generation(g, live, ctx))
        candidates.sort(key=lambda r: (r["seed_index"], r["sample_index"]))
        return records + candidates

    async def _generation(self, g: int, live: list[_Lineage], ctx: GenerationContext) -> list[dict[str, Any]]:
        """One round: evolve every live lineage, eliminate, answer; returns the attempts' records."""
        c = self.config
        out: list[dict[str, Any]] = []
        max_tokens = ctx.sampling.max_tokens

        def fail(a: _Attempt, reason: str, raw: str | None = None, response: str | None = None) -> None:
            out.append(rejected_record(ctx, self._item(a), g, a.steps, f"eliminated: {reason}", raw=raw,
                                       response=response, **self._outputs(a)))
            if c.on_failure == "stop":
                a.lineage.alive = False

        def survive(a: _Attempt, record: dict[str, Any]) -> None:
            out.append(record)
            lin = a.lineage
            lin.instruction, lin.parent_id, lin.ops = a.evolved, record["id"], [*lin.ops, a.operation]

        # 1. evolve
        attempts = []
        for lin in live:
            op = choose_operation(c.seed, lin.sid, g, c.operations)
            attempts.append(_Attempt(lin, op, g, self.templates[op].messages({**lin.row.data, "instruction": lin.instruction})))
        requests = [GenerationRequest.make(a.meta, ctx.sampling, g, step=f"evolve-g{g}") for a in attempts]
        judged: list[_Attempt] = []
        for a, request, result in zip(attempts, requests, await ctx.generate(requests), strict=True):
            if not ctx.keep(result):
                a.lineage.alive = False  # transient: the batch is redone by the next run
                continue
            a.steps.append(ctx.step(f"evolve-g{g}", request, result))
            a.raw = result.text
            problem = call_failure(result, f"evolve-g{g}", max_tokens)
            if problem is None:
                a.evolved = clean_evolution(result.text, self.markers)
                problem = evolution_problem(a.lineage.instruction, a.evolved, self.markers, c.refusal_max_words)
            if problem:
                fail(a, problem, raw=result.text)
            else:
                judged.append(a)

        # 2. the judge: does the evolution add information over its parent?
        sampling = self._judge_sampling(ctx.sampling)
        requests = [GenerationRequest.make(self.templates["eliminate"].messages({"parent": a.lineage.instruction, "evolved": a.evolved}),
                                           sampling, g, step=f"eliminate-g{g}", schema=JUDGE_SCHEMA) for a in judged]
        passed: list[_Attempt] = []
        for a, request, result in zip(judged, requests, await ctx.generate(requests), strict=True):
            if not ctx.keep(result):
                a.lineage.alive = False
                continue
            a.steps.append(ctx.step(f"eliminate-g{g}", request, result))
            problem = call_failure(result, f"eliminate-g{g}") if result.error_kind or not (result.text or "").strip() else None
            if problem:
                fail(a, problem, raw=result.text)
                continue
            gain, why = parse_judgement(result.text)
            if gain is None:
                fail(a, why or "unparseable_judgement", raw=result.text)
            elif not gain:
                fail(a, "no_information_gain: the judge found nothing added over the parent", raw=result.text)
            else:
                passed.append(a)

        # 3. answer, and the response rules
        if not c.respond:
            for a in passed:
                survive(a, ctx.record(self._item(a), a.evolved, g, a.steps, **self._outputs(a)))
            return out
        items = [self._item(a) for a in passed]
        requests = [GenerationRequest.make(item.messages, ctx.sampling, g, step=f"respond-g{g}") for item in items]
        for a, item, result in zip(passed, items, await ctx.generate(requests), strict=True):
            if not ctx.keep(result):
                a.lineage.alive = False
                continue
            record = ctx.candidate(item, result, g, a.steps, **self._outputs(a))
            problem = response_problem(result.text, c.min_response_words, c.refusal_max_words) if record["accepted"] else None
            if problem:
                ctx.reject(record, f"eliminated: {problem}", raw=result.text)
            if record["accepted"]:
                survive(a, record)
            else:
                out.append(record)
                if c.on_failure == "stop":
                    a.lineage.alive = False
        return out
