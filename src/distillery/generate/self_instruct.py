"""``generation: {strategy: self_instruct}``: Self-Instruct (Wang et al., 2022, "Self-Instruct:
Aligning Language Models with Self-Generated Instructions").

A task pool starts from human-written seed tasks (the seed file: ``instruction``, optional
``instances`` ``[{input, output}]`` and ``is_classification``; the paper's 175 ship with
distillery in ``distillery/generate/data/self_instruct/seed_tasks.jsonl``, Apache-2.0, see
``recipes/self-instruct.yaml``) and grows in rounds:

1. **Instruction generation.** Each of a round's ``per_round`` requests shows the teacher
   ``in_context_human`` tasks sampled from the seed tasks and ``in_context_machine`` from the
   machine-made tasks already in the pool (the paper: 6 + 2; human ones fill in while the pool
   has too few machine tasks), shuffled, and asks for ``new_per_request`` new instructions as
   a numbered list (template ``instructions``). A cut-off answer (``finish_reason: length``)
   loses its last item, as in the paper.
2. **Filtering** (section 2.3), in order: the paper's keyword and length filters
   (:func:`paper_filter`: ``<= 3`` or ``> 150`` words, a word such as image/picture/graph/
   file/map/draw/plot/"go to", "Write a program", a leading punctuation mark or non-ASCII
   character), then novelty: an instruction joins the pool only if its ROUGE-L with every
   instruction in the pool (human and machine, including the ones accepted moments before in
   the same round) is below ``rouge_threshold`` (0.7). The check runs on a
   :class:`~distillery.generate.novelty.NoveltyIndex`, exact and fast at a 50k pool.
3. **Classification identification** (template ``classify``, few-shot from the seed tasks'
   ``is_classification``): does the task pick a label from a fixed set?
4. **Instance generation**: input-first (template ``instance_input_first``: input, then
   output) for other tasks, output-first (``instance_output_first``: class label, then an
   input of that class) for classification tasks, few-shot from the seed tasks' instances.
   The paper's instance filters drop instances with an empty output, input equal to output,
   or an input/output ending in ":", drop every instance of a task whose instances give one
   input different outputs, and drop duplicates.

Records (what a student trains on): prompt ``[{"role": "user", "content": instruction +
("\\n\\n" + input)}]``, response the instance's output; one record per kept instance (at most
``instances_per_instruction``). ``steps`` hold the three calls (``self_instruct.instructions``,
``self_instruct.classify``, ``self_instruct.instances``); an instruction request of batch ``k``
is sent as step ``self_instruct.instructions-b<k>`` (sample index ``round * per_round +
request``), so requests of two batches never share a cache key, and a batch that is redone
asks with the keys it had. Rejected records (response ``None``,
the model's raw text in the verdict) are made for every candidate the paper drops, with its
reason: ``filtered: ...``, ``too_similar: rouge_l=0.83 to "..."``, ``surplus: ...`` (the batch
already had its share), ``no_list``/``refusal``/``truncated`` (an answer without usable list
items), ``malformed_instances``/``invalid_instances``/``conflicting_instances``.

Output fields (columns): ``instruction`` (the cleaned candidate instruction), ``instance_input``
(``""`` when the task takes none), ``is_classification`` (``None`` when not asked or the answer
was neither yes nor no: then input-first is used), ``rouge_l_max`` and ``most_similar`` (the
closest pool instruction the index scored; exact when >= the threshold, see
:class:`~distillery.generate.novelty.Match`), ``in_context_ids`` (ids of the tasks shown),
``round`` and ``pool_added`` (the instruction entered the pool: it passed the filters and the
novelty check, whatever later stages or its instances do).

The pool is run state. The strategy is :attr:`~distillery.generate.strategy.Strategy.sequential`:
batches run in order, and batch ``k``'s pool is every seed task of the seed file (all of them
from the first batch on, as in the paper: batches are checkpoints, not separate pools) plus
the instructions of the earlier batches' records with ``pool_added`` (read from
:meth:`~distillery.generate.strategy.GenerationContext.history`, whatever their verdicts).
So a resumed run rebuilds exactly the pool it had, samples the same in-context tasks
(``random.Random(f"{seed}-{batch}-{round}")``) and replays its requests from the cache. Each
batch adds its share of ``num_instructions`` (in proportion to its seeds) and writes the
pool to ``<run_dir>/state/self_instruct_pool.jsonl`` (atomically; for inspection only).
"""

from __future__ import annotations

import json
import math
import random
import re
import string
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from distillery import registry
from distillery.backends.base import GenerationRequest, GenerationResult
from distillery.errors import RecipeError
from distillery.generate.candidates import PromptItem, seed_id
from distillery.generate.checks import call_failure, refusal
from distillery.generate.novelty import NoveltyIndex
from distillery.generate.parse import numbered_list, strip_wrapping
from distillery.generate.strategy import GenerationContext, Strategy
from distillery.generate.templates import TemplatedConfig
from distillery.io.atomic import atomic_open
from distillery.io.seeds import SeedReader, SeedRow
from distillery.registry import register

PAPER_KEYWORDS = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
                  "map", "maps", "draw", "plot", "go to")
"""Words that mark an instruction a text-only model cannot do (Self-Instruct's filter list)."""

_TEMPLATE_VARIABLES = {
    "instructions": {"tasks", "n"},
    "classify": {"examples", "instruction"},
    "instance_input_first": {"examples", "instruction", "n"},
    "instance_output_first": {"examples", "instruction", "n"},
}
_TASK_LABEL = re.compile(r"^(?:task|instruction)\s*\d*\s*[:.)-]\s*", re.I)
_FIELD = re.compile(r"^[ \t]*(?:[-*#>]+[ \t]*)?\**[ \t]*(input|output|class[ \t]+label|label)[ \t]*\**[ \t]*[:：]\**[ \t]*",
                    re.I | re.M)
_HEADER = re.compile(r"(?:\n|^)[ \t]*\**[ \t]*(?:example|instance)[ \t]*\d*[ \t]*[:.)]?\**[ \t]*$", re.I)
_TRAILER = re.compile(r"\n\s*\**\s*(?:input|output|example)\s*\d*\s*\**\s*:", re.I)
_NONE = {"", "none", "n/a", "na", "<noinput>", "no input", "(none)", "<none>", "null", "-", "empty", "not applicable"}


@register("strategy")
class SelfInstructConfig(TemplatedConfig):
    """Self-Instruct (Wang et al., 2022): a task pool grown from seed tasks with ROUGE-L novelty.

    Attributes:
        num_instructions: new instructions to add to the pool over the run; batch ``k`` makes
            its share, in proportion to the seed rows it holds (with ``output.batch_size`` at
            least the number of seeds, one batch makes them all).
        per_round: instruction-generation requests per round (each with its own in-context tasks).
        new_per_request: new instructions each request asks for.
        in_context_human, in_context_machine: in-context tasks per request from the seed tasks
            and from the machine-made pool (the paper: 6 and 2; seed tasks fill in while there
            are too few machine tasks).
        rouge_threshold: an instruction whose ROUGE-L F1 with any pool instruction is at least
            this is rejected (``too_similar``).
        max_rounds: most rounds per batch (default: the rounds a batch needs at an accept rate of
            one candidate in eight, plus one).
        min_words, max_words: the paper's length filter: keep instructions of ``min_words`` to
            ``max_words`` words.
        exclude_keywords: words (whole words, any case) that drop an instruction.
        exclude_prefixes: instruction openings that drop it ("Write a program", as in the paper).
        classify_examples: seed tasks shown in the classification prompt (half classification
            tasks, half others, as far as the seeds have them).
        instance_examples: seed tasks with instances shown in an instance prompt.
        instances_per_instruction: instances asked per instruction, and most records per
            instruction (one per kept instance).
        seed: seed of the in-context sampling.
    """

    strategy: Literal["self_instruct"] = "self_instruct"
    num_instructions: int = Field(100, ge=1)
    per_round: int = Field(8, ge=1)
    new_per_request: int = Field(8, ge=1)
    in_context_human: int = Field(6, ge=0)
    in_context_machine: int = Field(2, ge=0)
    rouge_threshold: float = Field(0.7, gt=0, le=1)
    max_rounds: int | None = Field(None, ge=1)
    min_words: int = Field(4, ge=1)
    max_words: int = Field(150, ge=1)
    exclude_keywords: list[str] = Field(default_factory=lambda: list(PAPER_KEYWORDS))
    exclude_prefixes: list[str] = Field(default_factory=lambda: ["Write a program"])
    classify_examples: int = Field(12, ge=0)
    instance_examples: int = Field(3, ge=0)
    instances_per_instruction: int = Field(1, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _some_context(self) -> SelfInstructConfig:
        if self.in_context_human + self.in_context_machine < 1:
            raise ValueError("in_context_human + in_context_machine must be at least 1")
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is above max_words ({self.max_words})")
        return self

    def build(self, recipe: Any) -> SelfInstruct:
        return SelfInstruct(self, recipe)


def clean_instruction(text: str) -> str:
    """A list item as an instruction: whitespace collapsed, a leading ``Task 3:`` /
    ``Instruction:`` label, quotes and bold markers removed, first letter upper-cased."""
    t = _TRAILER.split(text, maxsplit=1)[0]  # an example input the model added below the instruction
    t = " ".join(strip_wrapping(t).split())
    t = _TASK_LABEL.sub("", t).strip()
    t = t.strip("*").strip()
    t = strip_wrapping(t)
    return t[:1].upper() + t[1:]


def paper_filter(instruction: str, min_words: int = 4, max_words: int = 150,
                 keywords: tuple[str, ...] | list[str] = PAPER_KEYWORDS,
                 prefixes: tuple[str, ...] | list[str] = ("Write a program",)) -> str | None:
    """Self-Instruct's heuristic instruction filters (section 2.3); ``None`` if ``instruction``
    passes, else the reason (``filtered: <why>``)."""
    words = instruction.split()
    if len(words) < min_words:
        return f"filtered: too_short: {len(words)} word(s) < {min_words}"
    if len(words) > max_words:
        return f"filtered: too_long: {len(words)} words > {max_words}"
    for word in keywords:
        if re.search(rf"\b{re.escape(word)}\b", instruction, re.I):
            return f"filtered: keyword: {word!r} (not doable by a text-only model)"
    for prefix in prefixes:
        if instruction.lower().startswith(prefix.lower()):
            return f"filtered: prefix: starts with {prefix!r}"
    if instruction[0] in string.punctuation:
        return f"filtered: punctuation: starts with {instruction[0]!r}"
    if not instruction[0].isascii():
        return f"filtered: non_ascii: starts with {instruction[0]!r}"
    return None


def parse_yes_no(text: str | None) -> bool | None:
    """A classification verdict: ``True`` (yes), ``False`` (no) or ``None`` (neither found)."""
    if not text:
        return None
    t = text.strip().lower()
    m = re.match(r"^\W*(yes|no)\b", t)
    if m:
        return m.group(1) == "yes"
    found = re.findall(r"\b(yes|no)\b", t)
    if len(set(found)) == 1:
        return found[0] == "yes"
    return None


def _none(value: str) -> str:
    v = value.strip()
    return "" if v.strip("\"'`").lower() in _NONE else v


def parse_instances(text: str | None, output_first: bool) -> tuple[list[tuple[str, str]] | None, str | None]:
    """``(input, output)`` pairs from an instance answer: ``Input: ... Output: ...`` blocks
    (input-first; a block without ``Input:`` has input ``""``), or ``Class label: ... Input: ...``
    blocks (output-first; the label is the output). ``Example 2`` headers between blocks are
    ignored; "None"/"N/A" inputs become ``""``.

    Returns:
        ``(pairs, None)``, or ``(None, "empty_response: ...")`` / ``(None, "malformed_instances: ...")``.
    """
    if not text or not text.strip():
        return None, "empty_response: the model returned no text"
    fields = []
    marks = list(_FIELD.finditer(text))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        value = _HEADER.sub("", text[m.end():end].rstrip()).strip()
        name = m.group(1).lower()
        fields.append(("label" if "label" in name else name, value))
    pairs: list[tuple[str, str]] = []
    if output_first:
        label = None
        for name, value in fields:
            if name in ("label", "output"):
                label = value
            elif name == "input" and label is not None:
                pairs.append((_none(value), label))
                label = None
        shape = '"Class label: ... Input: ..."'
    else:
        pending = None
        for name, value in fields:
            if name == "input":
                pending = value
            elif name == "output":
                pairs.append((_none(pending or ""), value))
                pending = None
        shape = '"Input: ... Output: ..."'
    if not pairs:
        clip = " ".join(text.split())[:80]
        return None, f"malformed_instances: no {shape} pair in {clip!r}"
    return pairs, None


def filter_instances(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], str | None]:
    """The paper's instance filters: drop pairs with an empty output, input equal to output, or
    an input/output ending in ":"; if one input has different outputs drop all; dedupe.

    Returns:
        ``(kept, None)``, or ``([], reason)`` (``invalid_instances`` / ``conflicting_instances``).
    """
    valid = [(i, o) for i, o in pairs
             if o.strip() and i.strip() != o.strip() and not i.strip().endswith(":") and not o.strip().endswith(":")]
    if not valid:
        return [], f"invalid_instances: all {len(pairs)} instance(s) empty, echoing the input or cut off at ':'"
    outputs: dict[str, set[str]] = {}
    for i, o in valid:
        if i:
            outputs.setdefault(i, set()).add(o)
    conflicts = [i for i, outs in outputs.items() if len(outs) > 1]
    if conflicts:
        return [], f"conflicting_instances: one input has {len(outputs[conflicts[0]])} different outputs"
    return list(dict.fromkeys(valid)), None


@dataclass
class _Task:
    """A pool task: id, instruction; for seed tasks their row (instances, classification)."""

    id: str
    instruction: str
    row: SeedRow | None = None
    instances: list[dict[str, str]] = field(default_factory=list)
    is_classification: bool | None = None


@dataclass
class _Candidate:
    """One candidate instruction (or one unusable answer) of a round."""

    sid: str
    round: int
    lead: SeedRow
    gen_step: dict[str, Any]
    in_context: list[str]
    instruction: str | None = None
    raw: str | None = None
    reason: str | None = None
    rouge: float | None = None
    similar: str | None = None
    added: bool = False
    is_classification: bool | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)


class SelfInstruct(Strategy):
    """The Self-Instruct loop over one batch (see the module doc)."""

    config: SelfInstructConfig
    sequential = True
    outputs = {
        "instruction": pa.string(),
        "instance_input": pa.string(),
        "is_classification": pa.bool_(),
        "rouge_l_max": pa.float64(),
        "most_similar": pa.string(),
        "in_context_ids": pa.list_(pa.string()),
        "round": pa.int64(),
        "pool_added": pa.bool_(),
    }

    def __init__(self, config: SelfInstructConfig, recipe: Any) -> None:
        super().__init__(config, recipe)
        self.templates = config.load_templates(recipe.base_dir)
        for name, builder in self.templates.items():
            unknown = builder.variables - _TEMPLATE_VARIABLES.get(name, set())
            if unknown:
                raise RecipeError(f"generation.templates.{name}: unknown variable(s) {sorted(unknown)}; "
                                  f"the template gets {sorted(_TEMPLATE_VARIABLES[name])}")
        self.prompt = self.templates["instructions"]  # records' prompt_template_hash: the meta-prompt's
        self._human: list[_Task] | None = None
        self._total_rows = 0

    @property
    def inputs(self) -> set[str]:
        return {"instruction"}

    def describe(self) -> str:
        c = self.config
        return (f"**Generation**: Self-Instruct (Wang et al., 2022): {c.num_instructions} new instructions grown from "
                f"the seed tasks in rounds of {c.per_round} requests ({c.in_context_human} human + "
                f"{c.in_context_machine} machine in-context tasks each), kept only below ROUGE-L "
                f"{c.rouge_threshold} to every pool instruction and past the paper's keyword/length filters; "
                f"instances written input-first, or output-first for classification tasks.")

    # -- the pool ----------------------------------------------------------------------------
    def _seed_tasks(self, ctx: GenerationContext) -> list[_Task]:
        """Every seed task of the seed source (read once), in source order."""
        if self._human is None:
            s = self.recipe.seeds
            fmt = registry.get("seed_format", s.format) if s.format != "auto" else None
            local = fmt.local if fmt is not None else not s.path.startswith("builtin:")
            reader = SeedReader(path=str(self.recipe.resolve(s.path)) if local else s.path, fmt=s.format,
                                fields=s.fields, required=("instruction",), limit=s.limit, shuffle_seed=s.shuffle_seed,
                                split=s.split, subset=s.subset, options=s.options)
            tasks, total, seen = [], 0, set()
            for item in reader:
                total += 1
                if not isinstance(item, SeedRow):
                    continue
                sid = seed_id(item, ctx.id_field, ctx.source_name)
                text = " ".join(str(item.data["instruction"]).split())
                if not text or sid in seen:
                    continue
                seen.add(sid)
                instances = [{"input": str(i.get("input") or ""), "output": str(i.get("output") or "")}
                             for i in (item.data.get("instances") or []) if isinstance(i, dict)]
                cls = item.data.get("is_classification")
                tasks.append(_Task(sid, text, item, instances, bool(cls) if cls is not None else None))
            self._human, self._total_rows = tasks, total
        return self._human

    def _machine_tasks(self, ctx: GenerationContext) -> list[_Task]:
        """The pool's machine tasks from the finished batches before this one (``pool_added``)."""
        out: list[_Task] = []
        seen: set[str] = set()
        for r in ctx.history():
            if r.get("strategy") == self.name and r.get("pool_added") and r.get("instruction") and r["seed_id"] not in seen:
                seen.add(r["seed_id"])
                out.append(_Task(r["seed_id"], r["instruction"]))
        return out

    def _target(self, k: int) -> int:
        """Batch ``k``'s share of ``num_instructions`` (cumulative rounding: shares sum to it)."""
        n, total, size = self.config.num_instructions, max(1, self._total_rows), self.recipe.output.batch_size
        start, end = min(total, k * size), min(total, (k + 1) * size)
        return n * end // total - n * start // total

    def _write_pool(self, ctx: GenerationContext, human: list[_Task], machine: list[tuple[_Task, int, int]]) -> None:
        if ctx.state_dir is None:
            return
        with atomic_open(ctx.state_dir / "self_instruct_pool.jsonl") as fh:
            for t in human:
                fh.write(json.dumps({"id": t.id, "instruction": t.instruction, "source": "human"}, ensure_ascii=False) + "\n")
            for t, batch, rnd in machine:
                fh.write(json.dumps({"id": t.id, "instruction": t.instruction, "source": "machine", "batch": batch,
                                     "round": rnd}, ensure_ascii=False) + "\n")

    # -- the loop ----------------------------------------------------------------------------
    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        """Grow the pool by this batch's share of ``num_instructions`` and write instances.

        ``seeds`` only sizes the share: in-context tasks come from every seed task of the
        source and the pool (see the module doc). Records come out in (round, candidate) order.
        """
        c = self.config
        human = self._seed_tasks(ctx)
        if not human:
            return []
        pool = NoveltyIndex(c.rouge_threshold)
        for t in human:
            pool.add(t.instruction, t.id)
        history = self._machine_tasks(ctx)
        machine: list[tuple[_Task, int, int]] = []  # (task, batch, round) of the whole pool
        for t in history:
            pool.add(t.instruction, t.id)
            m = re.match(r"self-instruct-b(\d+)-r(\d+)-", t.id)
            machine.append((t, int(m.group(1)) if m else -1, int(m.group(2)) if m else -1))
        target = self._target(ctx.batch)
        rounds = c.max_rounds or math.ceil(8 * target / (c.per_round * c.new_per_request)) + 1
        candidates: list[_Candidate] = []
        accepted = 0
        for rnd in range(rounds):
            if accepted >= target:
                break
            ctx.ledger.waves += 1
            rng = random.Random(f"{c.seed}-{ctx.batch}-{rnd}")
            plans = []
            for _ in range(c.per_round):
                shown = rng.sample([t for t, _, _ in machine], min(c.in_context_machine, len(machine)))
                humans = rng.sample(human, min(len(human), c.in_context_human + c.in_context_machine - len(shown)))
                lead = (humans[0] if humans else rng.choice(human)).row
                shown += humans
                rng.shuffle(shown)
                plans.append((lead, shown))
            requests = [
                GenerationRequest.make(self.templates["instructions"].messages({"tasks": [t.instruction for t in shown],
                                                                                "n": c.new_per_request}),
                                       ctx.sampling, rnd * c.per_round + q, step=f"self_instruct.instructions-b{ctx.batch}")
                for q, (_, shown) in enumerate(plans)
            ]
            results = await ctx.generate(requests)
            if not all(ctx.keep(r) for r in results):
                break  # the batch is redone by the next run; later rounds would depend on the missing answers
            j = 0
            for q, result in enumerate(results):
                lead, shown = plans[q]
                step = ctx.step("self_instruct.instructions", requests[q], result)
                ids = [t.id for t in shown]
                for text, reason in self._items(result, ctx):
                    cand = _Candidate(f"self-instruct-b{ctx.batch}-r{rnd}-{j}", rnd, lead, step, ids, raw=result.text)
                    j += 1
                    candidates.append(cand)
                    if reason is not None:
                        cand.reason = reason
                        continue
                    cand.instruction = clean_instruction(text)
                    cand.raw = text
                    cand.reason = paper_filter(cand.instruction, c.min_words, c.max_words, c.exclude_keywords,
                                               c.exclude_prefixes) if cand.instruction else "filtered: empty instruction"
                    if cand.reason:
                        continue
                    if accepted >= target:
                        cand.reason = f"surplus: batch {ctx.batch} already has its {target} new instruction(s)"
                        continue
                    match = pool.nearest(cand.instruction)
                    cand.rouge, cand.similar = match.score, match.text
                    if match.score >= c.rouge_threshold:
                        cand.reason = f'too_similar: rouge_l={match.score:.2f} to "{_clip(match.text or "")}"'
                        continue
                    pool.add(cand.instruction, cand.sid)
                    task = _Task(cand.sid, cand.instruction)
                    machine.append((task, ctx.batch, rnd))
                    cand.added = True
                    accepted += 1
        self._write_pool(ctx, human, machine)
        await self._classify(ctx, human, [cd for cd in candidates if cd.added])
        return await self._instances(ctx, human, candidates)

    def _items(self, result: GenerationResult, ctx: GenerationContext) -> list[tuple[str | None, str | None]]:
        """The instruction texts of one answer, or one ``(None, reason)`` when it has none usable."""
        reason = call_failure(result, "self_instruct.instructions", ctx.sampling.max_tokens)
        if reason and not reason.startswith("truncated"):
            return [(None, reason)]
        items, why = numbered_list(result.text)
        if items and result.finish_reason == "length":
            items = items[:-1]  # the last item may be cut off (the paper drops it too)
            why = reason if not items else None
        if not items:
            if why and why.startswith("no_list") and refusal(result.text):
                why = f"refusal: {_clip(result.text or '')!r}"
            return [(None, why or reason)]
        return [(item, None) for item in items]

    async def _classify(self, ctx: GenerationContext, human: list[_Task], cands: list[_Candidate]) -> None:
        if not cands:
            return
        c = self.config
        half = c.classify_examples // 2
        yes = [t for t in human if t.is_classification is True][: c.classify_examples - half]
        no = [t for t in human if t.is_classification is False][:half]
        order = {t.id: i for i, t in enumerate(human)}
        examples = [{"instruction": t.instruction, "is_classification": t.is_classification}
                    for t in sorted(yes + no, key=lambda t: order[t.id])]
        requests = [GenerationRequest.make(self.templates["classify"].messages({"examples": examples,
                                                                                 "instruction": cd.instruction}),
                                           ctx.sampling, 0, step="self_instruct.classify") for cd in cands]
        for cd, request, result in zip(cands, requests, await ctx.generate(requests), strict=True):
            if not ctx.keep(result):
                continue
            cd.steps = [cd.gen_step, ctx.step("self_instruct.classify", request, result)]
            failed = call_failure(result, "self_instruct.classify", ctx.sampling.max_tokens)
            cd.is_classification = parse_yes_no(result.text) if failed is None else None

    async def _instances(self, ctx: GenerationContext, human: list[_Task], cands: list[_Candidate]) -> list[dict[str, Any]]:
        c = self.config
        todo = [cd for cd in cands if cd.added and cd.steps]
        requests = []
        for cd in todo:
            output_first = cd.is_classification is True
            suitable = [t for t in human if t.instances and (t.is_classification is True) == output_first]
            rng = random.Random(f"{c.seed}-{cd.sid}")
            picked = rng.sample(suitable, min(c.instance_examples, len(suitable)))
            examples = [{"instruction": t.instruction, **t.instances[0]} for t in picked]
            name = "instance_output_first" if output_first else "instance_input_first"
            messages = self.templates[name].messages({"examples": examples, "instruction": cd.instruction,
                                                      "n": c.instances_per_instruction})
            requests.append(GenerationRequest.make(messages, ctx.sampling, 0, step="self_instruct.instances"))
        answers = dict(zip((cd.sid for cd in todo), zip(requests, await ctx.generate(requests), strict=True), strict=True))
        records: list[dict[str, Any]] = []
        for cd in cands:
            fields = {"instruction": cd.instruction, "instance_input": None, "is_classification": cd.is_classification,
                      "rouge_l_max": cd.rouge, "most_similar": cd.similar, "in_context_ids": cd.in_context,
                      "round": cd.round, "pool_added": cd.added}
            if not cd.added:
                messages = [{"role": "user", "content": cd.instruction}] if cd.instruction else list(cd.gen_step["prompt"])
                records.append(self._rejected(ctx, cd, messages, [cd.gen_step], cd.reason or "", cd.raw, fields))
                continue
            if cd.sid not in answers:
                continue  # a transient failure: the batch is redone
            request, result = answers[cd.sid]
            if not ctx.keep(result):
                continue
            steps = [*cd.steps, ctx.step("self_instruct.instances", request, result)]
            reason = call_failure(result, "self_instruct.instances", ctx.sampling.max_tokens)
            pairs: list[tuple[str, str]] = []
            if reason is None:
                parsed, reason = parse_instances(result.text, cd.is_classification is True)
                if parsed is not None:
                    pairs, reason = filter_instances(parsed)
            if not pairs:
                messages = [{"role": "user", "content": cd.instruction or ""}]
                records.append(self._rejected(ctx, cd, messages, steps, reason or "", result.text, fields))
                continue
            if cd.is_classification:  # labels come in order: keep a spread of them, not the first ones
                random.Random(f"{c.seed}-{cd.sid}-pick").shuffle(pairs)
            for m, (inp, out) in enumerate(pairs[: c.instances_per_instruction]):
                content = cd.instruction + (f"\n\n{inp}" if inp else "")
                item = PromptItem(cd.lead, cd.sid, [{"role": "user", "content": content}])
                records.append(ctx.record(item, out, m, steps, **{**fields, "instance_input": inp}))
        return records

    @staticmethod
    def _rejected(ctx: GenerationContext, cd: _Candidate, messages: list[dict[str, str]], steps: list[dict[str, Any]],
                  reason: str, raw: str | None, fields: dict[str, Any]) -> dict[str, Any]:
        """A rejected record for ``cd``: prompt ``messages`` (the candidate instruction, or the
        meta-prompt when there is none), no response, ``reason`` and the model's ``raw`` text
        in the verdict."""
        item = PromptItem(cd.lead, cd.sid, messages)
        return ctx.record(item, None, 0, steps, reject=reason, raw=raw, **fields)


def _clip(text: str, n: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
