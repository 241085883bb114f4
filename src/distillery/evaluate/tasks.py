"""Evaluation tasks: problems, prompts and the pipeline verifier that checks answers.

Each task returns problems with the chat messages sent to the model, the seed fields the
verifier reads (the same verifier configs recipes use, so evaluation and data filtering
agree), and a difficulty label for per-difficulty breakdowns.

- ``arith``: the built-in task (:mod:`distillery.builtin.arith`); ``test`` is the fixed
  held-out set, ``validation`` / ``train`` are generated; checked by running the program.
- ``gsm8k``: GSM8K test (shipped with the decontamination benchmarks; Cobbe et al., 2021);
  checked by the final answer (``#### n``).
- ``math500``: MATH-500 (Lightman et al., 2023, subset of Hendrycks et al., 2021); the
  reference is the solution's ``\\boxed{}``; difficulty is the subject.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distillery.errors import DistilleryError
from distillery.pipeline.config import StageConfig

GSM8K_SYSTEM = (
    "Solve the grade-school math problem. Reason step by step, then write the final answer on its own "
    'last line as "#### <number>".'
)
MATH_SYSTEM = "Solve the problem. Reason step by step and put the final answer in \\boxed{}."


@dataclass(frozen=True)
class EvalProblem:
    """One problem: ``messages`` to send, ``seed`` fields for the verifier, a ``difficulty`` label."""

    id: str
    messages: list[dict[str, str]]
    seed: dict[str, Any]
    difficulty: int | str | None = None


@dataclass
class Task:
    """A task's problems, its verifier config and a sensible generation budget (tokens)."""

    name: str
    problems: list[EvalProblem]
    verifier: StageConfig
    max_new_tokens: int


TASKS = ("arith", "gsm8k", "math500")


def load_task(name: str, split: str = "test", n: int | None = None, seed: int = 0,
              difficulties: tuple[int, ...] | None = None) -> Task:
    """The problems of ``name`` on ``split`` (the first ``n`` if given; for ``arith``, only
    ``difficulties`` if given).

    Raises:
        DistilleryError: unknown task, a split the task does not ship, or ``difficulties``
            for a task without difficulty levels.
    """
    if name == "arith":
        return _arith(split, n, seed, difficulties)
    if difficulties is not None:
        raise DistilleryError(f"task {name!r} has no difficulty levels to select")
    if name in ("gsm8k", "math500"):
        if split != "test":
            raise DistilleryError(f"task {name!r} ships only its test split (asked for {split!r})")
        return _gsm8k(n) if name == "gsm8k" else _math500(n)
    raise DistilleryError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")


def stratified(problems: list[Any], n: int) -> list[Any]:
    """The first ``n`` problems taking difficulties in turn (1, 2, 3, 4, 5, 1, ...), so a small
    evaluation covers every level equally; ``problems`` keeps its order within a level."""
    by_level: dict[Any, list[Any]] = {}
    for p in problems:
        by_level.setdefault(p.difficulty, []).append(p)
    levels = sorted(by_level)
    out: list[Any] = []
    i = 0
    while len(out) < n and any(by_level.values()):
        level = levels[i % len(levels)]
        if by_level[level]:
            out.append(by_level[level].pop(0))
        i += 1
    return out


def _arith(split: str, n: int | None, seed: int, difficulties: tuple[int, ...] | None = None) -> Task:
    from distillery.builtin.arith import generate, test_set
    from distillery.verify.python_program import PythonProgramConfig

    levels = tuple(difficulties or (1, 2, 3, 4, 5))
    if split == "test":
        pool = [p for p in test_set() if p.difficulty in levels]
        problems = stratified(pool, n) if n else pool
    elif split in ("train", "validation"):
        problems = list(generate(n or 1000, split=split, seed=seed, difficulties=levels))
    else:
        raise DistilleryError(f"task 'arith' has splits train, validation and test (asked for {split!r})")
    return Task(
        "arith",
        [
            EvalProblem(p.id, [{"role": "user", "content": p.question}], {"answer": p.answer}, p.difficulty)
            for p in problems
        ],
        PythonProgramConfig(reference="answer"),
        192,
    )


def _gsm8k(n: int | None) -> Task:
    from distillery.decontaminate.benchmarks import packaged_rows
    from distillery.verify.math_answer import MathAnswerConfig

    rows = list(packaged_rows("gsm8k", "test.jsonl.gz"))[:n] if n else list(packaged_rows("gsm8k", "test.jsonl.gz"))
    problems = [
        EvalProblem(
            r["id"],
            [{"role": "system", "content": GSM8K_SYSTEM}, {"role": "user", "content": r["question"]}],
            {"answer": r["answer"]},
        )
        for r in rows
    ]
    return Task("gsm8k", problems, MathAnswerConfig(reference="answer"), 512)


def _math500(n: int | None) -> Task:
    from distillery.decontaminate.benchmarks import packaged_rows
    from distillery.verify.math_answer import MathAnswerConfig

    rows = list(packaged_rows("math500", "test.jsonl.gz"))
    rows = rows[:n] if n else rows
    problems = [
        EvalProblem(
            r["unique_id"],
            [{"role": "system", "content": MATH_SYSTEM}, {"role": "user", "content": r["problem"]}],
            {"solution": r["solution"]},
            r["unique_id"].split("/")[1] if "/" in r["unique_id"] else None,
        )
        for r in rows
    ]
    return Task("math500", problems, MathAnswerConfig(reference="solution"), 1024)
