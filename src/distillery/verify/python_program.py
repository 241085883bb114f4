"""``verify: python_program``: run the program a response contains and compare its return value.

Program-aided verification (as in PAL, Gao et al., 2023, and program-of-thought prompting):
the teacher writes a Python program whose entry function (``solution()`` by default)
returns the answer; the program runs in :class:`distillery.verify.sandbox.Sandbox` and its
value is compared with the seed's reference by :func:`distillery.verify.sandbox.answers_match`.

Failure reasons (the part before ``":"`` is the category in the report): ``wrong_answer``,
``no_program``, ``bad_reference`` and every non-``ok`` sandbox status (``timeout``,
``error``, ``syntax_error``, ``missing_entry``, ``unsupported_return``, ``memory``,
``output_limit``, ``exited``, ``crashed``).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any, Literal

from pydantic import Field

from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import BuildContext, Check, Stage
from distillery.registry import register
from distillery.verify.sandbox import ExecutionResult, Sandbox, SandboxLimits, answers_match

_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)
_OPEN_FENCE = re.compile(r"```[^\n`]*\n(.*)\Z", re.DOTALL)  # a last block cut off by the token limit
_INT = re.compile(r"[-+]?\d+")
_FRACTION = re.compile(r"([-+]?\d+)\s*/\s*([-+]?\d+)")
_MAX_DETAIL = 200
_MAX_ERROR = 500


def _short(value: Any, limit: int = _MAX_DETAIL) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def extract_program(
    response: str | None, entry: str = "solution", any_block: bool = False
) -> tuple[str | None, str]:
    """The program to run from a model ``response``.

    The first fenced code block (```` ```python ```` or bare ```` ``` ````) that defines
    ``entry`` (``def entry(`` or ``entry =``); with no fenced block at all, the whole
    response; a final block left unclosed (a truncated response) counts as a block. With
    ``any_block`` and no block defining ``entry``, the first block (e.g. a function body
    to complete a prompt with, as in ``verify: unit_tests``).

    Returns:
        ``(program, source)`` with ``source`` in ``"code_block"``, ``"whole_response"``;
        or ``(None, why)`` when there is nothing to run.
    """
    if not response or not response.strip():
        return None, "empty response"
    defines = re.compile(
        rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(entry)}[ \t]*\(|^{re.escape(entry)}[ \t]*=",
        re.MULTILINE,
    )
    blocks = _FENCE.findall(response)
    tail = response[response.rfind("```") :] if response.count("```") % 2 == 1 else ""
    open_block = _OPEN_FENCE.match(tail) if tail else None
    if open_block:
        blocks.append(open_block.group(1))
    for block in blocks:
        if defines.search(block):
            return block, "code_block"
    if blocks and any_block:
        return blocks[0], "code_block"
    if blocks:
        return None, f"{len(blocks)} code block(s), none defines {entry}()"
    return response, "whole_response"


def parse_reference(raw: Any) -> int | float | Fraction | list | tuple | dict | str:
    """The reference answer of a seed field as a number (or plain data given as such).

    Strings: a GSM8K solution's text after the last ``####``; commas, ``$`` and a trailing
    ``%`` or ``.`` are dropped; ``"42"`` -> ``42``, ``"7/3"`` -> ``Fraction(7, 3)``,
    ``"3.5"``/``"1e-3"`` -> ``float``. Numbers and lists/tuples/dicts are returned as given.

    Raises:
        ValueError: missing, boolean, non-finite, or text that is not a number.
    """
    if raw is None:
        raise ValueError("the reference is missing")
    if isinstance(raw, bool):
        raise ValueError(f"a boolean is not a numeric reference: {raw!r}")
    if isinstance(raw, int | Fraction | list | tuple | dict):
        return raw
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise ValueError(f"non-finite reference {raw!r}")
        return raw
    text = str(raw)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    text = text.strip().replace(",", "").replace("$", "").rstrip(".%").strip()
    if _INT.fullmatch(text):
        return int(text)
    m = _FRACTION.fullmatch(text)
    if m:
        if int(m.group(2)) == 0:
            raise ValueError(f"zero denominator in reference {raw!r}")
        return Fraction(int(m.group(1)), int(m.group(2)))
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"cannot read {_short(str(raw), 80)} as a number") from None
    if not math.isfinite(value):
        raise ValueError(f"non-finite reference {raw!r}")
    return value


@register("verifier")
class PythonProgramConfig(StageConfig):
    """Recipe entry of the program verifier.

    Attributes:
        reference: seed field holding the reference answer (``"42"``, ``"7/3"``, ``"3.5"``,
            or a GSM8K solution ending ``#### 42``).
        entry: the function the program must define; called without arguments.
        timeout_s: wall-clock and CPU-time limit per program, seconds (CPU rounded up to whole seconds).
        memory_mb: address-space limit per program, MiB.
        workers: sandbox worker processes (default: usable CPUs).
        rel_tol: relative tolerance when either side is a float.
    """

    type: Literal["python_program"] = "python_program"
    reference: str = "answer"
    entry: str = Field(default="solution", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout_s: float = Field(default=2.0, gt=0)
    memory_mb: int = Field(default=256, ge=32)
    workers: int | None = Field(default=None, ge=1)
    rel_tol: float = Field(default=1e-6, ge=0)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The seed's ``reference`` field."""
        return (f"seed.{self.reference}",)

    def build(self, ctx: BuildContext) -> PythonProgramVerifier:
        return PythonProgramVerifier(self)


class PythonProgramVerifier(Stage):
    """Passes a record when its program's ``entry()`` returns the seed's reference answer.

    The sandbox (worker processes) starts on the first batch and stops in :meth:`close`.
    Verdict detail: ``status``, ``value`` (repr, truncated), ``reference``, ``error``
    (truncated), ``wall_s``, ``program`` (``code_block`` or ``whole_response``).
    """

    kind = "verify"
    cost = 100.0

    def __init__(self, config: PythonProgramConfig) -> None:
        super().__init__(config.stage_name)
        self.config = config
        self.limits = SandboxLimits(
            wall_time_s=config.timeout_s, cpu_time_s=config.timeout_s, memory_mb=config.memory_mb
        )
        self._sandbox: Sandbox | None = None

    @property
    def sandbox(self) -> Sandbox:
        """The running sandbox, started on first use."""
        if self._sandbox is None:
            self._sandbox = Sandbox(workers=self.config.workers, limits=self.limits)
        return self._sandbox

    def check_batch(self, records: list[dict[str, Any]]) -> list[Check]:
        checks: list[Check | None] = [None] * len(records)
        jobs: list[tuple[int, str, Any, str]] = []
        for i, record in enumerate(records):
            raw = (record.get("seed") or {}).get(self.config.reference)
            try:
                reference = parse_reference(raw)
            except ValueError as exc:
                checks[i] = Check(False, f"bad_reference: seed field {self.config.reference!r}: {exc}")
                continue
            program, source = extract_program(record.get("response"), self.config.entry)
            if program is None:
                checks[i] = Check(False, f"no_program: {source}", {"reference": _short(reference)})
                continue
            jobs.append((i, program, reference, source))
        if jobs:
            results = self.sandbox.run_many([p for _, p, _, _ in jobs], self.config.entry)
            for (i, _, reference, source), result in zip(jobs, results, strict=True):
                checks[i] = self._judge(result, reference, source)
        return checks  # type: ignore[return-value]

    def _judge(self, result: ExecutionResult, reference: Any, source: str) -> Check:
        detail: dict[str, Any] = {
            "status": result.status,
            "reference": _short(reference),
            "wall_s": round(result.wall_s, 4),
            "program": source,
        }
        if result.error:
            detail["error"] = result.error[:_MAX_ERROR]
        if result.status != "ok":
            return Check(False, f"{result.status}: {(result.error or result.status)[:_MAX_ERROR]}", detail)
        detail["value"] = _short(result.value)
        if answers_match(result.value, reference, rel_tol=self.config.rel_tol):
            return Check(True, None, detail)
        return Check(False, f"wrong_answer: {_short(result.value, 80)} != {_short(reference, 80)}", detail)

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
