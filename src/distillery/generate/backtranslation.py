"""``generation: {strategy: backtranslation}``: instruction backtranslation with self-curation (Humpback).

After Li et al., 2023, "Self-Alignment with Instruction Backtranslation" (Humpback): unlabelled
documents are treated as answers. For each document,

1. ``instruction`` (self-augmentation): the teacher predicts the instruction the document would
   be the answer to;
2. ``curate`` (self-curation): the teacher rates the (instruction, document) pair on a 5-point
   scale of how well the document serves as an AI assistant's answer (our wording of the
   paper's additive rubric), parsed with :func:`distillery.generate.parse.score`;

and the pair is kept when the score is at least ``threshold``. The paper's two curated sets are
A5 (score 5 only: ``threshold: 5``) and A4 (score >= 4: ``threshold: 4``, the default here —
more data, slightly lower quality).

A record's ``prompt`` is the predicted instruction (one user message: what the student trains
on), its ``response`` the document itself; both calls are in ``steps``. Each record carries
``quality_score`` (the curation score, float; ``None`` when no score was reached) and
``source_id`` (the document's seed id). Rejections keep the raw text: a failed, empty or
truncated call (``<kind>: the instruction step ...``), a refused or empty instruction
(``refusal``, ``empty_instruction``), an unparseable rating (``no_score: ...``) and a score
below the threshold (``low_quality: score 2 < 4``). The recipe's ``prompt:`` section is not used.
"""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from distillery.backends.base import GenerationRequest
from distillery.generate import parse
from distillery.generate.candidates import PromptItem
from distillery.generate.checks import call_failure
from distillery.generate.persona import clean_instruction
from distillery.generate.strategy import GenerationContext, Strategy
from distillery.generate.templates import TemplatedConfig, combined, required_variables
from distillery.io.seeds import SeedRow
from distillery.registry import register

SCORE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reasoning": {"type": "string"}, "score": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["reasoning", "score"],
}
"""The JSON schema sent with the ``curate`` call (servers with structured output follow it)."""

@register("strategy")
class BacktranslationConfig(TemplatedConfig):
    """Instruction backtranslation with self-curation (Li et al., 2023, "Self-Alignment with
    Instruction Backtranslation"; see the module doc).

    Attributes:
        text_field: the seed field holding the document (the record's response).
        threshold: lowest curation score kept, in [1, 5] (4: the paper's A4 set; 5: A5).
        templates: overrides of ``instruction`` and ``curate``.
    """

    strategy: Literal["backtranslation"] = "backtranslation"
    text_field: str = "text"
    threshold: float = Field(4.0, ge=1, le=5)

    def build(self, recipe: Any) -> Backtranslation:
        return Backtranslation(self, recipe)


class Backtranslation(Strategy):
    """Predicts an instruction for each document, rates the pair 1-5 and keeps it at ``threshold`` or above."""

    config: BacktranslationConfig
    outputs = {"quality_score": pa.float64(), "source_id": pa.string()}

    def __init__(self, config: BacktranslationConfig, recipe: Any) -> None:
        super().__init__(config, recipe)
        self.templates = config.load_templates(recipe.base_dir)
        self.instruction = self.templates["instruction"]
        self.curate = self.templates["curate"]
        self.prompt = combined([self.instruction, self.curate])

    @property
    def inputs(self) -> set[str]:
        provided = {"document", "seed", "instruction"}
        return {self.config.text_field} | required_variables(self.instruction, provided) | required_variables(self.curate, provided)

    def describe(self) -> str:
        c = self.config
        return (f"**Generation**: instruction backtranslation (Humpback, Li et al., 2023): the teacher predicted the "
                f"instruction each document (`{c.text_field}`) answers, then rated the pair 1-5; pairs scored below "
                f"{c.threshold:g} were rejected. The record's prompt is the predicted instruction, its response the document.")

    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        c = self.config
        texts, records = ctx.texts(seeds, c.text_field)
        # row, seed id, document, instruction messages
        docs = [(row, sid, text, self.instruction.messages({**row.data, "seed": row.data, "document": text}))
                for row, sid, text in texts]

        asks = [GenerationRequest.make(m, ctx.sampling, 0, step="instruction") for _, _, _, m in docs]
        made: dict[int, dict[str, Any]] = {}
        pairs: list[tuple[int, PromptItem, dict[str, Any]]] = []  # doc, record prompt item, instruction step
        async for d, result in ctx.stream(asks):
            if not ctx.keep(result):
                continue
            row, sid, text, messages = docs[d]
            step = ctx.step("instruction", asks[d], result)
            reason = call_failure(result, "instruction", ctx.sampling.max_tokens if ctx.sampling else None)
            instruction = None
            if reason is None:
                instruction, reason = clean_instruction(result.text)
            if reason is not None:
                record = ctx.record(PromptItem(row, sid, messages), text, 0, [step], source_id=sid)
                made[d] = ctx.reject(record, reason, raw=result.text)
                continue
            pairs.append((d, PromptItem(row, sid, [{"role": "user", "content": instruction}]), step))

        rates = []
        for d, item, _ in pairs:
            row, _, text, _ = docs[d]
            variables = {**row.data, "seed": row.data, "document": text, "instruction": item.messages[-1]["content"]}
            rates.append(GenerationRequest.make(self.curate.messages(variables), ctx.sampling, 0, step="curate",
                                                schema=SCORE_SCHEMA))
        async for j, result in ctx.stream(rates):
            if not ctx.keep(result):
                continue
            d, item, first = pairs[j]
            text = docs[d][2]
            steps = [first, ctx.step("curate", rates[j], result)]
            reason = None
            value: float | None = None
            if result.error_kind is not None or result.finish_reason == "content_filter" or not (result.text or "").strip():
                reason = call_failure(result, "curate", ctx.sampling.max_tokens if ctx.sampling else None)
            else:
                value, reason = parse.score(result.text)
                if value is None and result.finish_reason == "length":
                    reason = call_failure(result, "curate", ctx.sampling.max_tokens if ctx.sampling else None)  # cut off before the score
            record = ctx.record(item, text, 0, steps, quality_score=value, source_id=item.seed_id)
            if reason is not None:
                ctx.reject(record, reason, raw=result.text)
            elif value < c.threshold:  # type: ignore[operator]
                ctx.reject(record, f"low_quality: score {value:g} < {c.threshold:g}", raw=result.text)
            made[d] = record
        return records + [made[d] for d in sorted(made)]
