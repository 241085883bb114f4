"""``distillery eval``: accuracy and pass@k of a model, checked by the pipeline's own verifiers.

The model answers each problem of a task (:mod:`distillery.evaluate.tasks`) through the same
backends the pipeline uses (in-process ``transformers`` or any OpenAI-compatible server);
each answer becomes a record and goes through the task's verifier stage
(``python_program`` or ``math_answer``), so a model is judged exactly as its training data was.

Greedy accuracy uses one greedy sample per problem; pass@k uses ``samples`` sampled answers
per problem and the unbiased estimator of Chen et al. (2021) (:mod:`distillery.evaluate.passk`).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from distillery.backends.base import GenerationRequest, GenerationResult, SamplingParams
from distillery.backends.config import SamplingConfig, TeacherConfig, build_backend
from distillery.evaluate.passk import pass_at_k
from distillery.evaluate.tasks import EvalProblem, Task, load_task
from distillery.pipeline.stage import BuildContext
from distillery.records import new_record


async def generate_all(config: TeacherConfig, requests: list[GenerationRequest]) -> list[GenerationResult]:
    """One result per request, in request order, from the (uncached) backend ``config`` names.

    Raises:
        BackendError: the backend cannot be built or reached.
    """
    backend = build_backend(config)
    out: list[GenerationResult | None] = [None] * len(requests)
    try:
        async for i, result in backend.stream(requests):
            out[i] = result
    finally:
        await backend.aclose()
    return out  # type: ignore[return-value]


def _verify(task: Task, problems: list[EvalProblem], results: list[GenerationResult], samples: int) -> list[bool]:
    """Whether each result is correct, through the task's verifier stage."""
    stage = task.verifier.build(BuildContext())
    records = []
    for j, result in enumerate(results):
        p = problems[j // samples]
        records.append(new_record(id=f"{p.id}#{j % samples}", seed=p.seed, prompt=p.messages, response=result.text or ""))
    try:
        live = [r for r in records if r["response"]]
        stage.apply(live)
    finally:
        stage.close()
    return [bool(r["response"]) and r["accepted"] for r in records]


def _summarise(problems: list[EvalProblem], correct: list[bool], samples: int, ks: list[int]) -> dict[str, Any]:
    per_problem = [sum(correct[i * samples : (i + 1) * samples]) for i in range(len(problems))]
    out: dict[str, Any] = {
        "accuracy": sum(correct) / len(correct) if correct else 0.0,
        "pass_at_k": {f"pass@{k}": sum(pass_at_k(samples, c, k) for c in per_problem) / len(problems) for k in ks if k <= samples},
    }
    groups: dict[Any, list[int]] = defaultdict(list)
    for p, c in zip(problems, per_problem, strict=True):
        groups[p.difficulty].append(c)
    if len(groups) > 1 or None not in groups:
        out["per_difficulty"] = {
            str(d): {
                "n": len(cs),
                "accuracy": sum(cs) / (len(cs) * samples),
                **{f"pass@{k}": sum(pass_at_k(samples, c, k) for c in cs) / len(cs) for k in ks if k <= samples},
            }
            for d, cs in sorted(groups.items(), key=lambda kv: str(kv[0]))
        }
    out["correct_per_problem"] = {p.id: c for p, c in zip(problems, per_problem, strict=True)}
    return out


def evaluate(
    model: str,
    task: str = "arith",
    split: str = "test",
    n: int | None = None,
    samples: int = 0,
    ks: tuple[int, ...] = (1,),
    temperature: float = 0.8,
    top_p: float = 0.95,
    max_new_tokens: int | None = None,
    backend: str = "transformers",
    base_url: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    seed: int = 0,
    difficulties: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``task``.

    Args:
        model: a local folder, Hub name or ``builtin:teacher`` / ``builtin:student`` (``transformers``
            backend), or the model name a server knows (``openai`` backend with ``base_url``).
        task, split, n, difficulties: which problems (see :func:`~distillery.evaluate.tasks.load_task`).
        samples: sampled answers per problem for pass@k (0: greedy only).
        ks: the k values of pass@k (each <= ``samples``).
        temperature, top_p: sampling parameters of the pass@k samples.
        max_new_tokens: generation budget (default: the task's).
        seed: base seed of the sampled answers.

    Returns:
        ``{"model", "task", "split", "n_problems", "greedy": {accuracy, per_difficulty, ...},
        "sampled": {samples, temperature, accuracy, pass_at_k, per_difficulty, ...} | None,
        "seconds", "tokens_out"}``.

    Raises:
        DistilleryError: unknown task or split; BackendError: the model cannot be used;
        ValueError: a k larger than ``samples``.
    """
    if samples and any(k > samples for k in ks):
        raise ValueError(f"pass@k needs k <= samples; got ks={ks}, samples={samples}")
    spec = load_task(task, split, n, seed, difficulties)
    budget = max_new_tokens or spec.max_new_tokens
    started = time.perf_counter()
    config = TeacherConfig(
        backend=backend, model=model, base_url=base_url, batch_size=batch_size, device=device,
        sampling=SamplingConfig(temperature=0.0, max_tokens=budget, seed=seed),
    )
    greedy = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=budget, seed=seed)
    requests = [GenerationRequest.make(p.messages, greedy, 0) for p in spec.problems]
    sampled_params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=budget, seed=seed)
    requests += [GenerationRequest.make(p.messages, sampled_params, k) for p in spec.problems for k in range(samples)]
    results = asyncio.run(generate_all(config, requests))
    n_greedy = len(spec.problems)
    report: dict[str, Any] = {
        "model": model,
        "task": task,
        "split": split,
        "n_problems": n_greedy,
        "greedy": _summarise(spec.problems, _verify(spec, spec.problems, results[:n_greedy], 1), 1, [1]),
        "sampled": None,
    }
    if samples:
        correct = _verify(spec, spec.problems, results[n_greedy:], samples)
        report["sampled"] = {"samples": samples, "temperature": temperature, "top_p": top_p,
                             **_summarise(spec.problems, correct, samples, list(ks))}
    report["tokens_out"] = sum(r.tokens_out for r in results)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report
