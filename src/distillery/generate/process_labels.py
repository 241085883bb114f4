"""``generation: {strategy: process_labels}``: step-level correctness labels for process reward models.

After Wang et al., 2024, "Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human
Annotations": a step of a solution is good when the solution can still reach the right answer
from it. For each math problem (a seed with a reference answer, e.g. GSM8K's ``#### n``),

1. ``solve``: the teacher writes ``solutions_per_problem`` step-by-step solutions (sample ``j``);
2. each solution is split into steps (:func:`split_steps`); a solution with fewer than
   ``min_steps`` or more than ``max_steps`` steps is rejected (``unsplittable`` /
   ``too_many_steps``), as is one with no final answer (``no_answer``);
3. ``complete-s{i}``: for every step ``i`` but the last, the teacher writes
   ``completions_per_step`` (N) completions of the solution from the prefix that ends with step
   ``i``; each completion's final answer is extracted and compared with the reference by the
   math-answer checker (:func:`distillery.verify.answers.extract_answer`,
   :func:`distillery.verify.math_answer.answers_equal`);
4. step ``i``'s labels are the paper's two estimates: **hard** (HE: 1 if any of the N
   completions reaches the reference, else 0) and **soft** (SE: the fraction that do). The last
   step ends the solution, so its labels are the solution's own correctness (1 or 0).

The paper continues the solution as the assistant's own text. OpenAI-compatible chat servers
cannot pre-fill an assistant turn, so the continuation is asked for in the user turn: the
``complete`` template shows the problem and the solution so far and asks the model to go on
from where it stops without changing it. Completions are chat requests on every backend.

A completion that fails permanently, is empty or cut off at ``max_tokens`` counts as not
reaching the answer (it did not), as does one with no final answer: raise ``max_tokens`` if
many are cut off. A transient failure holds the batch back as usual.

Records: ``prompt`` is the problem (one user message: what a student or a PRM is trained on),
``response`` the whole solution, ``steps`` every call (``solve``, then ``complete-s{i}`` N
times per step). Output fields: ``step_texts`` (list<string>), ``step_labels_hard``
(list<int64>, 0/1), ``step_labels_soft`` (list<float64>, in [0, 1]), ``first_wrong_step``
(int64: the 1-based number of the first step whose hard label is 0, ``step_texts[k - 1]``;
``None`` when every step is good), ``solution_correct`` (bool), ``reference_answer`` (string),
and, for TRL's ``PRMTrainer`` (stepwise-supervision format), ``completions`` (the step texts)
and ``labels`` (list<bool>: the hard labels, or soft >= ``soft_threshold`` with
``label: soft``). A wrong solution is a useful negative for a PRM and is accepted; only
malformed ones are rejected.

Sample indexes: solution ``j`` is sample ``j`` (record id ``<seed>#<j>``); completion ``c`` of
solution ``j`` at step ``i`` is sample ``j * N + c`` of the step named ``complete-s{i}``
(distinct within a step and across solutions; the step name separates steps in the cache).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from distillery.backends.base import GenerationRequest, GenerationResult
from distillery.generate.candidates import PromptItem
from distillery.generate.checks import call_failure, refusal
from distillery.generate.strategy import GenerationContext, Strategy
from distillery.generate.templates import TemplatedConfig, combined, required_variables
from distillery.io.seeds import SeedRow
from distillery.registry import register
from distillery.verify.answers import extract_answer
from distillery.verify.math_answer import answers_equal

SPLIT_RULES = ("auto", "markers", "lines", "sentences")
_MARKER = re.compile(r"^[ \t]*(?:[#>*_-]+[ \t]*)*step[ \t]*\d+[ \t]*(?:\*\*)?[ \t]*[:.)\-]", re.I | re.M)
_ANSWER_LINE = re.compile(r"^\W*(?:####.*|(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*[:=]?\s*\S.{0,40})$", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9$(])")


def split_steps(text: str, rule: str = "auto") -> list[tuple[str, str]]:
    """The steps of a solution, each as ``(step text, prefix)``: the step stripped, and the
    solution's text from its start through the end of that step (what a completion continues).

    Rules (``auto`` tries them in this order and takes the first giving at least two steps):

    - ``markers``: a step starts at each line opening with ``Step k`` followed by ``:``, ``.``,
      ``)`` or ``-`` (markdown decoration such as ``**Step 2:**`` or ``### Step 2.`` allowed);
      text before the first marker joins step 1.
    - ``lines``: each non-blank line is a step.
    - ``sentences``: each sentence (ending ``.``, ``!`` or ``?`` followed by space and a capital,
      digit, ``$`` or ``(``) is a step; decimals such as ``3.5`` do not split.

    With every rule, a last step that only states the final answer (``#### 18``, ``The answer
    is 18``) is merged into the step before it, so the last step carries the answer.

    Args:
        text: the solution.
        rule: one of :data:`SPLIT_RULES`.

    Returns:
        The steps in order; fewer than two when the text cannot be split by ``rule``.

    Raises:
        ValueError: an unknown ``rule``.
    """
    if rule not in SPLIT_RULES:
        raise ValueError(f"unknown split rule {rule!r}; known: {', '.join(SPLIT_RULES)}")
    text = text.rstrip()
    rules = ("markers", "lines", "sentences") if rule == "auto" else (rule,)
    for r in rules:
        ends = _ends(text, r)
        spans = []
        start = 0
        for end in ends:
            if text[start:end].strip():
                spans.append((start, end))
            start = end
        if len(spans) >= 2 and _ANSWER_LINE.match(text[spans[-1][0]:spans[-1][1]].strip()):
            spans[-2:] = [(spans[-2][0], spans[-1][1])]
        if len(spans) >= 2 or r == rules[-1]:
            return [(text[s:e].strip(), text[:e].rstrip()) for s, e in spans]
    return []  # pragma: no cover - the loop always returns


def _ends(text: str, rule: str) -> list[int]:
    """End offsets of the segments of ``text`` under ``rule`` (the last is ``len(text)``)."""
    if rule == "markers":
        starts = [m.start() for m in _MARKER.finditer(text)]
        if len(starts) < 2:
            return [len(text)]
        return [*starts[1:], len(text)]
    if rule == "lines":
        ends = [m.start() for m in re.finditer(r"\n", text)]
        return [*ends, len(text)]
    return [*(m.start() for m in _SENTENCE_END.finditer(text)), len(text)]


def reference_answer(raw: Any) -> str | None:
    """The reference final answer of a seed field (a bare answer, or a solution ending in
    ``#### n`` or with ``\\boxed{}``), read as the ``math_answer`` verifier reads it."""
    if raw is None or not str(raw).strip():
        return None
    answer, method = extract_answer(str(raw))
    if answer is None or method in ("last_number", "last_equation", "answer_is"):
        return str(raw).strip()
    return answer


def reaches(text: str | None, reference: str, timeout_s: int = 5) -> tuple[bool, str | None]:
    """Whether the final answer of ``text`` equals ``reference``, and the answer extracted
    (``None`` when there is none). ``Step k:`` markers are removed first (their numbers are no
    answers). Comparison errors count as not reaching it."""
    predicted, _ = extract_answer(_MARKER.sub("", text or ""))
    if predicted is None:
        return False, None
    try:
        return answers_equal(reference, predicted, timeout_s), predicted
    except Exception:  # math-verify can raise on pathological inputs
        return False, predicted


def step_labels(hits: list[list[bool]], solution_correct: bool) -> tuple[list[int], list[float], int | None]:
    """Hard and soft labels of a solution's steps (Math-Shepherd's HE and SE).

    Args:
        hits: for each step but the last, whether each of its N completions reached the
            reference answer.
        solution_correct: whether the whole solution's answer is right (the last step's label).

    Returns:
        ``(hard, soft, first_wrong)``: ``hard[i]`` is 1 when any completion of step ``i + 1``
        reached the answer, ``soft[i]`` the fraction that did (0.0 for a step without
        completions); the last entries are the solution's correctness; ``first_wrong`` is the
        1-based number of the first step with hard label 0, or ``None``.
    """
    hard = [int(any(h)) for h in hits] + [int(solution_correct)]
    soft = [(sum(h) / len(h)) if h else 0.0 for h in hits] + [float(solution_correct)]
    first = next((i + 1 for i, v in enumerate(hard) if v == 0), None)
    return hard, soft, first


@register("strategy")
class ProcessLabelsConfig(TemplatedConfig):
    """Step-level labels by completion (Math-Shepherd, Wang et al., 2024; see the module doc).

    Attributes:
        question_field: seed field holding the problem (the record's prompt).
        reference_field: seed field holding the reference answer (GSM8K's ``answer``).
        solutions_per_problem: solutions written per problem (each a record).
        completions_per_step: N, completions from each step's prefix (the paper uses 8).
        split: how solutions are cut into steps (:func:`split_steps`): ``auto``, ``markers``,
            ``lines`` or ``sentences``.
        min_steps, max_steps: solutions with fewer or more steps are rejected.
        label: which estimate gives the boolean ``labels`` (``hard``: HE; ``soft``: SE >= ``soft_threshold``).
        soft_threshold: see ``label``.
        timeout_s: the answer checker's timeout, seconds.
        templates: overrides of ``solve`` and ``complete``.
    """

    strategy: Literal["process_labels"] = "process_labels"
    question_field: str = "question"
    reference_field: str = "answer"
    solutions_per_problem: int = Field(1, ge=1)
    completions_per_step: int = Field(4, ge=1)
    split: Literal["auto", "markers", "lines", "sentences"] = "auto"
    min_steps: int = Field(2, ge=1)
    max_steps: int = Field(12, ge=1)
    label: Literal["hard", "soft"] = "hard"
    soft_threshold: float = Field(0.5, ge=0, le=1)
    timeout_s: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _steps(self) -> ProcessLabelsConfig:
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps {self.min_steps} must not exceed max_steps {self.max_steps}")
        return self

    def build(self, recipe: Any) -> ProcessLabels:
        return ProcessLabels(self, recipe)


class ProcessLabels(Strategy):
    """Writes solutions, completes them from every step, and labels each step by the answers reached."""

    config: ProcessLabelsConfig
    outputs = {
        "step_texts": pa.list_(pa.string()),
        "step_labels_hard": pa.list_(pa.int64()),
        "step_labels_soft": pa.list_(pa.float64()),
        "first_wrong_step": pa.int64(),
        "solution_correct": pa.bool_(),
        "reference_answer": pa.string(),
        "completions": pa.list_(pa.string()),
        "labels": pa.list_(pa.bool_()),
    }

    def __init__(self, config: ProcessLabelsConfig, recipe: Any) -> None:
        super().__init__(config, recipe)
        self.templates = config.load_templates(recipe.base_dir)
        self.solve = self.templates["solve"]
        self.complete = self.templates["complete"]
        self.prompt = combined([self.solve, self.complete])

    @property
    def inputs(self) -> set[str]:
        c = self.config
        provided = {"question", "seed", "prefix", "step", "steps"}
        return ({c.question_field, c.reference_field} | required_variables(self.solve, provided)
                | required_variables(self.complete, provided))

    def describe(self) -> str:
        c = self.config
        return (f"**Generation**: process labels (Math-Shepherd, Wang et al., 2024): the teacher wrote "
                f"{c.solutions_per_problem} step-by-step solution(s) per problem; each solution was split into steps "
                f"(rule `{c.split}`) and completed {c.completions_per_step} times from every step; a step's hard label "
                f"is 1 when any completion reached the reference answer (`{c.reference_field}`), its soft label the "
                f"fraction that did; the last step's label is the solution's own correctness. `labels` uses the "
                f"{c.label} estimate.")

    def _outputs(self, steps: list[tuple[str, str]] | None = None, hits: list[list[bool]] | None = None,
                 correct: bool | None = None, reference: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"reference_answer": reference}
        if steps is not None:
            out["step_texts"] = out["completions"] = [s for s, _ in steps]
        if hits is not None and correct is not None:
            hard, soft, first = step_labels(hits, correct)
            c = self.config
            out.update(step_labels_hard=hard, step_labels_soft=soft, first_wrong_step=first, solution_correct=correct,
                       labels=[bool(h) for h in hard] if c.label == "hard" else [s >= c.soft_threshold for s in soft])
        return out

    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        c = self.config
        n = c.completions_per_step
        max_tokens = ctx.sampling.max_tokens if ctx.sampling else None
        texts, records = ctx.texts(seeds, c.question_field)
        made: dict[tuple[int, int], dict[str, Any]] = {}

        problems: list[tuple[PromptItem, str, dict[str, Any]]] = []  # item, reference, template variables
        for row, sid, question in texts:
            item = PromptItem(row, sid, [{"role": "user", "content": question}])
            reference = reference_answer(row.data.get(c.reference_field))
            if reference is None:
                made[(row.index, 0)] = ctx.record(item, None, 0, [], reject=f"bad_reference: seed field "
                                                  f"{c.reference_field!r} is missing or empty", **self._outputs())
                continue
            problems.append((item, reference, {**row.data, "seed": row.data, "question": question}))

        # 1. solve
        plan = [(p, j) for p in range(len(problems)) for j in range(c.solutions_per_problem)]
        asks = [GenerationRequest.make(self.solve.messages(problems[p][2]), ctx.sampling, j, step="solve") for p, j in plan]
        solutions: list[tuple[int, int, GenerationResult, dict[str, Any], list[tuple[str, str]], bool]] = []
        async for q, result in ctx.stream(asks):
            if not ctx.keep(result):
                continue
            p, j = plan[q]
            item, reference, _ = problems[p]
            step = ctx.step("solve", asks[q], result)
            reason = call_failure(result, "solve", max_tokens)
            if reason is None and refusal(result.text, 40):
                reason = "refusal: the teacher declined to solve the problem"
            steps: list[tuple[str, str]] = []
            correct = False
            if reason is None:
                correct, predicted = reaches(result.text, reference, c.timeout_s)
                steps = split_steps(result.text or "", c.split)
                if predicted is None:
                    reason = "no_answer: the solution states no final answer"
                elif len(steps) < c.min_steps:
                    reason = (f"unsplittable: {len(steps)} step(s) < min_steps={c.min_steps} "
                              f"(split rule {c.split!r})")
                elif len(steps) > c.max_steps:
                    reason = f"too_many_steps: {len(steps)} > max_steps={c.max_steps}"
            if reason is not None:
                made[(item.row.index, j)] = ctx.record(item, result.text, j, [step], reject=reason, raw=result.text,
                                                       **self._outputs(steps or None, reference=reference))
                continue
            solutions.append((p, j, result, step, steps, correct))

        # 2. complete from every step but the last
        jobs: list[tuple[int, int, int]] = []  # solution position, step number (1-based), completion index
        calls: list[GenerationRequest] = []
        for s, (p, j, _, _, steps, _) in enumerate(solutions):
            variables = problems[p][2]
            for i, (_, prefix) in enumerate(steps[:-1], start=1):
                messages = self.complete.messages({**variables, "prefix": prefix, "step": i, "steps": len(steps)})
                for k in range(n):
                    jobs.append((s, i, k))
                    calls.append(GenerationRequest.make(messages, ctx.sampling, j * n + k, step=f"complete-s{i}"))
        answers: dict[int, GenerationResult] = {}
        held: set[int] = set()
        async for q, result in ctx.stream(calls):
            if not ctx.keep(result):
                held.add(jobs[q][0])
                continue
            answers[q] = result

        # 3. label
        by_solution: dict[int, list[int]] = {}
        for q, (s, _, _) in enumerate(jobs):
            by_solution.setdefault(s, []).append(q)
        for s, (p, j, result, first, steps, correct) in enumerate(solutions):
            if s in held:
                continue  # a transient failure: the batch is redone from the cache
            item, reference, _ = problems[p]
            hits: list[list[bool]] = [[] for _ in steps[:-1]]
            provenance = [first]
            for q in by_solution.get(s, []):
                _, i, _ = jobs[q]
                completion = answers[q]
                provenance.append(ctx.step(f"complete-s{i}", calls[q], completion))
                ok = completion.error_kind is None and reaches(completion.text, reference, c.timeout_s)[0]
                hits[i - 1].append(ok)
            record = ctx.record(item, result.text, j, provenance, **self._outputs(steps, hits, correct, reference))
            record["finish_reason"] = result.finish_reason  # the solution's, not the last completion's
            made[(item.row.index, j)] = record
        return records + [made[key] for key in sorted(made)]
