"""``generation: {strategy: code_tests}``: code solutions kept when they pass teacher-written unit tests.

After the execution-feedback recipes for code data — CodeT (Chen et al., 2022, "CodeT: Code
Generation with Generated Tests": the model writes both solutions and tests, and solutions are
judged by running them against the tests) and the test-filtered synthetic code sets that
followed (e.g. Wei et al., 2024, "SelfCodeAlign"): for each problem

1. ``problem`` (only with ``problems: generate``): the teacher invents a new exercise from a
   seed exercise, as JSON ``{"problem", "entry_point"}``;
2. ``tests``: the teacher writes assert-style unit tests for the function (split into single
   tests by :func:`distillery.verify.unit_tests.split_tests`);
3. ``solve``: ``solutions`` samples of a solution.

Where the seed has a reference solution, every test is first run against it and the tests that
reject it are dropped and counted (``tests_dropped``): the tests are wrong, not the reference.
A problem left with fewer than ``min_tests`` tests yields only rejected records
(``too_few_tests``). Each solution then runs against the surviving tests in the sandbox
(:class:`distillery.verify.sandbox.Sandbox`, one confined process per test, the in-sandbox
harness of ``verify: unit_tests``); passing solutions are kept, up to ``keep`` distinct ones per
problem, distinct meaning a different normalized syntax tree (:func:`normalized_ast`:
docstrings, comments, layout and local names do not count).

A record's ``prompt`` is the ``solve`` request (the problem and the function's name: what the
student trains on), its ``response`` the solution's text; the ``problem`` and ``tests`` calls are
in ``steps``. Output fields: ``problem``, ``entry_point``, ``problem_source`` (``seed`` or
``generated``), ``unit_tests`` (the surviving tests' code), ``tests_total`` (tests written),
``tests_dropped`` (rejected by the reference), ``tests_passed`` (by this solution) and
``solution_ast`` (hash of the normalized tree). Rejection reasons: the failed call's
(``truncated``, ``empty_response``...), ``malformed_problem``, ``bad_tests``, ``bad_reference``,
``too_few_tests``, ``no_program``/``syntax_error``, the unit-test verdicts (``failed_tests``,
``timeout``, ``exited``, ``unsupported_return``...), ``duplicate_solution`` and
``enough_solutions``.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from distillery.backends.base import GenerationRequest
from distillery.generate import parse
from distillery.generate.candidates import PromptItem
from distillery.generate.checks import call_failure, refusal
from distillery.generate.strategy import GenerationContext, Strategy
from distillery.generate.templates import TemplatedConfig, combined, required_variables
from distillery.io.seeds import BadRow, SeedRow
from distillery.registry import register
from distillery.verify.python_program import extract_program
from distillery.verify.sandbox import Sandbox, SandboxLimits
from distillery.verify.unit_tests import (
    UnitJob,
    UnitSuite,
    prepare_program,
    run_tests,
    split_tests,
    summarize,
)

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"problem": {"type": "string"}, "entry_point": {"type": "string"}},
    "required": ["problem", "entry_point"],
}
"""The JSON schema sent with the ``problem`` call."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BUILTINS = frozenset(dir(builtins))


# -- dedup by normalized syntax tree -------------------------------------------------------------
class _Normalize(ast.NodeTransformer):
    """Drops docstrings and renames every non-builtin, non-top-level name to ``v0, v1, ...``."""

    def __init__(self, keep: set[str]) -> None:
        self.keep = keep
        self.names: dict[str, str] = {}

    def _name(self, name: str) -> str:
        if name in self.keep or name in _BUILTINS:
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def _strip_docstring(self, node: ast.AST) -> None:
        body = getattr(node, "body", None)
        if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]

    def generic_visit(self, node: ast.AST) -> ast.AST:
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            self._strip_docstring(node)
        return super().generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._name(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self._name(node.arg)
        node.annotation = None
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.returns = None
        return self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]


def normalized_ast(code: str) -> str | None:
    """A hash of ``code``'s syntax tree with docstrings, comments, layout, annotations and the
    names of arguments and variables normalized away (top-level definitions keep their names).

    Returns:
        16 hex digits, or ``None`` when the code does not parse.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    keep = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
    tree = _Normalize(keep).visit(tree)
    dump = ast.dump(tree, annotate_fields=False, include_attributes=False)
    return hashlib.sha256(dump.encode()).hexdigest()[:16]


def extract_tests(text: str | None) -> str | None:
    """The test code of a ``tests`` response: its first fenced block, else the whole text."""
    code, _ = extract_program(text, "__no_entry__", any_block=True)
    return code




# -- the strategy ------------------------------------------------------------------------------------
@register("strategy")
class CodeTestsConfig(TemplatedConfig):
    """Code solutions filtered by teacher-written unit tests (CodeT, Chen et al., 2022; see the module doc).

    Attributes:
        problems: ``seeds`` (each seed is a problem) or ``generate`` (the teacher writes
            ``new_problems`` new problems from each seed problem).
        problem_field: seed field with the problem statement.
        entry_field: seed field naming the function (seeds mode).
        reference_field: seed field with a reference solution (seeds mode; ``null``: none);
            tests that reject it are dropped. A seed without the field has no reference.
        new_problems: problems generated per seed (``generate`` mode).
        solutions: solutions sampled per problem.
        keep: most distinct passing solutions kept per problem.
        n_tests: how many tests the ``tests`` template asks for.
        min_tests: fewest tests a problem must keep (after the reference check).
        timeout_s, memory_mb: sandbox limits per test (seconds, MiB).
        workers: sandbox worker processes (default: usable CPUs).
        templates: overrides of ``problem``, ``tests`` and ``solve``.
    """

    strategy: Literal["code_tests"] = "code_tests"
    problems: Literal["seeds", "generate"] = "seeds"
    problem_field: str = "problem"
    entry_field: str = "entry_point"
    reference_field: str | None = "solution"
    new_problems: int = Field(1, ge=1)
    solutions: int = Field(4, ge=1)
    keep: int = Field(2, ge=1)
    n_tests: int = Field(6, ge=1)
    min_tests: int = Field(3, ge=1)
    timeout_s: float = Field(2.0, gt=0)
    memory_mb: int = Field(256, ge=32)
    workers: int | None = Field(None, ge=1)

    def build(self, recipe: Any) -> CodeTests:
        return CodeTests(self, recipe)


@dataclass
class _Problem:
    item: PromptItem  # the student's prompt: the solve request
    problem: str
    entry: str
    source: str  # seed | generated
    base: int  # first sample index of its records
    reference: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    suite: UnitSuite | None = None
    total: int = 0
    dropped: int = 0
    failure: tuple[str, str | None] | None = None  # reason, raw text


class CodeTests(Strategy):
    """Problems -> tests and solutions from the teacher -> solutions run against the tests -> distinct passing ones."""

    config: CodeTestsConfig
    outputs = {
        "problem": pa.string(),
        "entry_point": pa.string(),
        "problem_source": pa.string(),
        "unit_tests": pa.string(),
        "tests_total": pa.int64(),
        "tests_dropped": pa.int64(),
        "tests_passed": pa.int64(),
        "solution_ast": pa.string(),
    }

    def __init__(self, config: CodeTestsConfig, recipe: Any) -> None:
        super().__init__(config, recipe)
        self.templates = config.load_templates(recipe.base_dir)
        self.prompt = combined([self.templates[n] for n in ("problem", "tests", "solve")])
        self._sandbox: Sandbox | None = None

    @property
    def inputs(self) -> set[str]:
        c = self.config
        provided = {"problem", "entry_point", "example", "n_tests", "seed"}
        fields = {c.problem_field}
        if c.problems == "seeds":
            fields.add(c.entry_field)
        for name in ("problem", "tests", "solve") if c.problems == "generate" else ("tests", "solve"):
            fields |= required_variables(self.templates[name], provided)
        return fields

    def describe(self) -> str:
        c = self.config
        where = "seed problems" if c.problems == "seeds" else f"{c.new_problems} problem(s) generated per seed problem"
        return (f"**Generation**: code with generated tests (after CodeT, Chen et al., 2022): for {where}, the teacher "
                f"wrote unit tests and {c.solutions} solution(s); tests rejecting a reference solution were dropped, "
                f"solutions were run against the rest in the sandbox, and up to {c.keep} distinct passing solutions "
                "(by normalized syntax tree) were kept per problem.")

    @property
    def sandbox(self) -> Sandbox:
        """The strategy's sandbox, started on first use."""
        if self._sandbox is None:
            c = self.config
            limits = SandboxLimits(wall_time_s=c.timeout_s, cpu_time_s=c.timeout_s, memory_mb=c.memory_mb)
            self._sandbox = Sandbox(workers=c.workers, limits=limits)
        return self._sandbox

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    def _solve_item(self, row: SeedRow, sid: str, problem: str, entry: str) -> PromptItem:
        messages = self.templates["solve"].messages({**row.data, "seed": row.data, "problem": problem, "entry_point": entry})
        return PromptItem(row, sid, [m for m in messages if m["role"] != "system"])

    def _messages(self, name: str, p: _Problem) -> list[dict[str, str]]:
        data = p.item.row.data
        return self.templates[name].messages({**data, "seed": data, "problem": p.problem, "entry_point": p.entry,
                                              "n_tests": self.config.n_tests})

    async def _problems(self, seeds: list[SeedRow], ctx: GenerationContext) -> tuple[list[_Problem], list[dict[str, Any]]]:
        c = self.config
        docs, records = ctx.texts(seeds, c.problem_field)
        problems: list[_Problem] = []
        if c.problems == "seeds":
            for row, sid, text in docs:
                entry = row.data.get(c.entry_field)
                if not isinstance(entry, str) or not _NAME.match(entry):
                    records.append(ctx.bad_row(BadRow(row.index, row.line, f"bad_entry_point: {entry!r} is not a "
                                                      f"function name", field=c.entry_field)))
                    continue
                ref = row.data.get(c.reference_field) if c.reference_field else None
                ref = ref if isinstance(ref, str) and ref.strip() else None
                problems.append(_Problem(self._solve_item(row, sid, text, entry), text, entry, "seed", 0, ref))
            return problems, records
        asks, meta = [], []
        for row, sid, text in docs:
            for j in range(c.new_problems):
                messages = self.templates["problem"].messages({**row.data, "seed": row.data, "example": text})
                asks.append(GenerationRequest.make(messages, ctx.sampling, j, step="problem", schema=PROBLEM_SCHEMA))
                meta.append((row, sid, j, messages))
        made: dict[int, _Problem | dict[str, Any]] = {}
        async for i, result in ctx.stream(asks):
            if not ctx.keep(result):
                continue
            row, sid, j, messages = meta[i]
            step = ctx.step("problem", asks[i], result)
            reason = call_failure(result, "problem", ctx.sampling.max_tokens if ctx.sampling else None)
            value = None
            if reason is None and refusal(result.text, 60, at_start=True):
                reason = "refusal: the teacher declined to write a problem"
            if reason is None:
                value, reason = parse.json_fields(result.text, {"problem": str, "entry_point": str})
            if reason is None and not _NAME.match(value["entry_point"].strip()):
                reason = f"malformed_problem: entry_point {value['entry_point'][:40]!r} is not a function name"
            if reason is None and len(value["problem"].split()) < 5:
                reason = "malformed_problem: the problem statement is too short"
            if reason is not None:
                if reason.startswith("malformed_json"):
                    reason = "malformed_problem: " + reason
                record = ctx.record(PromptItem(row, sid, messages), None, j * c.solutions, [step], reject=reason,
                                    raw=result.text, problem_source="generated")
                made[i] = record
                continue
            problem, entry = value["problem"].strip(), value["entry_point"].strip()
            made[i] = _Problem(self._solve_item(row, sid, problem, entry), problem, entry, "generated",
                               j * c.solutions, None, [step])
        for i in sorted(made):
            (problems if isinstance(made[i], _Problem) else records).append(made[i])
        return problems, records

    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        c = self.config
        problems, records = await self._problems(seeds, ctx)
        max_tokens = ctx.sampling.max_tokens if ctx.sampling else None
        # One tests call and `solutions` solve calls per problem, all at once.
        requests: list[GenerationRequest] = []
        owner: list[tuple[int, int | None]] = []  # problem, solution k (None: the tests call)
        for p_i, p in enumerate(problems):
            requests.append(GenerationRequest.make(self._messages("tests", p), ctx.sampling, p.base, step="tests"))
            owner.append((p_i, None))
            for k in range(c.solutions):
                requests.append(GenerationRequest.make(self._messages("solve", p), ctx.sampling, p.base + k, step="solve"))
                owner.append((p_i, k))
        results: dict[int, Any] = {}
        async for i, result in ctx.stream(requests):
            if ctx.keep(result):
                results[i] = result
        solutions: dict[int, list[tuple[int, Any]]] = {p_i: [] for p_i in range(len(problems))}
        tests_done: set[int] = set()
        for i in sorted(results):
            p_i, k = owner[i]
            p = problems[p_i]
            result = results[i]
            if k is not None:
                solutions[p_i].append((k, result))
                continue
            tests_done.add(p_i)
            p.steps = [*p.steps, ctx.step("tests", requests[i], result)]
            reason = call_failure(result, "tests", max_tokens)
            if reason is None:
                try:
                    p.suite = split_tests(extract_tests(result.text) or "")
                    p.total = len(p.suite.units)
                except ValueError as exc:
                    reason = f"bad_tests: {exc}"
            if reason is not None:
                p.failure = (reason, result.text)
        # A problem whose tests call failed transiently waits for the next run (its solutions too).
        live = [p_i for p_i in range(len(problems)) if p_i in tests_done]
        await self._check_tests([problems[p_i] for p_i in live])

        made: list[dict[str, Any]] = []
        jobs: list[tuple[dict[str, Any], _Problem, UnitJob]] = []
        for p_i in live:
            p = problems[p_i]
            for k, result in sorted(solutions[p_i], key=lambda kr: kr[0]):
                record = ctx.candidate(p.item, result, p.base + k, p.steps, **self._fields(p))
                made.append(record)
                if not record["accepted"]:
                    continue
                if p.failure is not None:
                    ctx.reject(record, p.failure[0], raw=p.failure[1])
                    continue
                program, form = prepare_program(result.text, p.entry)
                if program is None:
                    ctx.reject(record, form)
                    continue
                record["solution_ast"] = normalized_ast(program)
                jobs.append((record, p, UnitJob(program, p.suite, p.entry)))  # type: ignore[arg-type]
        if jobs:
            outcomes = await asyncio.to_thread(run_tests, self.sandbox, [j for _, _, j in jobs])
            kept: dict[int, dict[str, str]] = {}  # problem -> solution hash -> record id
            for (record, p, _), tests in zip(jobs, outcomes, strict=True):
                passed, reason, detail = summarize(tests)
                record["tests_passed"] = detail["passed"]
                if not passed:
                    ctx.reject(record, reason or "failed_tests", raw=None)
                    continue
                seen = kept.setdefault(id(p), {})
                h = record["solution_ast"]
                if h in seen:
                    ctx.reject(record, f"duplicate_solution: same normalized syntax tree as {seen[h]}")
                elif len(seen) >= c.keep:
                    ctx.reject(record, f"enough_solutions: {c.keep} distinct passing solution(s) already kept")
                else:
                    seen[h] = record["id"]
        return records + made

    def _fields(self, p: _Problem) -> dict[str, Any]:
        code = None
        if p.suite is not None:
            code = "\n\n".join(u.source or u.call or "" for u in p.suite.units)
        return {"problem": p.problem, "entry_point": p.entry, "problem_source": p.source, "unit_tests": code,
                "tests_total": p.total, "tests_dropped": p.dropped, "tests_passed": None, "solution_ast": None}

    async def _check_tests(self, problems: list[_Problem]) -> None:
        """Drop the tests that reject each problem's reference; fail problems left with too few tests."""
        c = self.config
        jobs, owners = [], []
        for p in problems:
            if p.failure is not None or p.suite is None or p.reference is None:
                continue
            program, form = prepare_program(p.reference, p.entry)
            if program is None:
                p.failure = (f"bad_reference: the seed's reference solution: {form}", None)
                continue
            jobs.append(UnitJob(program, p.suite, p.entry))
            owners.append(p)
        if jobs:
            outcomes = await asyncio.to_thread(run_tests, self.sandbox, jobs)
            for p, tests in zip(owners, outcomes, strict=True):
                units = tuple(u for u, t in zip(p.suite.units, tests, strict=True) if t.passed)  # type: ignore[union-attr]
                p.dropped = p.total - len(units)
                p.suite = UnitSuite(p.suite.style, p.suite.setup, units)  # type: ignore[union-attr]
        for p in problems:
            if p.failure is None and p.suite is not None and len(p.suite.units) < c.min_tests:
                p.failure = (f"too_few_tests: {len(p.suite.units)} of {p.total} test(s) left "
                             f"({p.dropped} rejected the reference) < {c.min_tests}", None)
