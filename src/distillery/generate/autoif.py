"""``generation: {strategy: autoif}``: instruction following with execution feedback (AutoIF).

After Dong et al., 2024, "Self-play with Execution Feedback: Improving Instruction-Following
Capabilities of Large Language Models" (AutoIF). Whether a reply follows a verifiable
constraint ("Answer in fewer than 50 words.") is turned into a code-verification problem:

1. **Constraints.** Each seed (a query, field ``query_field``) is paired with
   ``constraints_per_query`` constraints drawn from a pool (shipped:
   ``distillery/generate/data/autoif/constraints.jsonl``, 28 constraints of types ``length``,
   ``keywords``, ``format``, ``case``, ``json``, ``sections`` written for distillery; or the
   recipe's ``constraints`` file). Draw ``k`` of seed ``s`` uses
   ``random.Random(f"{seed}-{s}-{k}")`` and never repeats a constraint within a seed.
2. **Verification functions** (step ``functions``). For each distinct constraint of a batch the
   teacher writes ``functions_per_constraint`` (K) answers, each a Python function
   ``evaluate(response: str) -> bool`` and a JSON list of test cases
   ``[{"response": ..., "expected": true|false}]`` (:func:`parse_function_answer` reads fenced
   blocks, a JSON object with the function in a string, or bare code; what it cannot read is a
   dropped function with its reason).
3. **Cross-validation** (:func:`cross_validate`), our reading of the paper's Section 2 and of the
   authors' released code (``3_cross_validation.py``): the test cases of all K answers are pooled
   (duplicates merged, a reply given both labels dropped); every function runs in the sandbox on
   every case; a case is kept only when at least one function agrees with its label; a function
   is kept when its accuracy on the kept cases is at least ``function_threshold`` (0.8, the
   authors' value). A constraint with fewer than ``min_functions`` usable functions or
   ``min_test_cases`` kept cases (the authors: 3 and 10), or with no function kept, has no
   verifier: its prompts are rejected (``no_verifier: ...``) and no reply is requested.
4. **Responses** (step ``respond``). The teacher answers ``responses_per_query`` times to the query
   with the constraint appended (template ``respond``: the record's prompt, what the student
   trains on). Each reply runs through the constraint's kept functions in the sandbox; its
   ``pass_rate`` is the fraction that return True (an exception, a timeout or a non-boolean
   value counts as False). A reply is accepted when ``pass_rate >= response_threshold`` (1.0:
   every kept function agrees), else rejected by the verdict ``autoif`` (``constraint_failed: ...``).
   A reply that opens with a refusal is rejected (``refusal``) before it is run.
5. **Preference pairs** (``pairs: true``; the paper's DPO data): the accepted replies of a prompt
   are zipped, in sample order, with its replies whose pass rate is at most
   ``rejected_pass_rate`` (0: every kept function says no, as in the authors' DPO code); an
   accepted reply so paired carries ``chosen`` (itself) and ``rejected`` (the failing reply),
   which ``distillery distill --method dpo`` takes as the pair. Unpaired accepted replies are
   plain SFT records (``chosen``/``rejected`` unset).

Not implemented from the paper: self-instruct augmentation of the seed constraints, the
back-translation (NLI) check of each function against its constraint, and the LLM score of
query-reply relevance (add a ``judge`` verifier to the recipe for the latter).

Every record carries ``constraint``, ``constraint_type``, ``constraint_id``, ``verifiers_kept``
(int: functions kept for its constraint), ``pass_rate`` (float, ``None`` when the reply was not
run) and ``chosen``/``rejected``; ``steps`` holds the K ``functions`` calls and the ``respond``
call. The accepted records' ``autoif`` verdict lists each function's fate and accuracy. The
recipe's ``prompt:`` section is not used.

Functions run in :class:`distillery.verify.sandbox.Sandbox` (started on the first batch that
needs it, closed by :meth:`AutoIF.close`): one program per function and up to
:data:`CASES_PER_PROGRAM` texts, each call under its own ``timeout_s`` alarm.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, field_validator

from distillery.backends.base import GenerationRequest
from distillery.errors import RecipeError
from distillery.generate.candidates import PromptItem
from distillery.generate.checks import call_failure, refusal_phrase
from distillery.generate.strategy import GenerationContext, Strategy
from distillery.generate.templates import TemplatedConfig, combined, required_variables
from distillery.io.jsonl import read_objects
from distillery.io.seeds import SeedRow
from distillery.records import PREFERENCE_OUTPUTS, add_verdict
from distillery.registry import register
from distillery.verify.python_program import extract_program
from distillery.verify.sandbox import ExecutionResult, Sandbox, SandboxLimits

CONSTRAINT_TYPES: tuple[str, ...] = ("length", "keywords", "format", "case", "json", "sections")
"""The types of the shipped constraints (a user's pool may use others)."""

CASES_PER_PROGRAM = 16
"""Most texts one sandboxed program applies a function to (its wall limit is
``timeout_s * CASES_PER_PROGRAM + 1`` seconds)."""

_ENTRY = "_distillery_autoif_entry"
_MAIN_GUARD = re.compile(r"^if\s+__name__\s*==\s*['\"]__main__['\"]\s*:.*\Z", re.M | re.S)
_ANY_FENCE = re.compile(r"```([^\n`]*)\n(.*?)```", re.S)
_DEFINES = re.compile(r"^[ \t]*def[ \t]+evaluate[ \t]*\(", re.M)
_RESPONSE_KEYS = ("response", "input", "text", "reply")
_EXPECTED_KEYS = ("expected", "output", "label", "passes", "result")


def shipped_constraints_path() -> Path:
    """Path of the shipped constraint pool (JSONL: ``id``, ``type``, ``constraint``)."""
    return Path(str(resources.files("distillery.generate") / "data" / "autoif" / "constraints.jsonl"))


@dataclass(frozen=True)
class Constraint:
    """One verifiable constraint: ``text`` is appended to a query; ``type`` its family
    (``length``, ``keywords``, ...); ``id`` its name in the pool."""

    id: str
    type: str
    text: str


def load_constraints(path: str | Path, types: list[str] | None = None) -> list[Constraint]:
    """The constraints of a JSONL file: one object per line with ``constraint`` (the text),
    ``type`` and optionally ``id`` (default ``c<line>``); blank lines are skipped.

    Args:
        types: keep only constraints of these types (``None``: all).

    Raises:
        RecipeError: the file is missing, a line is not such an object, or nothing is left.
    """
    path = Path(path)
    out: list[Constraint] = []
    seen: set[str] = set()
    for n, row in read_objects(path, "generation.constraints"):
        if not (isinstance(row.get("constraint"), str) and row["constraint"].strip()
                and isinstance(row.get("type"), str) and row["type"].strip()):
            raise RecipeError(f"generation.constraints: {path}:{n}: needs a non-empty \"constraint\" and \"type\"")
        c = Constraint(str(row.get("id") or f"c{n}"), row["type"].strip(), row["constraint"].strip())
        if c.id in seen:
            raise RecipeError(f"generation.constraints: {path}:{n}: duplicate id {c.id!r}")
        seen.add(c.id)
        if types is None or c.type in types:
            out.append(c)
    if not out:
        which = f" of types {types}" if types else ""
        raise RecipeError(f"generation.constraints: {path} has no constraints{which}")
    return out


def draw_constraints(pool: list[Constraint], n: int, seed: int, seed_id: str) -> list[Constraint]:
    """``n`` distinct constraints for the seed ``seed_id`` (fewer if the pool is smaller):
    draw ``k`` picks uniformly among those not drawn yet with ``random.Random(f"{seed}-{seed_id}-{k}")``."""
    picked: list[Constraint] = []
    for k in range(min(n, len(pool))):
        left = [c for c in pool if c not in picked]
        picked.append(random.Random(f"{seed}-{seed_id}-{k}").choice(left))
    return picked


# -- parsing the teacher's functions and test cases ------------------------------------------


@dataclass(frozen=True)
class Case:
    """A test case: ``evaluate(response)`` should return ``expected``."""

    response: str
    expected: bool


@dataclass
class FunctionAnswer:
    """One ``functions`` answer, parsed: the function's source (``None`` when none was found),
    its test cases, and what could not be read (``category: detail`` strings)."""

    function: str | None
    cases: list[Case]
    problems: list[str] = field(default_factory=list)


def _expected(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def parse_cases(value: Any) -> tuple[list[Case], str | None]:
    """Test cases from a parsed JSON value: a list of objects with the reply under
    ``response`` (or ``input``/``text``/``reply``) and a boolean (or ``"true"``/``"false"``)
    under ``expected`` (or ``output``/``label``/``passes``/``result``); a ``{"cases": [...]}``
    object is unwrapped. Malformed items are skipped.

    Returns:
        ``(cases, None)``, or ``([], "malformed_cases: ...")`` when no item is usable.
    """
    if isinstance(value, dict):
        for key in ("cases", "test_cases", "tests"):
            if isinstance(value.get(key), list):
                value = value[key]
                break
    if not isinstance(value, list):
        return [], f"malformed_cases: expected a list of test cases, got {type(value).__name__}"
    cases: list[Case] = []
    for item in value:
        if not isinstance(item, dict):
            continue
        text = next((item[k] for k in _RESPONSE_KEYS if isinstance(item.get(k), str)), None)
        expected = next((_expected(item[k]) for k in _EXPECTED_KEYS if _expected(item.get(k)) is not None), None)
        if text is not None and expected is not None:
            cases.append(Case(text, expected))
    if not cases:
        return [], f"malformed_cases: none of {len(value)} item(s) has a string response and a boolean expected"
    return cases, None


def _clean_function(source: str) -> str:
    return _MAIN_GUARD.sub("", source.replace("\r\n", "\n")).strip() + "\n"


def parse_function_answer(text: str | None) -> FunctionAnswer:
    """The verification function and test cases of a ``functions`` answer.

    Read, in order: fenced blocks (the first one defining ``evaluate`` is the function; the
    first other block that is a JSON list, or ``{"cases": [...]}``, holds the cases); else a
    JSON object holding the function as a string (``function``/``func``/``code``) and its
    ``cases``; else, with no fence at all, the whole text when it defines ``evaluate``. A trailing
    ``if __name__ == "__main__":`` block is removed. Never raises.

    Returns:
        a :class:`FunctionAnswer`; ``problems`` names what is missing:
        ``empty_response``, ``no_function: ...``, ``malformed_json: ...``, ``malformed_cases: ...``.
    """
    if not text or not text.strip():
        return FunctionAnswer(None, [], ["empty_response: the functions step returned no text"])
    function: str | None = None
    cases: list[Case] = []
    problems: list[str] = []
    blocks = _ANY_FENCE.findall(text)
    program, _ = extract_program(text, "evaluate")
    json_value: Any = None
    for _lang, body in blocks:
        if program is not None and body == program:
            continue
        try:
            value = json.loads(body)
        except json.JSONDecodeError:
            continue
        if isinstance(value, list | dict):
            json_value = value
            break
    if json_value is None and not blocks:
        for start in [i for i, ch in enumerate(text) if ch in "{["][:20]:
            try:
                json_value, _ = json.JSONDecoder().raw_decode(text[start:])
                break
            except json.JSONDecodeError:
                continue
    if isinstance(json_value, dict):  # {"function": "...", "cases": [...]}
        for key in ("function", "func", "code", "evaluate"):
            if isinstance(json_value.get(key), str) and "def evaluate" in json_value[key]:
                function = json_value[key].replace("\\n", "\n") if "\n" not in json_value[key] else json_value[key]
                break
    if function is None and program is not None and (blocks or _DEFINES.search(program)):
        function = program
    if function is None:
        problems.append("no_function: no code defining evaluate(response) found")
    if json_value is None:
        problems.append("malformed_json: no JSON list of test cases found")
    else:
        cases, reason = parse_cases(json_value)
        if reason:
            problems.append(reason)
    return FunctionAnswer(_clean_function(function) if function else None, cases, problems)


# -- running functions in the sandbox ---------------------------------------------------------

_ENTRY_SOURCE = '''

def {entry}():
    import json as _json
    import signal as _signal

    def _alarm(signum, frame):
        raise TimeoutError("timed out after {timeout:g} s")

    texts = _json.loads({texts!r})
    fn = globals().get("evaluate")
    if not callable(fn):
        return "no_function: the program defines no evaluate()"
    old = _signal.signal(_signal.SIGALRM, _alarm)
    out = []
    for text in texts:
        try:
            _signal.setitimer(_signal.ITIMER_REAL, {timeout!r})
            value = fn(text)
            _signal.setitimer(_signal.ITIMER_REAL, 0)
            if isinstance(value, bool):
                out.append(value)
            elif type(value) is int and value in (0, 1):
                out.append(bool(value))
            else:
                out.append("not_bool: evaluate returned " + type(value).__name__)
        except BaseException as exc:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
            kind = "timeout" if isinstance(exc, TimeoutError) else "error"
            out.append(kind + ": " + type(exc).__name__ + ": " + str(exc)[:200])
    _signal.signal(_signal.SIGALRM, old)
    return out
'''

Outcome = bool | str
"""What one call of a function gave: ``True``/``False``, or why it gave neither
(``timeout: ...``, ``error: ...``, ``not_bool: ...``, or the program's sandbox status)."""


def function_program(function: str, texts: list[str], timeout_s: float) -> str:
    """A sandbox program: ``function`` (defining ``evaluate``) and an entry
    (:data:`_ENTRY`) that applies ``evaluate`` to each of ``texts`` under a ``timeout_s`` alarm
    and returns a list of :data:`Outcome`."""
    entry = _ENTRY_SOURCE.format(entry=_ENTRY, texts=json.dumps(texts), timeout=float(timeout_s))
    return function + entry


def sandbox_limits(timeout_s: float, memory_mb: int = 256) -> SandboxLimits:
    """The per-program limits for functions called with ``timeout_s`` each on up to
    :data:`CASES_PER_PROGRAM` texts."""
    wall = timeout_s * CASES_PER_PROGRAM + 1.0
    return SandboxLimits(wall_time_s=wall, cpu_time_s=wall, memory_mb=memory_mb)


def _outcomes(result: ExecutionResult, n: int) -> list[Outcome]:
    if result.status != "ok":
        why = f"{result.status}: {(result.error or result.status)[:200]}"
        return [why] * n
    value = result.value
    if isinstance(value, str):
        return [value] * n
    if not isinstance(value, list) or len(value) != n:
        return [f"unsupported_return: the entry returned {type(value).__name__}"] * n
    return [v if isinstance(v, bool | str) else f"not_bool: {type(v).__name__}" for v in value]


def run_functions(sandbox: Sandbox, functions: list[str], texts: list[str], timeout_s: float) -> list[list[Outcome]]:
    """Call every function on every text in ``sandbox``.

    Returns:
        ``outcomes[f][t]``: what ``functions[f]`` gave for ``texts[t]`` (see :data:`Outcome`); a
        program that fails as a whole (syntax error, module-level exception, killed at the wall
        limit) gives its sandbox status for each of its texts.

    Raises:
        distillery.verify.sandbox.SandboxError: the sandbox is closed or broken.
    """
    jobs: list[tuple[int, int, int]] = []  # function, first text, end
    programs: list[str] = []
    for f, source in enumerate(functions):
        for start in range(0, len(texts), CASES_PER_PROGRAM):
            end = min(start + CASES_PER_PROGRAM, len(texts))
            jobs.append((f, start, end))
            programs.append(function_program(source, texts[start:end], timeout_s))
    out: list[list[Outcome]] = [[] for _ in functions]
    if programs:
        for (f, start, end), result in zip(jobs, sandbox.run_many(programs, _ENTRY), strict=True):
            out[f].extend(_outcomes(result, end - start))
    return out


def pass_rate(outcomes: list[Outcome]) -> float:
    """Fraction of ``outcomes`` (one text, each kept function) that are ``True``; anything but
    ``True`` (``False``, an error, a timeout) counts against it. ``0.0`` for no outcomes."""
    return sum(1 for o in outcomes if o is True) / len(outcomes) if outcomes else 0.0


# -- cross-validation ---------------------------------------------------------------------------


@dataclass
class CrossValidation:
    """The result of :func:`cross_validate` for one constraint.

    Attributes:
        kept: indexes (into the answers) of the functions kept, ascending.
        accuracy: accuracy on the kept cases of each function that ran.
        dropped: why each other answer's function was not kept (``category: detail``).
        cases: the kept test cases (at least one function agrees with each).
        reason: ``no_verifier: ...`` when nothing was kept, else ``None``.
    """

    kept: list[int]
    accuracy: dict[int, float]
    dropped: dict[int, str]
    cases: list[Case]
    reason: str | None

    def summary(self) -> dict[str, Any]:
        """JSON-ready: kept indexes, accuracies, dropped reasons, number of kept cases."""
        return {"kept": self.kept, "accuracy": {str(k): round(v, 4) for k, v in self.accuracy.items()},
                "dropped": {str(k): v for k, v in self.dropped.items()}, "cases": len(self.cases)}


def pool_cases(answers: list[FunctionAnswer]) -> list[Case]:
    """The test cases of all ``answers``, first occurrence order, duplicates merged; a reply
    given both labels is dropped (the answers contradict each other on it)."""
    labels: dict[str, set[bool]] = {}
    for a in answers:
        for c in a.cases:
            labels.setdefault(c.response, set()).add(c.expected)
    return [Case(text, next(iter(seen))) for text, seen in labels.items() if len(seen) == 1]


def _first_failure(outcomes: list[Outcome]) -> str | None:
    return next((o for o in outcomes if isinstance(o, str)), None)


def cross_validate(answers: list[FunctionAnswer], cases: list[Case], outcomes: dict[int, list[Outcome]],
                   threshold: float = 0.8, min_functions: int = 1, min_cases: int = 1) -> CrossValidation:
    """Keep the functions that agree with the pooled test cases (AutoIF's cross-validation).

    Args:
        answers: the parsed ``functions`` answers of one constraint.
        cases: the pooled cases (:func:`pool_cases`).
        outcomes: for each answer index with a function, its outcomes on ``cases`` (in order),
            from :func:`run_functions`.
        threshold: lowest accuracy kept (the authors' code: 0.8).
        min_functions, min_cases: fewer usable functions or kept cases means no verifier.

    A case is kept when at least one function returns its ``expected``; a function's accuracy
    is the fraction of kept cases it returns ``expected`` for (errors and timeouts are wrong).
    """
    dropped: dict[int, str] = {}
    for i, a in enumerate(answers):
        if i not in outcomes:
            dropped[i] = next((p for p in a.problems if p.startswith(("no_function", "empty_response"))),
                              a.problems[0] if a.problems else "no_function: nothing to run")
    usable = sorted(outcomes)
    # a function that fails as a whole (the same sandbox failure on every case) cannot be scored
    for i in usable:
        res = outcomes[i]
        if res and all(isinstance(o, str) for o in res) and len(set(res)) == 1 and not res[0].startswith(
                ("error:", "timeout:", "not_bool:")):
            dropped[i] = res[0]
    scored = [i for i in usable if i not in dropped]
    agreed = [c for t, c in enumerate(cases) if any(outcomes[i][t] is c.expected for i in scored)]
    keep_case = [any(outcomes[i][t] is c.expected for i in scored) for t, c in enumerate(cases)]
    accuracy: dict[int, float] = {}
    for i in scored:
        hits = [outcomes[i][t] is c.expected for t, c in enumerate(cases) if keep_case[t]]
        accuracy[i] = sum(hits) / len(hits) if hits else 0.0
    if len(scored) < min_functions:
        return CrossValidation([], accuracy, dropped, agreed,
                               f"no_verifier: {len(scored)} usable function(s) of {len(answers)}, need {min_functions}")
    if len(agreed) < min_cases:
        return CrossValidation([], accuracy, dropped, agreed,
                               f"no_verifier: {len(agreed)} test case(s) that a function agrees with "
                               f"(of {len(cases)}), need {min_cases}")
    kept = []
    for i in scored:
        if accuracy[i] >= threshold:
            kept.append(i)
        else:
            wrong = [outcomes[i][t] for t, c in enumerate(cases) if keep_case[t] and outcomes[i][t] is not c.expected]
            failure = _first_failure(wrong)
            dropped[i] = (f"disagrees: accuracy {accuracy[i]:.2f} < {threshold:g} on {len(agreed)} test case(s)"
                          + (f" ({failure})" if failure else ""))
    reason = None
    if not kept:
        why = "; ".join(f"#{i}: {dropped[i]}" for i in sorted(dropped))
        reason = f"no_verifier: no function of {len(answers)} agrees with the test cases at >= {threshold:g} ({why})"
    return CrossValidation(kept, accuracy, dict(sorted(dropped.items())), agreed, reason)


# -- the strategy --------------------------------------------------------------------------------


@register("strategy")
class AutoIFConfig(TemplatedConfig):
    """AutoIF: constraints verified by teacher-written functions, cross-validated on
    teacher-written test cases and run on the replies in the sandbox (Dong et al., 2024,
    "Self-play with Execution Feedback"; see the module doc).

    Attributes:
        query_field: the seed field holding the query.
        constraints: a JSONL constraint pool (``id``, ``type``, ``constraint``; relative to the
            recipe's folder); default the shipped pool.
        constraint_types: use only constraints of these types (``None``: all).
        constraints_per_query: constraints drawn per seed (each a separate prompt).
        seed: the drawing seed.
        functions_per_constraint: K, ``functions`` answers asked per constraint.
        test_cases: test cases asked for in each answer (the template's ``cases``).
        function_threshold: lowest accuracy on the pooled test cases for a function to be kept.
        min_functions: fewest functions that run for a constraint to be verifiable (authors: 3).
        min_test_cases: fewest test cases a function agrees with (authors: 10 before filtering).
        responses_per_query: replies asked per (query, constraint) prompt.
        response_threshold: lowest pass rate (fraction of kept functions returning True) accepted.
        pairs: make preference pairs (passing reply chosen, failing reply rejected).
        rejected_pass_rate: a reply is a pair's rejected side only at this pass rate or lower.
        timeout_s: seconds per function call in the sandbox.
        memory_mb: address-space limit per sandboxed program, MiB.
        sandbox_workers: sandbox worker processes.
        templates: overrides of ``functions`` and ``respond``.
    """

    strategy: Literal["autoif"] = "autoif"
    query_field: str = "query"
    constraints: str | None = None
    constraint_types: list[str] | None = None
    constraints_per_query: int = Field(1, ge=1)
    seed: int = 0
    functions_per_constraint: int = Field(3, ge=1)
    test_cases: int = Field(6, ge=1)
    function_threshold: float = Field(0.8, ge=0, le=1)
    min_functions: int = Field(1, ge=1)
    min_test_cases: int = Field(2, ge=1)
    responses_per_query: int = Field(4, ge=1)
    response_threshold: float = Field(1.0, gt=0, le=1)
    pairs: bool = True
    rejected_pass_rate: float = Field(0.0, ge=0, lt=1)
    timeout_s: float = Field(1.0, gt=0, le=30)
    memory_mb: int = Field(256, ge=64)
    sandbox_workers: int = Field(2, ge=1)

    @field_validator("constraint_types")
    @classmethod
    def _types(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("constraint_types: give at least one type, or leave it unset for all")
        return v

    def build(self, recipe: Any) -> AutoIF:
        return AutoIF(self, recipe)


@dataclass
class _Draw:
    """One (seed, constraint) prompt of a batch."""

    row: SeedRow
    sid: str
    k: int
    query: str
    constraint: Constraint
    item: PromptItem


@dataclass
class _Verified:
    """A constraint's functions after cross-validation, with the steps that produced them."""

    steps: list[dict[str, Any]]
    functions: list[str]  # kept sources
    cv: CrossValidation


class AutoIF(Strategy):
    """Pairs queries with constraints, has the teacher write and cross-validate verification
    functions, answers under the constraint and keeps the replies the functions pass."""

    config: AutoIFConfig
    outputs = {
        "constraint": pa.string(), "constraint_type": pa.string(), "constraint_id": pa.string(),
        "verifiers_kept": pa.int64(), "pass_rate": pa.float64(), **PREFERENCE_OUTPUTS,
    }

    def __init__(self, config: AutoIFConfig, recipe: Any) -> None:
        super().__init__(config, recipe)
        self.templates = config.load_templates(recipe.base_dir)
        self.functions = self.templates["functions"]
        self.respond = self.templates["respond"]
        self.prompt = combined([self.functions, self.respond])
        self._pool: list[Constraint] | None = None
        self._sandbox: Sandbox | None = None
        self._lock = threading.Lock()
        self._memo: dict[tuple[str, tuple[str | None, ...]], tuple[list[FunctionAnswer], CrossValidation]] = {}

    @property
    def pool(self) -> list[Constraint]:
        """The constraint pool (read on first use)."""
        if self._pool is None:
            c = self.config
            path: Path = shipped_constraints_path()
            if c.constraints:
                path = Path(c.constraints).expanduser()
                if not path.is_absolute() and self.recipe.base_dir is not None:
                    path = Path(self.recipe.base_dir) / path
            self._pool = load_constraints(path, c.constraint_types)
        return self._pool

    @property
    def inputs(self) -> set[str]:
        provided = {"query", "constraint", "constraint_type", "cases", "seed"}
        return {self.config.query_field} | required_variables(self.respond, provided) | required_variables(self.functions, provided)

    def describe(self) -> str:
        c = self.config
        pairs = (f"; a passing reply was paired with a failing one (pass rate <= {c.rejected_pass_rate:g}) as a "
                 "preference pair") if c.pairs else ""
        return (f"**Generation**: AutoIF (Dong et al., 2024): each query (`{c.query_field}`) got "
                f"{c.constraints_per_query} verifiable constraint(s); the teacher wrote {c.functions_per_constraint} "
                f"verification functions with test cases per constraint, kept when their accuracy on the pooled test "
                f"cases was >= {c.function_threshold:g} (run in the sandbox); {c.responses_per_query} replies per "
                f"prompt were run through the kept functions and accepted at a pass rate >= {c.response_threshold:g}"
                f"{pairs}. The record's prompt is the query with its constraint.")

    # -- sandbox -----------------------------------------------------------------------------
    def _run(self, functions: list[str], texts: list[str]) -> list[list[Outcome]]:
        with self._lock:
            if self._sandbox is None:
                self._sandbox = Sandbox(workers=self.config.sandbox_workers,
                                        limits=sandbox_limits(self.config.timeout_s, self.config.memory_mb))
            sandbox = self._sandbox
        return run_functions(sandbox, functions, texts, self.config.timeout_s)

    async def _run_async(self, functions: list[str], texts: list[str]) -> list[list[Outcome]]:
        if not functions or not texts:
            return [[] for _ in functions]
        return await asyncio.to_thread(self._run, functions, texts)

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    # -- generation --------------------------------------------------------------------------
    def _outputs(self, draw: _Draw, kept: int) -> dict[str, Any]:
        """The output fields of a record of ``draw`` before its reply is run (``pass_rate`` unset)."""
        c = draw.constraint
        return {"constraint": c.text, "constraint_type": c.type, "constraint_id": c.id, "verifiers_kept": kept,
                "pass_rate": None, "chosen": None, "rejected": None}

    async def _verify(self, constraints: list[Constraint], ctx: GenerationContext) -> dict[str, _Verified]:
        """Functions for each constraint, cross-validated; a constraint with a transient failure is left out."""
        c = self.config
        K = c.functions_per_constraint
        requests: list[GenerationRequest] = []
        for con in constraints:
            messages = self.functions.messages({"constraint": con.text, "constraint_type": con.type, "cases": c.test_cases})
            requests += [GenerationRequest.make(messages, ctx.sampling, i, step="functions") for i in range(K)]
        results = await ctx.generate(requests)
        out: dict[str, _Verified] = {}
        max_tokens = ctx.sampling.max_tokens if ctx.sampling else None
        for n, con in enumerate(constraints):
            mine = results[n * K:(n + 1) * K]
            if not all(ctx.keep(r) for r in mine):
                continue
            steps = [ctx.step("functions", requests[n * K + i], r) for i, r in enumerate(mine)]
            key = (con.id, tuple(f"{r.finish_reason}|{r.error_kind}|{r.text}" for r in mine))
            if key not in self._memo:  # the same answers (from the cache) in a later batch: same verdict
                answers = []
                for r in mine:
                    failure = call_failure(r, "functions", max_tokens)
                    answers.append(FunctionAnswer(None, [], [failure]) if failure else parse_function_answer(r.text))
                cases = pool_cases(answers)
                runnable = [i for i, a in enumerate(answers) if a.function]
                matrix = await self._run_async([answers[i].function for i in runnable],  # type: ignore[misc]
                                               [x.response for x in cases])
                outcomes = {i: (matrix[j] if cases else []) for j, i in enumerate(runnable)}
                self._memo[key] = (answers, cross_validate(answers, cases, outcomes, c.function_threshold,
                                                           c.min_functions, c.min_test_cases))
            answers, cv = self._memo[key]
            out[con.id] = _Verified(steps, [answers[i].function for i in cv.kept], cv)  # type: ignore[misc]
        return out

    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        c = self.config
        R = c.responses_per_query
        texts, records = ctx.texts(seeds, c.query_field)
        draws: list[_Draw] = []
        for row, sid, query in texts:
            for k, con in enumerate(draw_constraints(self.pool, c.constraints_per_query, c.seed, sid)):
                variables = {**row.data, "seed": row.data, "query": query, "constraint": con.text,
                             "constraint_type": con.type}
                draws.append(_Draw(row, sid, k, query, con, PromptItem(row, sid, self.respond.messages(variables))))
        distinct = list({d.constraint.id: d.constraint for d in draws}.values())
        verified = await self._verify(distinct, ctx)

        made: list[dict[str, Any]] = []
        asks: list[tuple[_Draw, int, GenerationRequest]] = []
        for d in draws:
            v = verified.get(d.constraint.id)
            if v is None:
                continue  # a transient failure: the batch is redone
            if not v.functions:
                record = ctx.record(d.item, None, d.k * R, v.steps, reject=v.cv.reason,
                                    raw=json.dumps(v.cv.summary()), **self._outputs(d, 0))
                made.append(record)
                continue
            for j in range(R):
                asks.append((d, d.k * R + j, GenerationRequest.make(d.item.messages, ctx.sampling, d.k * R + j, step="respond")))
        results = await ctx.generate([a[2] for a in asks])

        by_draw: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for (d, index, request), result in zip(asks, results, strict=True):
            if not ctx.keep(result):
                continue
            v = verified[d.constraint.id]
            record = ctx.candidate(d.item, result, index, [*v.steps, ctx.step("respond", request, result)],
                                   **self._outputs(d, len(v.functions)))
            if record["accepted"]:
                phrase = refusal_phrase(result.text, at_start=True)
                if phrase:
                    ctx.reject(record, f"refusal: the reply opens with {phrase!r}", raw=result.text)
            by_draw.setdefault((d.sid, d.k), []).append(record)
            made.append(record)

        for d in draws:
            group = by_draw.get((d.sid, d.k))
            if not group:
                continue
            v = verified[d.constraint.id]
            live = [r for r in group if r["accepted"]]
            matrix = await self._run_async(v.functions, [r["response"] for r in live])
            for t, record in enumerate(live):
                results_t = [matrix[f][t] for f in range(len(v.functions))]
                rate = pass_rate(results_t)
                record["pass_rate"] = rate
                detail = {"pass_rate": rate, "results": results_t, "functions": v.cv.summary()}
                if rate >= c.response_threshold:
                    add_verdict(record, "generate", "autoif", True, detail)
                else:
                    ok = sum(1 for o in results_t if o is True)
                    reason = (f"constraint_failed: pass rate {rate:.2f} < {c.response_threshold:g} "
                              f"({ok} of {len(results_t)} verification function(s) passed)")
                    add_verdict(record, "generate", "autoif", False, {**detail, "reason": reason})
            if c.pairs:
                good = [r for r in live if r["accepted"]]
                bad = [r for r in live if not r["accepted"] and r["pass_rate"] <= c.rejected_pass_rate]
                for g, b in zip(good, bad, strict=False):
                    g["chosen"] = [{"role": "assistant", "content": g["response"]}]
                    g["rejected"] = [{"role": "assistant", "content": b["response"]}]
        made.sort(key=lambda r: (r["seed_index"], r["sample_index"]))
        return records + made
