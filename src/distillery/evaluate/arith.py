"""Accuracy of a model on ``arith`` problems, checked by execution like the pipeline's verifier.

The model is prompted exactly as the built-in models were trained (one user message holding
the question; the assistant answers with a Python program defining ``solution()``),
generates through :class:`~distillery.backends.transformers_local.TransformersBackend`, and
each response is checked by the pipeline's own ``python_program`` verifier
(:class:`~distillery.verify.python_program.PythonProgramVerifier`: program extracted, run in
the sandbox, value compared with the problem's answer).
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from distillery.backends.base import GenerationRequest, GenerationResult, SamplingParams
from distillery.builtin.arith import ArithProblem

#: Enough new tokens for the longest difficulty-5 gold program (about 115 tokens with the
#: built-in tokenizer), with room for a model that rambles a little.
DEFAULT_MAX_NEW_TOKENS = 192


def arith_messages(question: str) -> list[dict[str, str]]:
    """The chat prompt of a question, as the built-in models were trained on it."""
    return [{"role": "user", "content": question}]


def _check(responses: list[GenerationResult], references: list[str], workers: int, timeout_s: float) -> list[str]:
    """Verdict per response: ``"correct"``, or the ``python_program`` verifier's reason category
    (``"wrong_answer"``, ``"no_program"``, a sandbox status such as ``"syntax_error"``), or the
    generation's error kind. ``references`` are the problems' answer strings."""
    from distillery.verify.python_program import PythonProgramConfig, PythonProgramVerifier

    verdicts: list[str | None] = [None] * len(responses)
    live = []
    for i, r in enumerate(responses):
        if r.text is None:
            verdicts[i] = r.error_kind or "generation_error"
        else:
            live.append(i)
    if live:
        verifier = PythonProgramVerifier(PythonProgramConfig(reference="answer", workers=workers, timeout_s=timeout_s))
        try:
            checks = verifier.check_batch([{"seed": {"answer": references[i]}, "response": responses[i].text} for i in live])
        finally:
            verifier.close()
        for i, check in zip(live, checks, strict=True):
            verdicts[i] = "correct" if check.passed else (check.reason or "rejected").split(":", 1)[0]
    return verdicts  # type: ignore[return-value]


def evaluate_arith(
    model: str,
    problems: Sequence[ArithProblem],
    *,
    batch_size: int = 64,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    top_p: float = 1.0,
    samples: int = 1,
    seed: int = 0,
    device: str = "cpu",
    workers: int = 2,
    timeout_s: float = 2.0,
) -> dict[str, Any]:
    """Generate ``samples`` programs per problem with ``model`` and score them by execution.

    Greedy decoding when ``temperature == 0`` (then use ``samples=1``: greedy samples are
    identical), else sampling at ``temperature``/``top_p`` with seeds derived from ``seed``
    (repeatable run to run on the same machine).

    Args:
        model: a local model folder or ``builtin:teacher`` / ``builtin:student``.
        problems: ``arith`` problems (e.g. :func:`~distillery.builtin.arith.test_set`).
        batch_size: prompts per ``generate`` call.
        max_new_tokens: generation budget per response, tokens; a response cut off is
            usually an unfinished program and fails.
        samples: responses per problem.
        device: torch device for the model (``"cpu"``, ``"cuda"``, ``"auto"``).
        workers: sandbox worker processes; timeout_s: wall and CPU seconds per program.

    Returns:
        ``{"model", "n_problems", "samples", "temperature", "accuracy", "per_difficulty",
        "verdicts", "problems"}`` where ``accuracy`` is the fraction of all responses that are
        correct (mean per-sample accuracy, i.e. pass@1), ``per_difficulty`` maps each
        difficulty (int) to ``{"n", "correct", "accuracy"}`` over its responses, ``verdicts``
        counts verdicts (``correct``, ``wrong_answer``, ``no_program`` or a sandbox status such
        as ``syntax_error``), and ``problems`` lists ``{"id", "difficulty", "correct"}`` per
        problem with ``correct`` the number of correct samples (for pass@k).

    Raises:
        ValueError: ``samples < 1``, or ``temperature == 0`` with ``samples > 1``.
        BackendError: the model cannot be loaded.
    """
    from distillery.backends.config import TeacherConfig
    from distillery.evaluate.harness import generate_all

    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if temperature == 0 and samples > 1:
        raise ValueError("greedy decoding (temperature 0) gives identical samples; use samples=1")
    sampling = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed)
    requests = [
        GenerationRequest.make(arith_messages(p.question), sampling, sample_index=k)
        for p in problems
        for k in range(samples)
    ]
    references = [p.answer for p in problems for _ in range(samples)]
    config = TeacherConfig(backend="transformers", model=model, device=device, batch_size=batch_size)
    responses = asyncio.run(generate_all(config, requests)) if requests else []
    verdicts = _check(responses, references, workers, timeout_s)

    per_problem = []
    by_level: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for j, p in enumerate(problems):
        correct = sum(v == "correct" for v in verdicts[j * samples : (j + 1) * samples])
        per_problem.append({"id": p.id, "difficulty": p.difficulty, "correct": correct})
        by_level[p.difficulty][0] += samples
        by_level[p.difficulty][1] += correct
    total = len(verdicts)
    n_correct = sum(v == "correct" for v in verdicts)
    return {
        "model": model,
        "n_problems": len(problems),
        "samples": samples,
        "temperature": temperature,
        "accuracy": n_correct / total if total else 0.0,
        "per_difficulty": {
            d: {"n": n, "correct": c, "accuracy": c / n} for d, (n, c) in sorted(by_level.items())
        },
        "verdicts": dict(Counter(verdicts)),
        "problems": per_problem,
    }
