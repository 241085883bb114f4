"""The three synthetic-data strategies compared by Chan et al. (2024), "Balancing Cost and
Effectiveness of Synthetic Data Generation Strategies for LLMs" (arXiv 2409.19759), on a seed
set of question/answer pairs (GSM8K train in the shipped recipes):

- ``generation: {strategy: answer_augmentation}``: new teacher answers to the seed questions,
  ``samples_per_question`` per question. The recipe's ``math_answer`` verifier keeps those whose
  final answer matches the seed's reference (nothing is re-implemented here). One query per
  record.
- ``generation: {strategy: question_rephrase}``: the augmenter rewords each seed question
  keeping its meaning and answer (template ``rephrase``); the record's prompt is the reworded
  question, its response a teacher answer (``answer_with: teacher``, checked against the seed's
  reference by ``math_answer`` like any answer: the rephrase must keep the answer) or the seed's
  own answer (``answer_with: seed``, no answering query). A rephrase is rejected when it is
  empty, a refusal, too short, too close to the original (``not_rephrased``: ROUGE-L F1 above
  ``max_similarity``) or loses a number of the original (``changed_numbers``, ``keep_numbers``).
  Two queries per record (one with ``answer_with: seed``).
- ``generation: {strategy: new_question}``: the augmenter writes new questions in the style of
  each seed (template ``new_question``), which the teacher answers. There is no reference, so
  there is no correctness check here; the paper has the teacher check its own new questions.
  A recipe can add a ``self_consistency`` verifier (:mod:`distillery.verify.consistency`) with
  ``answers_per_question`` >= 2: every new question has its own ``seed_id``
  (``<seed id>/q<j>``), so the votes are counted per new question. Do not add ``math_answer``:
  the seed's reference answers another question. A new question is rejected when it is empty,
  a refusal, too short, or a near copy of the seed (``not_new``: ROUGE-L F1 above
  ``max_similarity``). Two queries per record.

The answering call of all three is the recipe's ``prompt:`` (system message, template, few-shot
turns) filled with the seed's fields, the question field replaced by the generated question:
the record's prompt is what the teacher was asked and what the student trains on.

Records carry ``chan_strategy``, ``source_question`` (the seed's question), ``source_seed_id``,
``generated_question`` (the rephrase or new question; ``None`` for answer augmentation),
``similarity`` (its ROUGE-L F1 with the seed question) and ``answer_source`` (``teacher`` or
``seed``). Record ids: ``<seed id>#<j*A+k>`` (answer augmentation: ``k``; rephrase ``j``,
answer ``k`` of ``A``), and ``<seed id>/q<j>#<k>`` for new questions.

The paper's finding, which :func:`favoured_strategy` encodes: the best strategy depends on the
budget ratio, teacher queries per seed question. With few queries per seed, answer augmentation
(new answers to existing questions) gives the best student; as the ratio grows, strategies that
make new prompts win, new questions above all (they keep improving where the others plateau);
the choice matters much more with small seed sets than with large ones. Question rephrase sits
between the two: it makes new prompts but stays within the seeds' support, and it is robust to a
weak augmenter model, where new questions degrade.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from distillery.backends.base import GenerationRequest
from distillery.generate.candidates import PromptItem
from distillery.generate.checks import call_failure, refusal, words
from distillery.generate.evol_instruct import rejected_record
from distillery.generate.novelty import rouge_l
from distillery.generate.parse import strip_wrapping
from distillery.generate.strategy import GenerationContext, Strategy
from distillery.generate.templates import TemplatedConfig, required_variables
from distillery.io.seeds import SeedRow
from distillery.registry import register

# -- budget ratio -> strategy ----------------------------------------------------------------------
ANSWER_AUGMENTATION_BELOW = 12.0
"""Below this budget ratio, answer augmentation is favoured."""
NEW_QUESTION_FROM = 20.0
"""From this budget ratio on, new questions are favoured (question rephrase in between)."""


def favoured_strategy(budget_ratio: float, weak_augmenter: bool = False) -> tuple[str, str]:
    """The strategy Chan et al. (2024) favour at a budget ratio, and why.

    ``budget_ratio`` is the paper's BR = Q / |S|: teacher queries available per seed question.

    My reading of the paper (from its abstract and summaries of its Section 5; I could not read
    its figures here, so the thresholds are approximate): at low BR answer augmentation is the
    most cost-effective; the point where new prompts overtake it lay around BR 12 with a
    Mistral-7B student and, averaged, BR 16-18 with 1,000 and with all seed questions (later,
    BR 27-51, with only 100 seeds); beyond it new questions are best and keep scaling. The
    paper does not name a band where rephrasing wins: ``[12, 20)`` is my choice for the
    crossover region, where the curves are close and rephrasing is the cheaper, safer way to get
    new prompts (the seed's answer still applies, and it is robust to a weak augmenter). With
    ``weak_augmenter`` (e.g. a 7B augmenter: new questions lost ~15% accuracy in the paper),
    rephrasing is favoured over new questions at any BR >= 12.

    Returns:
        ``(name, why)``: ``name`` is ``answer_augmentation``, ``question_rephrase`` or
        ``new_question`` (a registered strategy); ``why`` one sentence.

    Raises:
        ValueError: ``budget_ratio`` is not a positive finite number.
    """
    if isinstance(budget_ratio, bool) or not isinstance(budget_ratio, int | float) or not math.isfinite(budget_ratio) or budget_ratio <= 0:
        raise ValueError(f"budget_ratio must be a positive number (teacher queries per seed question), got {budget_ratio!r}")
    br = f"{budget_ratio:g}"
    if budget_ratio < ANSWER_AUGMENTATION_BELOW:
        return "answer_augmentation", (
            f"budget ratio {br} < {ANSWER_AUGMENTATION_BELOW:g} queries per seed question: with few queries per seed, "
            "new answers to the seed questions beat new prompts (Chan et al., 2024)")
    if weak_augmenter:
        return "question_rephrase", (
            f"budget ratio {br} >= {ANSWER_AUGMENTATION_BELOW:g} favours new prompts, and with a weak augmenter "
            "rephrasing is robust where new questions degrade (Chan et al., 2024)")
    if budget_ratio < NEW_QUESTION_FROM:
        return "question_rephrase", (
            f"budget ratio {br} in [{ANSWER_AUGMENTATION_BELOW:g}, {NEW_QUESTION_FROM:g}): around the crossover from "
            "answer augmentation to new prompts, rephrasing adds prompts while the seed's answer still applies "
            "(my reading of Chan et al., 2024)")
    return "new_question", (
        f"budget ratio {br} >= {NEW_QUESTION_FROM:g}: with many queries per seed, new questions give the best "
        "student and keep improving where the other strategies plateau (Chan et al., 2024)")


# -- checks of generated questions (pure) ----------------------------------------------------------
REFUSAL_MAX_WORDS = 80
"""A generated question with a refusal phrase and fewer words than this is a refusal."""


_PREAMBLE = re.compile(r"\A(?:sure|certainly|okay|ok|of course|here(?:'s| is| are)?)\b[^\n]*[:：]\s*\n+", re.I)
_LABEL = re.compile(r"\A(?:#+\s*)?\**(?:new |reworded |rephrased |rewritten )?(?:problem|question)\**\s*[:：]\**\s*", re.I)


def clean_question(text: str | None) -> str:
    """``text`` without what a model wraps a question in: a chatty first line ("Sure! Here is a
    new problem:"), a ``Problem:`` / ``Question:`` label, quotes or a code fence."""
    t = strip_wrapping(text)
    t = _PREAMBLE.sub("", t, count=1)
    t = _LABEL.sub("", t, count=1)
    return strip_wrapping(t)


_UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                      "fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_DIGITS = re.compile(r"\d[\d,]*(?:\.\d+)?|\.\d+")
_NUMBER_WORDS = re.compile(r"\b(" + "|".join(_TENS) + r")(?:[- ](" + "|".join(list(_UNITS)[1:10]) + r"))?\b|\b("
                           + "|".join(_UNITS) + r"|dozen)\b")


def _norm_number(text: str) -> str:
    n = text.replace(",", "")
    if "." in n:
        n = n.rstrip("0").rstrip(".")
    return n.lstrip("0") or "0"


def numbers(text: str, spelled: bool = True) -> set[str]:
    """The numbers of ``text``, normalised (``"1,000"`` -> ``"1000"``, ``"2.50"`` -> ``"2.5"``);
    with ``spelled`` also number words up to ninety-nine and "dozen"."""
    out = {_norm_number(m.group()) for m in _DIGITS.finditer(text)}
    if spelled:
        for m in _NUMBER_WORDS.finditer(text.lower()):
            if m.group(3):
                out.add("12" if m.group(3) == "dozen" else str(_UNITS[m.group(3)]))
            else:
                out.add(str(_TENS[m.group(1)] + (_UNITS[m.group(2)] if m.group(2) else 0)))
    return out


def question_problem(original: str, generated: str, kind: Literal["rephrase", "new"], max_similarity: float = 0.8,
                     keep_numbers: bool = True, min_words: int = 3) -> tuple[str | None, float]:
    """Why a generated question is rejected, or ``None``, and its ROUGE-L F1 with ``original``.

    Reasons: ``empty_question``, ``refusal``, ``too_short`` (fewer than ``min_words`` words),
    ``not_rephrased`` / ``not_new`` (similarity above ``max_similarity``: a copy, not a rephrase
    or a new question), ``changed_numbers`` (a rephrase without a number of the original, spelled
    or in digits; only with ``keep_numbers``).
    """
    if not generated.strip():
        return "empty_question: nothing left once the wrapping is removed", 0.0
    similarity = round(rouge_l(original, generated), 4)
    if refusal(generated, REFUSAL_MAX_WORDS):
        return "refusal: the augmenter declined to write the question", similarity
    n = len(words(generated))
    if n < min_words:
        return f"too_short: the question has {n} word(s) < {min_words}", similarity
    if similarity > max_similarity:
        category = "not_rephrased" if kind == "rephrase" else "not_new"
        return f"{category}: ROUGE-L {similarity:.2f} with the seed question > {max_similarity:g}", similarity
    if kind == "rephrase" and keep_numbers:
        lost = sorted(numbers(original, spelled=False) - numbers(generated), key=lambda s: (len(s), s))
        if lost:
            return f"changed_numbers: the rephrase lost {', '.join(lost[:5])} of the original", similarity
    return None, similarity


# -- strategies ------------------------------------------------------------------------------------
class _ChanConfig(TemplatedConfig):
    """Shared fields: ``question_field`` (the seed field with the question, also the prompt
    template's variable it is put in)."""

    question_field: str = "question"


@register("strategy")
class AnswerAugmentationConfig(_ChanConfig):
    """Answer augmentation (Chan et al., 2024): ``samples_per_question`` teacher answers to every
    seed question, through the recipe's ``prompt:``; verify them with ``math_answer``.

    Attributes:
        question_field: the seed field holding the question.
        samples_per_question: answers drawn per question (all at once).
    """

    strategy: Literal["answer_augmentation"] = "answer_augmentation"
    samples_per_question: int = Field(4, ge=1)

    def build(self, recipe: Any) -> AnswerAugmentation:
        return AnswerAugmentation(self, recipe)


@register("strategy")
class QuestionRephraseConfig(_ChanConfig):
    """Question rephrase (Chan et al., 2024): reword each seed question keeping its meaning and
    answer, then answer the rewording.

    Attributes:
        question_field: the seed field holding the question.
        rephrases_per_question: rewordings asked per seed question.
        answers_per_rephrase: teacher answers per rewording (``answer_with: teacher``).
        answer_with: ``teacher`` (answer the rewording; ``math_answer`` checks it against the
            seed's reference) or ``seed`` (the seed's own answer, ``answer_field``).
        answer_field: the seed field with the answer (``answer_with: seed``).
        max_similarity: most ROUGE-L F1 a rewording may have with the original.
        keep_numbers: reject a rewording that drops a number of the original.
        min_words: fewest words of a rewording.
    """

    strategy: Literal["question_rephrase"] = "question_rephrase"
    rephrases_per_question: int = Field(1, ge=1)
    answers_per_rephrase: int = Field(1, ge=1)
    answer_with: Literal["teacher", "seed"] = "teacher"
    answer_field: str = "answer"
    max_similarity: float = Field(0.8, gt=0, le=1)
    keep_numbers: bool = True
    min_words: int = Field(3, ge=1)

    def build(self, recipe: Any) -> QuestionRephrase:
        return QuestionRephrase(self, recipe)


@register("strategy")
class NewQuestionConfig(_ChanConfig):
    """New question (Chan et al., 2024): write new questions in the style of each seed and
    answer them with the teacher (no reference: add ``self_consistency`` to check answers).

    Attributes:
        question_field: the seed field holding the question.
        questions_per_seed: new questions asked per seed (one query each).
        answers_per_question: teacher answers per new question (>= 2 for ``self_consistency``).
        max_similarity: most ROUGE-L F1 a new question may have with its seed.
        min_words: fewest words of a new question.
    """

    strategy: Literal["new_question"] = "new_question"
    questions_per_seed: int = Field(1, ge=1)
    answers_per_question: int = Field(1, ge=1)
    max_similarity: float = Field(0.8, gt=0, le=1)
    min_words: int = Field(3, ge=1)

    def build(self, recipe: Any) -> NewQuestion:
        return NewQuestion(self, recipe)


class _Chan(Strategy):
    """Shared parts: the outputs, the answering prompt, records."""

    config: _ChanConfig
    outputs: ClassVar[dict[str, pa.DataType]] = {
        "chan_strategy": pa.string(),
        "source_question": pa.string(),
        "source_seed_id": pa.string(),
        "generated_question": pa.string(),
        "similarity": pa.float64(),
        "answer_source": pa.string(),
    }

    question_template: ClassVar[str | None] = None
    """The template that writes questions (rendered over the seed with ``question`` set), if any."""

    def __init__(self, config: _ChanConfig, recipe: Any) -> None:
        super().__init__(config, recipe)
        self.templates = config.load_templates(recipe.base_dir)

    @property
    def inputs(self) -> set[str]:
        """The question field, the answering prompt's variables, and the seed fields the
        question-writing template reads (``question`` is filled in)."""
        needed = set(self.prompt.variables) | {self.config.question_field}
        if self.question_template is not None:
            needed |= required_variables(self.templates[self.question_template], {"question"})
        return needed

    def question(self, item: PromptItem) -> str:
        """The seed's question."""
        return str(item.row.data[self.config.question_field]).strip()

    def answer_item(self, item: PromptItem, question: str, sid: str | None = None) -> PromptItem:
        """The prompt that answers ``question``: the recipe's prompt over the seed with the question replaced."""
        data = {**item.row.data, self.config.question_field: question}
        return PromptItem(item.row, sid or item.seed_id, self.prompt.messages(data))

    def fields(self, item: PromptItem, generated: str | None = None, similarity: float | None = None,
               answer_source: str | None = "teacher") -> dict[str, Any]:
        """The output fields of a record made from ``item``."""
        return {"chan_strategy": self.name, "source_question": self.question(item), "source_seed_id": item.seed_id,
                "generated_question": generated, "similarity": similarity, "answer_source": answer_source}

    async def generated_questions(self, items: list[PromptItem], n: int, template: str, kind: Literal["rephrase", "new"],
                                  ctx: GenerationContext, **check: Any) -> tuple[list[tuple[PromptItem, int, str, float, list]], list[dict[str, Any]]]:
        """Ask ``template`` ``n`` times per item (sample ``j``, step ``template``) and check each
        question (:func:`question_problem`). Returns the survivors ``(item, j, question,
        similarity, steps)`` and the rejected records (sample ``j * answers``, in ``check``)."""
        per = check.pop("answers")
        plan = [(item, j) for item in items for j in range(n)]
        requests = [GenerationRequest.make(self.templates[template].messages({**item.row.data, "question": self.question(item)}),
                                           ctx.sampling, j, step=template) for item, j in plan]
        kept: list[tuple[PromptItem, int, str, float, list]] = []
        rejected: list[dict[str, Any]] = []
        for (item, j), request, result in zip(plan, requests, await ctx.generate(requests), strict=True):
            if not ctx.keep(result):
                continue
            steps = [ctx.step(template, request, result)]
            question = clean_question(result.text)
            problem = call_failure(result, template, ctx.sampling.max_tokens)
            similarity = None
            if problem is None:
                problem, similarity = question_problem(self.question(item), question, kind, **check)
            if problem is None:
                kept.append((item, j, question, similarity, steps))
                continue
            sid = item.seed_id if kind == "rephrase" else f"{item.seed_id}/q{j}"
            k = j * per if kind == "rephrase" else 0
            target = self.answer_item(item, question or self.question(item), sid)
            rejected.append(rejected_record(ctx, target, k, steps, problem, raw=result.text,
                                            **self.fields(item, question or None, similarity, None)))
        return kept, rejected

    async def answers(self, jobs: list[tuple[PromptItem, int, list, dict[str, Any]]], ctx: GenerationContext) -> list[dict[str, Any]]:
        """One teacher answer per job ``(item, sample index, steps, outputs)`` (the final call)."""
        requests = [GenerationRequest.make(item.messages, ctx.sampling, k) for item, k, _, _ in jobs]
        out = []
        for (item, k, steps, fields), result in zip(jobs, await ctx.generate(requests), strict=True):
            if ctx.keep(result):
                out.append(ctx.candidate(item, result, k, steps, **fields))
        return out


class AnswerAugmentation(_Chan):
    """N teacher answers per seed question (see the module doc)."""

    config: AnswerAugmentationConfig

    def describe(self) -> str:
        return (f"**Generation**: answer augmentation (Chan et al., 2024): {self.config.samples_per_question} teacher "
                "answer(s) per seed question, one query each; the verifiers keep the correct ones.")

    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        items, records = ctx.prompts(seeds)
        jobs = [(item, k, [], self.fields(item)) for item in items for k in range(self.config.samples_per_question)]
        return records + await self.answers(jobs, ctx)


class QuestionRephrase(_Chan):
    """Reworded seed questions, answered by the teacher or by the seed (see the module doc)."""

    config: QuestionRephraseConfig
    question_template = "rephrase"

    @property
    def inputs(self) -> set[str]:
        extra = {self.config.answer_field} if self.config.answer_with == "seed" else set()
        return super().inputs | extra

    def describe(self) -> str:
        c = self.config
        answer = (f"{c.answers_per_rephrase} teacher answer(s) each" if c.answer_with == "teacher"
                  else "each answered with the seed's own answer")
        return (f"**Generation**: question rephrase (Chan et al., 2024): {c.rephrases_per_question} rewording(s) of "
                f"every seed question, {answer}; rewordings with ROUGE-L > {c.max_similarity:g} against the original"
                f"{' or a lost number' if c.keep_numbers else ''} are rejected.")

    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        c = self.config
        items, records = ctx.prompts(seeds)
        per = c.answers_per_rephrase if c.answer_with == "teacher" else 1
        kept, rejected = await self.generated_questions(
            items, c.rephrases_per_question, "rephrase", "rephrase", ctx, answers=per,
            max_similarity=c.max_similarity, keep_numbers=c.keep_numbers, min_words=c.min_words)
        made: list[dict[str, Any]] = list(rejected)
        if c.answer_with == "seed":
            for item, j, question, similarity, steps in kept:
                answer = item.row.data.get(c.answer_field)
                made.append(ctx.record(self.answer_item(item, question), None if answer is None else str(answer), j, steps,
                                       **self.fields(item, question, similarity, "seed")))
        else:
            jobs = [(self.answer_item(item, question), j * per + k, steps, self.fields(item, question, similarity))
                    for item, j, question, similarity, steps in kept for k in range(per)]
            made.extend(await self.answers(jobs, ctx))
        made.sort(key=lambda r: (r["seed_index"], r["sample_index"]))
        return records + made


class NewQuestion(_Chan):
    """New questions in the style of the seeds, answered by the teacher (see the module doc)."""

    config: NewQuestionConfig
    question_template = "new_question"

    def describe(self) -> str:
        c = self.config
        return (f"**Generation**: new question (Chan et al., 2024): {c.questions_per_seed} new question(s) in the style "
                f"of every seed question, {c.answers_per_question} teacher answer(s) each; near copies of the seed "
                f"(ROUGE-L > {c.max_similarity:g}) are rejected; no reference answer exists to check against.")

    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        c = self.config
        items, records = ctx.prompts(seeds)
        kept, rejected = await self.generated_questions(
            items, c.questions_per_seed, "new_question", "new", ctx, answers=c.answers_per_question,
            max_similarity=c.max_similarity, min_words=c.min_words)
        jobs = [(self.answer_item(item, question, f"{item.seed_id}/q{j}"), k, steps, self.fields(item, question, similarity))
                for item, j, question, similarity, steps in kept for k in range(c.answers_per_question)]
        made = rejected + await self.answers(jobs, ctx)
        made.sort(key=lambda r: (r["seed_index"], len(r["seed_id"]), r["seed_id"], r["sample_index"]))
        return records + made
