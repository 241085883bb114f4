"""``generation: {strategy: rephrase}``: rephrasing documents in styles (WRAP).

After Maini et al., 2024, "Rephrasing the Web: A Recipe for Compute and Data-Efficient
Language Modeling" (WRAP): a teacher rewrites each document in one or more styles — ``easy``
(for a small child), ``encyclopedic`` (the paper's "Wikipedia" / medium style; ``wikipedia``
is accepted as its name), ``hard`` (terse, scholarly) and ``qa`` (question-answer pairs) — and
the rephrasings, optionally mixed with originals, are pretraining-style data. As in the paper,
long documents are rephrased in chunks (the paper used ~300-token pieces): a document is cut
on paragraph boundaries (then lines, sentences, words) into pieces of at most
``max_chunk_chars`` characters, each piece is one call, and the rephrased pieces are joined
with blank lines.

Records, per document and style: ``response`` = the rephrasing; ``prompt`` = the style's
template filled with the **whole** document, so TRL's prompt/completion format works (for
plain language modelling use ``response``); ``steps`` = every chunk's call. Their sample index
(and id suffix ``#k``) is fixed per style — easy 0, encyclopedic 1, hard 2, qa 3 — so ids do
not move when ``styles`` changes. With ``originals_ratio`` r > 0, the original document of a
fraction r of the documents (seeded, per document; 1.0: every document) is kept as a record
of its own: ``response`` = the document, empty ``prompt``, ``backend: seed``, ``style:
original``, sample index 4. Every record carries ``style``, ``source_id`` (the source
document's seed id) and ``source_chars`` (its length in characters).

Filters (rejected with the reason, keeping the text): a failed, empty or truncated chunk
(``<kind>: ... chunk i/n``); a refusal; a rephrasing that copies its source (more than
``max_overlap`` of its word ``overlap_n``-grams occur in the source: ``copied``); one much
shorter than its source (length ratio below ``min_length_ratio``: ``too_short``); a ``qa``
rephrasing without a question-answer pair (``no_qa``). A chat preamble ("Here is the
rewritten text:") is removed (a passed ``preamble`` verdict keeps it). The recipe's
``prompt:`` section is not used.
"""

from __future__ import annotations

import random
import re
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, field_validator

from distillery.backends.base import GenerationRequest, GenerationResult
from distillery.generate.candidates import PromptItem
from distillery.generate.checks import call_failure, refusal, strip_preamble
from distillery.generate.strategy import GenerationContext, Strategy
from distillery.generate.templates import TemplatedConfig, combined, required_variables
from distillery.io.seeds import SeedRow
from distillery.records import add_verdict, new_record
from distillery.registry import register
from distillery.text import word_ngrams, words

STYLE_INDEX: dict[str, int] = {"easy": 0, "encyclopedic": 1, "hard": 2, "qa": 3}
"""Each style's fixed sample index (the ``#k`` of its records' ids)."""
ORIGINAL_INDEX = 4
"""The sample index of an original document's record."""
ALIASES = {"wikipedia": "encyclopedic"}
PROVIDED = frozenset({"document", "seed"})


def chunk_document(text: str, max_chars: int) -> list[str]:
    """``text`` cut into pieces of at most ``max_chars`` characters: whole paragraphs packed
    together where they fit, a longer paragraph split on line breaks, then sentence ends, then
    spaces (a word longer than ``max_chars`` is cut). Pieces are stripped; joining them with
    blank lines gives back the text's words in order.

    Raises:
        ValueError: ``max_chars`` < 1.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    pieces: list[str] = []
    for para in re.split(r"\n[ \t]*\n", text.strip()):
        para = para.rstrip().lstrip("\n")  # a code block keeps its first line's indentation
        if para:
            pieces.extend(_split(para, max_chars, 0))
    return _pack(pieces, max_chars, "\n\n")


_SEPARATORS = (("\n", re.compile(r"\n")), (" ", re.compile(r"(?<=[.!?;:])\s+")), (" ", re.compile(r"\s+")))


def _split(text: str, max_chars: int, level: int) -> list[str]:
    if len(text) <= max_chars:
        return [text]
    if level == len(_SEPARATORS):
        return [text[i:i + max_chars] for i in range(0, len(text), max_chars)]
    joiner, rx = _SEPARATORS[level]
    parts = [p for p in rx.split(text) if p.strip()]
    if len(parts) <= 1:
        return _split(text, max_chars, level + 1)
    small: list[str] = []
    for p in parts:
        small.extend(_split(p, max_chars, level + 1))
    return _pack(small, max_chars, joiner)


def _pack(pieces: list[str], max_chars: int, joiner: str) -> list[str]:
    out: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + len(joiner) + len(piece) > max_chars:
            out.append(current)
            current = piece
        else:
            current = current + joiner + piece if current else piece
    if current:
        out.append(current)
    return out


def ngram_overlap(text: str, source: str, n: int = 4) -> float:
    """Fraction in [0, 1] of the word ``n``-grams of ``text`` (normalised words,
    :func:`distillery.text.words`) that also occur in ``source``; 0 when ``text`` has none."""
    grams = list(word_ngrams(words(text), n))
    if not grams:
        return 0.0
    seen = set(word_ngrams(words(source), n))
    return sum(g in seen for g in grams) / len(grams)


_QUESTION = re.compile(r"(?im)^\W*(?:q|question)\s*\d*\s*[:.)]")
_ANSWER = re.compile(r"(?im)^\W*(?:a|answer)\s*\d*\s*[:.)]")


def has_qa(text: str) -> bool:
    """Whether ``text`` has at least one question line and one answer line (``Question:`` /
    ``Q1.`` / ``**Answer:**``...)."""
    return bool(_QUESTION.search(text)) and bool(_ANSWER.search(text))


def judge_rephrasing(source: str, text: str, style: str, min_length_ratio: float, max_overlap: float,
                     overlap_n: int = 4) -> str | None:
    """The paper-side filters on one whole rephrasing: the reason (``category: detail``) it is
    rejected, or ``None``. Categories: ``refusal``, ``copied`` (n-gram overlap with the source
    above ``max_overlap``), ``too_short`` (characters relative to the source below
    ``min_length_ratio``), ``no_qa`` (a ``qa`` rephrasing with no question-answer pair)."""
    if refusal(text, at_start=True):
        return "refusal: the teacher declined to rephrase the document"
    overlap = ngram_overlap(text, source, overlap_n)
    if overlap > max_overlap:
        return f"copied: {overlap:.2f} of the rephrasing's word {overlap_n}-grams are in the source > {max_overlap}"
    ratio = len(text.strip()) / max(1, len(source.strip()))
    if ratio < min_length_ratio:
        return f"too_short: the rephrasing has {ratio:.2f} of the source's characters < {min_length_ratio}"
    if style == "qa" and not has_qa(text):
        return "no_qa: the qa rephrasing has no 'Question:' / 'Answer:' pair"
    return None


def keep_original(seed: int, seed_key: str, ratio: float) -> bool:
    """Whether the original of document ``seed_key`` is kept: ``random.Random(f"{seed}-{seed_key}-original").random() < ratio``
    (every document at 1.0, none at 0)."""
    return ratio > 0 and random.Random(f"{seed}-{seed_key}-original").random() < ratio


@register("strategy")
class RephraseConfig(TemplatedConfig):
    """Rephrasing documents in styles (Maini et al., 2024, "Rephrasing the Web", WRAP; see the
    module doc).

    Attributes:
        styles: styles to rephrase every document in: ``easy``, ``encyclopedic`` (alias
            ``wikipedia``), ``hard``, ``qa``; one record each.
        text_field: the seed field holding the document.
        originals_ratio: fraction in [0, 1] of documents whose original is kept as a record
            too (1.0: one original per document's set of rephrasings; 0: none).
        seed: seed of the originals' selection.
        max_chunk_chars: longest piece of a document sent in one call (characters; ~4 per token).
        min_length_ratio: shortest rephrasing kept, relative to the source's characters.
        max_overlap: highest share of the rephrasing's word n-grams found in the source.
        overlap_n: n of those n-grams.
        templates: overrides of ``easy``, ``encyclopedic``, ``hard``, ``qa``.
    """

    strategy: Literal["rephrase"] = "rephrase"
    styles: list[str] = Field(default_factory=lambda: ["encyclopedic", "qa"], min_length=1)
    text_field: str = "text"
    originals_ratio: float = Field(0.0, ge=0, le=1)
    seed: int = 0
    max_chunk_chars: int = Field(1500, ge=100)
    min_length_ratio: float = Field(0.3, ge=0)
    max_overlap: float = Field(0.8, gt=0, le=1)
    overlap_n: int = Field(4, ge=1)

    @field_validator("styles")
    @classmethod
    def _styles(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for style in value:
            name = ALIASES.get(style, style)
            if name not in STYLE_INDEX:
                raise ValueError(f"unknown style {style!r}; use {', '.join(STYLE_INDEX)} (or wikipedia = encyclopedic)")
            if name in out:
                raise ValueError(f"style {name!r} is given twice")
            out.append(name)
        return out

    def build(self, recipe: Any) -> Rephrase:
        return Rephrase(self, recipe)


class Rephrase(Strategy):
    """Rephrases each document in every style, chunk by chunk, and keeps originals at ``originals_ratio``."""

    config: RephraseConfig
    outputs = {"style": pa.string(), "source_id": pa.string(), "source_chars": pa.int64()}

    def __init__(self, config: RephraseConfig, recipe: Any) -> None:
        super().__init__(config, recipe)
        self.templates = config.load_templates(recipe.base_dir)
        self.prompt = combined([self.templates[s] for s in config.styles])

    @property
    def inputs(self) -> set[str]:
        needed = {self.config.text_field}
        for style in self.config.styles:
            needed |= required_variables(self.templates[style], PROVIDED)
        return needed

    def describe(self) -> str:
        c = self.config
        originals = (f"; the originals of {c.originals_ratio:.0%} of the documents are kept too (`style: original`)"
                     if c.originals_ratio else "")
        return (f"**Generation**: rephrasing (WRAP, Maini et al., 2024): every document (`{c.text_field}`) rewritten in the "
                f"style(s) {', '.join(c.styles)}, in chunks of at most {c.max_chunk_chars} characters{originals}. "
                f"Rephrasings that copy the source (>{c.max_overlap} {c.overlap_n}-gram overlap) or are shorter than "
                f"{c.min_length_ratio} of it are rejected. The record's prompt is the style's instruction with the document.")

    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        c = self.config
        texts, records = ctx.texts(seeds, c.text_field)
        # row, seed id, text, chunks
        docs = [(row, sid, text, chunk_document(text, c.max_chunk_chars)) for row, sid, text in texts]

        requests: list[GenerationRequest] = []
        where: list[tuple[int, str, int]] = []  # doc, style, chunk
        for d, (row, _, _, chunks) in enumerate(docs):
            for style in c.styles:
                for j, chunk in enumerate(chunks):
                    messages = self.templates[style].messages({**row.data, "seed": row.data, "document": chunk})
                    requests.append(GenerationRequest.make(messages, ctx.sampling, STYLE_INDEX[style], step=f"rephrase:{style}"))
                    where.append((d, style, j))
        results: dict[tuple[int, str], dict[int, GenerationResult | None]] = {}
        async for i, result in ctx.stream(requests):
            d, style, j = where[i]
            results.setdefault((d, style), {})[j] = result if ctx.keep(result) else None
        positions = {(where[i][0], where[i][1], where[i][2]): i for i in range(len(where))}

        for d, (row, sid, text, chunks) in enumerate(docs):
            extra = {"source_id": sid, "source_chars": len(text)}
            for style in sorted(c.styles, key=STYLE_INDEX.__getitem__):
                got = results.get((d, style), {})
                if len(got) < len(chunks) or any(r is None for r in got.values()):
                    continue  # a transient failure: the batch is redone on the next run
                records.append(self._record(ctx, row, sid, text, chunks, style,
                                            [requests[positions[(d, style, j)]] for j in range(len(chunks))],
                                            [got[j] for j in range(len(chunks))], extra))  # type: ignore[misc]
            if keep_original(c.seed, sid, c.originals_ratio):
                original = new_record(
                    id=f"{sid}#{ORIGINAL_INDEX}", seed_id=sid, seed_index=row.index, seed_source=ctx.source, seed=row.data,
                    prompt=[], response=text, teacher=None, backend="seed", prompt_template_hash=self.prompt.template_hash,
                    sample_index=ORIGINAL_INDEX,
                )
                records.append(ctx.stamp(original, [], style="original", **extra))
        return records

    def _record(self, ctx: GenerationContext, row: SeedRow, sid: str, text: str, chunks: list[str], style: str,
                requests: list[GenerationRequest], results: list[GenerationResult], extra: dict[str, Any]) -> dict[str, Any]:
        c = self.config
        n = len(chunks)
        steps = [ctx.step(f"rephrase:{style}" + (f" {j + 1}/{n}" if n > 1 else ""), rq, rs)
                 for j, (rq, rs) in enumerate(zip(requests, results, strict=True))]
        reason, raw = None, None
        pieces: list[str] = []
        removed: list[str] = []
        for j, result in enumerate(results):
            label = "rephrase" + (f" (chunk {j + 1}/{n})" if n > 1 else "")
            piece = (result.text or "").strip()
            if reason is None:
                reason = call_failure(result, label, ctx.sampling.max_tokens if ctx.sampling else None)
                if reason is None and refusal(piece, at_start=True):
                    reason, raw = f"refusal: the teacher declined the {label} call", result.text
            piece, cut = strip_preamble(piece)
            if cut:
                removed.append(cut)
            pieces.append(piece.strip())
        joined = "\n\n".join(p for p in pieces if p)
        messages = self.templates[style].messages({**row.data, "seed": row.data, "document": text})
        record = ctx.record(PromptItem(row, sid, messages), joined, STYLE_INDEX[style], steps, style=style, **extra)
        if removed:
            add_verdict(record, "generate", "preamble", True, {"removed": removed})
        if reason is None:
            reason = judge_rephrasing(text, joined, style, c.min_length_ratio, c.max_overlap, c.overlap_n)
        if reason is not None:
            ctx.reject(record, reason, raw=raw)
        return record
