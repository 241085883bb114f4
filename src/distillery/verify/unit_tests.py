"""``verify: unit_tests``: run a response's code against the seed's unit tests in the sandbox.

Execution-based verification of code as in HumanEval (Chen et al., 2021, "Evaluating Large
Language Models Trained on Code") and MBPP (Austin et al., 2021, "Program Synthesis with Large
Language Models"): the code a response contains is completed with the seed's prompt where it is
only a function body, then each of the seed's tests runs in its own confined process of
:class:`distillery.verify.sandbox.Sandbox` (one time and memory limit per test), and the record
passes when the share of passing tests reaches ``min_pass_rate``.

Test code comes in three styles, split into units by its syntax tree (:func:`split_tests`):

- HumanEval's ``def check(candidate): ...``: each top-level statement of ``check`` holding an
  ``assert`` is one test, run after the statements before it that hold none (imports, setup);
- plain ``assert`` lines at module level (MBPP's ``test_list``, given as text or a list): one
  test each, after the module statements before it;
- pytest-style ``def test_*():`` functions: one test each, after the rest of the module.

``assert True`` (a constant condition) tests nothing and is dropped.

Only the harness inside the sandbox judges a test (:func:`harness_program`), never the
program's output or exit code. It captures the builtins before any candidate code runs (tests
see that copy, so patching ``builtins`` changes nothing for them), loads the seed's trusted
prompt code first and puts its helpers over the candidate's names, and wraps the entry
function so that every value it returns must be plain builtin data, exact types all the way
down (``int``, ``float``, ``complex``, ``str``, ``bytes``, ``bool``, ``None``, ``list``,
``tuple``, ``dict``, ``set``, ``frozenset``): an object with an always-true ``__eq__``, or an
``int`` subclass, fails the test as ``unsupported_return`` even when the test would swallow the
exception. ``sys.exit`` anywhere fails as ``exited``.

Limits of that judgement: the candidate runs in the same process as the harness, so code that
walks interpreter frames or writes forged result frames to the sandbox's result pipe by file
descriptor could fake a verdict; the sandbox keeps such code from harming anything outside
its process, not from lying about itself. The guard is against the failure modes models really
produce (early exits, printed "all tests passed", hard-coded objects), not a proof.

Failure reasons (text before ``":"`` is the report's category): ``failed_tests`` (assertion
failures and exceptions), ``no_program``, ``syntax_error``, ``load_error`` (the code raises while
loading), ``missing_entry``, ``timeout``, ``memory``, ``exited``, ``unsupported_return``,
``output_limit``, ``crashed`` (when every failing test failed that way), ``bad_tests`` (the
seed's test code does not parse or has no tests) and ``bad_seed``.
"""

from __future__ import annotations

import ast
import copy
import re
import textwrap
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field

from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import BuildContext, Check, Stage
from distillery.registry import register
from distillery.verify.python_program import extract_program
from distillery.verify.sandbox import ExecutionResult, Sandbox, SandboxLimits

HARNESS_ENTRY = "__distillery_test__"
TEST_STATUSES: tuple[str, ...] = (
    "passed",
    "failed",  # an assertion of the test failed
    "error",  # an exception other than AssertionError escaped the test
    "unsupported_return",  # the entry function returned something that is not plain builtin data
    "syntax_error",
    "load_error",  # the candidate's module code raised
    "missing_entry",
    "exited",
    "timeout",
    "memory",
    "output_limit",
    "crashed",
)
_FAILED = ("failed", "error")
_MAX_TESTS_DETAIL = 50
_MAX_ERROR = 300
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# -- test code -> units ------------------------------------------------------------------
@dataclass(frozen=True)
class UnitTest:
    """One test of a seed.

    Attributes:
        name: a short label (``"L12: assert candidate(1) == 2"``, or the test function's name).
        source: module-level code run after the suite's ``setup`` (Python source).
        call: a function ``source`` or ``setup`` defines, called after it ran, or ``None``.
        pass_candidate: ``call`` takes the (guarded) entry function as its one argument.
    """

    name: str
    source: str
    call: str | None = None
    pass_candidate: bool = False


@dataclass(frozen=True)
class UnitSuite:
    """A seed's tests split into units.

    Attributes:
        style: ``"check"``, ``"asserts"`` or ``"pytest"``.
        setup: module-level code run before each unit (definitions, imports, constants).
        units: the tests.
    """

    style: str
    setup: str
    units: tuple[UnitTest, ...] = field(default_factory=tuple)


def _has_assert(node: ast.AST) -> bool:
    """Whether ``node`` holds an ``assert`` outside nested function or class definitions."""
    if isinstance(node, ast.Assert):
        return True
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
        return False
    return any(_has_assert(child) for child in ast.iter_child_nodes(node))


def _trivial(node: ast.stmt) -> bool:
    return isinstance(node, ast.Assert) and isinstance(node.test, ast.Constant) and bool(node.test.value)


def _label(node: ast.stmt, offset: int = 0) -> str:
    text = " ".join(ast.unparse(node).split())
    if len(text) > 100:
        text = text[:97] + "..."
    return f"L{node.lineno + offset}: {text}"


def _calls(node: ast.stmt, names: set[str]) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id in names
    )


@lru_cache(maxsize=4096)
def split_tests(code: str) -> UnitSuite:
    """Split test code into units (see the module doc for the three styles).

    Args:
        code: Python source of the tests.

    Returns:
        the suite; ``check`` style when the module defines ``check``, else ``pytest`` style
        when it defines ``test_*`` functions (module-level asserts are then tests too), else
        ``asserts``.

    Raises:
        ValueError: the code does not parse, or holds no test.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ValueError(f"the test code does not parse: {type(exc).__name__}: {exc}") from None
    body = tree.body
    checks = [n for n in body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    pytest_fns = [n for n in body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")]
    if checks:
        check = checks[-1]
        # Module setup: everything but the tests themselves and calls that would run them.
        setup = [n for n in body if not _has_assert(n) and not _calls(n, {"check"})]
        units: list[UnitTest] = []
        before: list[ast.stmt] = []
        for stmt in check.body:
            if not _has_assert(stmt):
                before.append(stmt)
                continue
            if _trivial(stmt):
                continue
            fn = copy.copy(check)
            fn.name, fn.body, fn.decorator_list = "__distillery_unit__", [*before, stmt], []
            source = ast.unparse(ast.fix_missing_locations(ast.Module(body=[fn], type_ignores=[])))
            units.append(UnitTest(_label(stmt), source, "__distillery_unit__", bool(check.args.args)))
        if not units:  # no assert at the top of check: the whole of it is one test
            units.append(UnitTest("check", "", "check", bool(check.args.args)))
        return UnitSuite("check", ast.unparse(ast.Module(body=setup, type_ignores=[])), tuple(units))
    if pytest_fns:
        names = {n.name for n in pytest_fns}
        setup = [n for n in body if not _has_assert(n) and not _calls(n, names)]
        units = [UnitTest(n.name, "", n.name) for n in pytest_fns]
        units += [UnitTest(_label(n), ast.unparse(n)) for n in body if _has_assert(n) and not _trivial(n)]
        return UnitSuite("pytest", ast.unparse(ast.Module(body=setup, type_ignores=[])), tuple(units))
    units = []
    before = []
    for stmt in body:
        if not _has_assert(stmt):
            before.append(stmt)
            continue
        if _trivial(stmt):
            continue
        units.append(UnitTest(_label(stmt), ast.unparse(ast.Module(body=[*before, stmt], type_ignores=[]))))
    if not units:
        raise ValueError("the test code holds no test (no check(), test_* function or assert)")
    return UnitSuite("asserts", "", tuple(units))


def read_tests(raw: Any) -> str:
    """A seed's tests as one text: a string as is, a list (MBPP's ``test_list``) one item a line.

    Raises:
        ValueError: missing, empty, or neither text nor a list of texts.
    """
    if isinstance(raw, list | tuple) and all(isinstance(t, str) for t in raw):
        raw = "\n".join(raw)
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"no test code (got {type(raw).__name__})")
    return raw


# -- response -> program -------------------------------------------------------------------
def _compiles(source: str) -> tuple[bool, str | None]:
    try:
        compile(source, "<candidate>", "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
        return True, None
    except (SyntaxError, ValueError) as exc:
        line = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        return False, f"{type(exc).__name__}: {getattr(exc, 'msg', exc)}{line}"
    except (RecursionError, MemoryError) as exc:
        return False, f"{type(exc).__name__}: the code is nested too deeply"


def _defines(code: str, entry: str) -> bool:
    pattern = rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(entry)}[ \t]*\(|^{re.escape(entry)}[ \t]*="
    return re.search(pattern, code, re.MULTILINE) is not None


def prepare_program(response: str | None, entry: str, prompt: str | None = None) -> tuple[str | None, str]:
    """The candidate program of a ``response``, completed with the seed's ``prompt`` if needed.

    The code is the first fenced block defining ``entry`` (else the first block, else the
    whole response; :func:`distillery.verify.python_program.extract_program`). Code that
    defines ``entry`` runs after the prompt (its imports and helpers stay available; the new
    definition replaces the prompt's stub), or alone if the two do not compile together.
    Code that does not is taken as the body of the prompt's last function: appended as
    indented, else re-indented by four spaces.

    Returns:
        ``(program, form)`` with ``form`` like ``"code_block+prompt"``, ``"whole_response+body"``
        or ``"code_block"``; or ``(None, "no_program: ...")`` / ``(None, "syntax_error: ...")``.
    """
    code, source = extract_program(response, entry, any_block=True)
    if code is None:
        return None, f"no_program: {source}"
    prompt = prompt if prompt and prompt.strip() else None
    forms: list[tuple[str, str]] = []
    if _defines(code, entry):
        if prompt:
            forms.append((prompt.rstrip("\n") + "\n\n\n" + code, f"{source}+prompt"))
        forms.append((code, source))
    elif prompt:
        head = prompt if prompt.endswith("\n") else prompt + "\n"
        first = next((line for line in code.splitlines() if line.strip()), "")
        if first[:1] in (" ", "\t"):
            forms.append((head + code, f"{source}+body"))
        forms.append((head + textwrap.indent(textwrap.dedent(code), "    "), f"{source}+body"))
    else:
        return None, f"no_program: the code defines no {entry}()"
    error = None
    for program, form in forms:
        ok, why = _compiles(program)
        if ok:
            return program, form
        error = error or why
    return None, f"syntax_error: {error}"


# -- the harness -------------------------------------------------------------------------------
_HARNESS = '''\
def __distillery_test__():
    # Everything the harness needs after candidate code has run is bound here, first.
    import builtins as _bmod
    _B = dict(_bmod.__dict__)
    _type, _id, _len, _dict, _set, _callable = type, id, len, dict, set, callable
    _exec, _compile, _str, _any = exec, compile, str, any
    _BaseException, _Exception, _SystemExit = BaseException, Exception, SystemExit
    _AssertionError, _MemoryError = AssertionError, MemoryError
    _ATOMS = (int, float, complex, str, bytes, bool, type(None))
    _SEQS = (list, tuple, set, frozenset)
    _tname = type.__dict__["__qualname__"].__get__
    CANDIDATE, TRUSTED, SETUP, UNIT = {candidate!r}, {trusted!r}, {setup!r}, {unit!r}
    ENTRY, CALL, PASS_CANDIDATE = {entry!r}, {call!r}, {pass_candidate!r}

    class _NotPlain(_BaseException):  # not an Exception: a test's "except Exception" cannot hide it
        pass

    def _text(exc):
        try:
            name = _tname(_type(exc))
        except _BaseException:
            name = "Exception"
        try:
            msg = _str(exc)
        except _BaseException:
            msg = ""
        text = name + (": " + msg if msg else "")
        return text[:1000]

    def _why_not_plain(value):
        stack, seen, n = [value], _set(), 0
        while stack:
            v = stack.pop()
            n += 1
            if n > 1000000:
                return "returned value has more than 1000000 items"
            t = _type(v)
            if _any(t is a for a in _ATOMS):
                continue
            if _any(t is s for s in _SEQS) or t is dict:
                if _id(v) in seen:
                    continue
                seen.add(_id(v))
                if t is dict:
                    for k, x in _dict.items(v):
                        stack.append(k)
                        stack.append(x)
                else:
                    stack.extend(v)
                continue
            try:
                name = _tname(t)
            except _BaseException:
                name = "?"
            return "returned a " + _str(name) + ", not plain builtin data"
        return None

    flagged = []

    def _guard(fn):
        def candidate(*args, **kwargs):
            out = fn(*args, **kwargs)
            why = _why_not_plain(out)
            if why is not None:
                flagged.append(why)
                raise _NotPlain(why)
            return out
        return candidate

    trusted = {{}}
    if TRUSTED:
        trusted = {{"__name__": "__trusted__", "__builtins__": _dict(_B)}}
        try:
            _exec(_compile(TRUSTED, "<prompt>", "exec"), trusted)
        except _BaseException:
            trusted = {{}}
    ns = {{"__name__": "__candidate__", "__builtins__": _dict(_B)}}
    try:
        code = _compile(CANDIDATE, "<candidate>", "exec")
    except _BaseException as exc:
        return ("syntax_error", _text(exc))
    try:
        _exec(code, ns)
    except _SystemExit as exc:
        return ("exited", "the code called sys.exit while loading")
    except _MemoryError:
        return ("memory", "MemoryError while loading the code")
    except _BaseException as exc:
        return ("load_error", _text(exc))
    fn = _dict.get(ns, ENTRY)
    if not _callable(fn):
        return ("missing_entry", "the code defines no function " + ENTRY + "()")
    guarded = _guard(fn)
    tns = _dict(ns)
    for key, value in _dict.items(trusted):
        if _type(key) is str and key != ENTRY and not key.startswith("__"):
            tns[key] = value
    tns[ENTRY] = guarded
    tns["__builtins__"] = _dict(_B)
    tns["__name__"] = "__tests__"
    try:
        _exec(_compile(SETUP, "<tests>", "exec"), tns)
        _exec(_compile(UNIT, "<test>", "exec"), tns)
        if CALL:
            target = _dict.get(tns, CALL)
            if PASS_CANDIDATE:
                target(guarded)
            else:
                target()
    except _NotPlain as exc:
        return ("unsupported_return", flagged[0] if flagged else "returned non-plain data")
    except _AssertionError as exc:
        if flagged:
            return ("unsupported_return", flagged[0])
        return ("failed", _text(exc))
    except _SystemExit:
        return ("exited", "the code called sys.exit during the test")
    except _MemoryError:
        return ("memory", "MemoryError during the test")
    except _BaseException as exc:
        if flagged:
            return ("unsupported_return", flagged[0])
        return ("error", _text(exc))
    if flagged:
        return ("unsupported_return", flagged[0])
    return ("passed", None)
'''


def harness_program(program: str, suite: UnitSuite, unit: UnitTest, entry: str, trusted: str | None = None) -> str:
    """The sandbox program running ``unit`` of ``suite`` against ``program``.

    Every piece is embedded as a string literal and compiled only inside the sandbox, after
    the harness captured what it needs; its entry :data:`HARNESS_ENTRY` returns
    ``(status, error)`` with ``status`` in :data:`TEST_STATUSES`.

    Args:
        program: the candidate's code (from :func:`prepare_program`).
        suite, unit: the test to run.
        entry: the function under test.
        trusted: the seed's own code (its prompt): loaded first, its helpers override the candidate's.
    """
    return _HARNESS.format(
        candidate=program, trusted=trusted or "", setup=suite.setup, unit=unit.source,
        entry=entry, call=unit.call, pass_candidate=unit.pass_candidate,
    )


@dataclass
class UnitResult:
    """The outcome of one test: ``name``, ``passed``, ``status`` (:data:`TEST_STATUSES`), ``error``, ``wall_s``."""

    name: str
    passed: bool
    status: str
    error: str | None = None
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "status": self.status,
                "error": None if self.error is None else self.error[:_MAX_ERROR]}


def _test_result(unit: UnitTest, result: ExecutionResult) -> UnitResult:
    if result.status != "ok":
        status = result.status if result.status in TEST_STATUSES else "crashed"
        return UnitResult(unit.name, False, status, result.error or status, result.wall_s)
    value = result.value
    if (
        isinstance(value, tuple | list) and len(value) == 2 and value[0] in TEST_STATUSES
        and (value[1] is None or isinstance(value[1], str))
    ):
        status = value[0]
        return UnitResult(unit.name, status == "passed", status, value[1], result.wall_s)
    return UnitResult(unit.name, False, "crashed", "malformed verdict from the test harness", result.wall_s)


@dataclass
class UnitJob:
    """One program to test: ``program`` (runnable code), ``suite``, ``entry`` and the ``trusted`` prompt code."""

    program: str
    suite: UnitSuite
    entry: str
    trusted: str | None = None


def run_tests(sandbox: Sandbox, jobs: list[UnitJob]) -> list[list[UnitResult]]:
    """Run every test of every job in ``sandbox``, all in one parallel batch (one process per test).

    Returns:
        per job, one :class:`UnitResult` per unit in order.

    Raises:
        distillery.verify.sandbox.SandboxError: the sandbox is closed or cannot replace a worker.
    """
    programs: list[str] = []
    owners: list[tuple[int, UnitTest]] = []
    for j, job in enumerate(jobs):
        for unit in job.suite.units:
            programs.append(harness_program(job.program, job.suite, unit, job.entry, job.trusted))
            owners.append((j, unit))
    out: list[list[UnitResult]] = [[] for _ in jobs]
    if programs:
        for (j, unit), result in zip(owners, sandbox.run_many(programs, HARNESS_ENTRY), strict=True):
            out[j].append(_test_result(unit, result))
    return out


def summarize(results: list[UnitResult], min_pass_rate: float = 1.0) -> tuple[bool, str | None, dict[str, Any]]:
    """Verdict over one program's tests.

    Returns:
        ``(passed, reason, detail)``: passed when ``passed / total >= min_pass_rate``; the reason
        ``failed_tests: 3 of 7 failed (first: ...)``, or, when every failing test failed the same
        other way, that status (``timeout: 7 of 7 tests ...``); detail ``passed``, ``total``,
        ``pass_rate`` and ``tests`` (the first 50, errors truncated).
    """
    total = len(results)
    passed = sum(r.passed for r in results)
    rate = passed / total if total else 0.0
    detail: dict[str, Any] = {
        "passed": passed, "total": total, "pass_rate": round(rate, 4),
        "tests": [r.to_dict() for r in results[:_MAX_TESTS_DETAIL]],
    }
    if total and rate >= min_pass_rate:
        return True, None, detail
    failing = [r for r in results if not r.passed]
    if not failing:
        return False, "bad_tests: no test to run", detail
    first = failing[0]
    where = f"first: {first.name}: {(first.error or first.status)[:160]}"
    statuses = {r.status for r in failing}
    if len(statuses) == 1 and first.status not in _FAILED:
        return False, f"{first.status}: {len(failing)} of {total} tests ({where})", detail
    return False, f"failed_tests: {len(failing)} of {total} failed ({where})", detail


# -- the verifier ------------------------------------------------------------------------------------
@register("verifier")
class UnitTestsConfig(StageConfig):
    """Recipe entry of the unit-test verifier (HumanEval/MBPP-style execution; see the module doc).

    Attributes:
        tests: seed field holding the test code (text, or a list of assert lines).
        entry_point: seed field naming the function under test.
        entry: the function's name when no seed field names it (``entry_point`` then unused).
        prompt_field: seed field with code to complete (HumanEval's ``prompt``: imports, helpers,
            signature and docstring); the response may hold just the body or the whole function.
        timeout_s: wall-clock and CPU limit per test, seconds (CPU rounded up to whole seconds).
        memory_mb: address-space limit per test, MiB.
        min_pass_rate: share of tests that must pass, in (0, 1].
        max_tests: most tests run per record (the first ones).
        workers: sandbox worker processes (default: usable CPUs).
    """

    type: Literal["unit_tests"] = "unit_tests"
    tests: str = "test"
    entry_point: str = "entry_point"
    entry: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    prompt_field: str | None = None
    timeout_s: float = Field(default=3.0, gt=0)
    memory_mb: int = Field(default=256, ge=32)
    min_pass_rate: float = Field(default=1.0, gt=0, le=1)
    max_tests: int = Field(default=200, ge=1)
    workers: int | None = Field(default=None, ge=1)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The seed's test field, its entry-point field (unless ``entry`` is fixed) and its prompt field."""
        fields = [self.tests]
        if self.entry is None:
            fields.append(self.entry_point)
        if self.prompt_field:
            fields.append(self.prompt_field)
        return tuple(f"seed.{f}" for f in fields)

    def limits(self) -> SandboxLimits:
        """The per-test sandbox limits."""
        return SandboxLimits(wall_time_s=self.timeout_s, cpu_time_s=self.timeout_s, memory_mb=self.memory_mb)

    def build(self, ctx: BuildContext) -> UnitTestsVerifier:
        return UnitTestsVerifier(self)


class UnitTestsVerifier(Stage):
    """Passes a record when its code passes at least ``min_pass_rate`` of the seed's tests.

    The sandbox starts on the first batch and stops in :meth:`close`. Verdict detail: ``passed``,
    ``total``, ``pass_rate``, ``tests`` (``[{name, passed, status, error}]``, the first 50),
    ``program`` (how the code was formed: ``code_block+prompt``, ``whole_response+body``...)
    and ``style`` (``check``, ``asserts``, ``pytest``).
    """

    kind = "verify"
    cost = 200.0

    def __init__(self, config: UnitTestsConfig) -> None:
        super().__init__(config.stage_name)
        self.config = config
        self._sandbox: Sandbox | None = None

    @property
    def sandbox(self) -> Sandbox:
        """The running sandbox, started on first use."""
        if self._sandbox is None:
            self._sandbox = Sandbox(workers=self.config.workers, limits=self.config.limits())
        return self._sandbox

    def job(self, record: dict[str, Any]) -> tuple[UnitJob | None, Check | None, dict[str, Any]]:
        """The test job of ``record``, or the failing check when there is nothing to run."""
        c = self.config
        seed = record.get("seed") or {}
        entry = c.entry or seed.get(c.entry_point)
        if not isinstance(entry, str) or not _NAME.match(entry):
            return None, Check(False, f"bad_seed: seed field {c.entry_point!r} is not a function name: {entry!r}"), {}
        try:
            suite = split_tests(read_tests(seed.get(c.tests)))
        except ValueError as exc:
            return None, Check(False, f"bad_tests: seed field {c.tests!r}: {exc}"), {}
        if len(suite.units) > c.max_tests:
            suite = UnitSuite(suite.style, suite.setup, suite.units[: c.max_tests])
        prompt = seed.get(c.prompt_field) if c.prompt_field else None
        prompt = prompt if isinstance(prompt, str) else None
        detail: dict[str, Any] = {"style": suite.style, "total": len(suite.units)}
        program, form = prepare_program(record.get("response"), entry, prompt)
        if program is None:
            return None, Check(False, form[:_MAX_ERROR * 2], {**detail, "passed": 0}), detail
        detail["program"] = form
        return UnitJob(program, suite, entry, prompt), None, detail

    def check_batch(self, records: list[dict[str, Any]]) -> list[Check]:
        checks: list[Check | None] = [None] * len(records)
        jobs: list[tuple[int, UnitJob, dict[str, Any]]] = []
        for i, record in enumerate(records):
            job, check, detail = self.job(record)
            if job is None:
                checks[i] = check
            else:
                jobs.append((i, job, detail))
        if jobs:
            results = run_tests(self.sandbox, [job for _, job, _ in jobs])
            for (i, _, detail), res in zip(jobs, results, strict=True):
                passed, reason, more = summarize(res, self.config.min_pass_rate)
                checks[i] = Check(passed, reason, {**detail, **more})
        return checks  # type: ignore[return-value]

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
