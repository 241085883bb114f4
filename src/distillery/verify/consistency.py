"""``verifiers: self_consistency``: keep an answer only when enough of its prompt's samples agree.

Self-consistency (Wang et al., 2023, "Self-Consistency Improves Chain of Thought Reasoning
in Language Models"): sample several reasoning paths per prompt and trust the answer most of
them reach. Here the vote is a filter that needs no reference answer: a candidate passes
when its final answer belongs to the prompt's largest answer class and that class has at
least ``m`` of the prompt's ``k`` votes.

The stage is prompt-scoped: the runner calls :meth:`SelfConsistency.prepare` with every
candidate of the batch (all samples of a prompt are in one batch), votes are counted per
``seed_id``, then the live candidates are checked. ``votes_from: all`` (default) lets every
sampled candidate with a response vote, even one an earlier stage rejected (Wang et al. vote
over all samples); ``votes_from: accepted`` counts only candidates still accepted at that point.
``k`` is the number of voting candidates; with adaptive sampling (``accept_per_prompt``) it
varies by prompt. A candidate with no extractable answer abstains (counted in ``k``).

Answer extraction (``extractor``):

- ``math``: :func:`distillery.verify.answers.extract_answer`; answers are grouped into
  equivalence classes with :func:`distillery.verify.math_answer.answers_equal` (exact for
  numbers, math-verify otherwise), each class shown by its first member.
- ``program``: the response's program (:func:`distillery.verify.python_program.extract_program`)
  runs in the sandbox; returned values are grouped with
  :func:`distillery.verify.sandbox.answers_match`.

Reasons (category ``inconsistent`` unless said): ``answer 41 has 1 of 4 votes < m=3`` (the
majority, below ``m``), ``answer 41 has 1 of 4 votes, majority 40 has 3`` (a minority),
``answer 41 ties with 40 for the most votes (2 of 4)`` (no single majority),
``answer 7 has 1 of 5 votes < 2 of the tied leaders``; ``no_answer: ...`` (nothing extracted,
or the program failed).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import BuildContext, Check, Stage
from distillery.records import prompt_text
from distillery.registry import register
from distillery.verify.answers import extract_answer
from distillery.verify.math_answer import answers_equal
from distillery.verify.python_program import extract_program
from distillery.verify.sandbox import Sandbox, SandboxLimits, answers_match

_SHOWN = 60


@register("verifier")
class SelfConsistencyConfig(StageConfig):
    """Recipe entry of the self-consistency vote.

    Attributes:
        extractor: ``math`` (final answer of a worked solution) or ``program`` (value returned
            by the response's program).
        m: least votes the majority answer needs (``m`` of the prompt's ``k`` samples).
        votes_from: ``all`` sampled candidates vote, or only those still ``accepted``.
        entry, timeout_s, memory_mb, workers, rel_tol: ``program`` extractor, as the
            ``python_program`` verifier.
        timeout_s also bounds math-verify's comparison of two answers (``math``).
    """

    type: Literal["self_consistency"] = "self_consistency"
    extractor: Literal["math", "program"] = "math"
    m: int = Field(2, ge=1)
    votes_from: Literal["all", "accepted"] = "all"
    entry: str = Field(default="solution", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout_s: float = Field(default=2.0, gt=0)
    memory_mb: int = Field(default=256, ge=32)
    workers: int | None = Field(default=None, ge=1)
    rel_tol: float = Field(default=1e-6, ge=0)

    def build(self, ctx: BuildContext) -> Stage:
        return SelfConsistency(self)


@dataclass
class Vote:
    """One candidate's extracted answer: ``answer`` (comparable value) and ``shown`` (text), or ``why`` not."""

    answer: Any = None
    shown: str | None = None
    why: str | None = None


@dataclass
class Tally:
    """The votes of one prompt: answer classes (representative shown text, count) and each voter's class."""

    k: int = 0
    classes: list[list[Any]] = field(default_factory=list)  # [representative answer, shown, count]
    member: dict[Any, int] = field(default_factory=dict)  # record key -> class index
    votes: dict[Any, Vote] = field(default_factory=dict)  # record key -> vote

    def table(self) -> list[list[Any]]:
        """``[[shown answer, votes], ...]``, most votes first."""
        return sorted(([c[1], c[2]] for c in self.classes), key=lambda x: -x[1])


def _key(record: dict[str, Any]) -> Any:
    return record.get("id") if record.get("id") is not None else id(record)


def _group(record: dict[str, Any]) -> Any:
    return record.get("seed_id") or prompt_text(record)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


class SelfConsistency(Stage):
    """Majority vote over each prompt's candidates (see the module doc).

    Verdict detail: ``answer`` (this candidate's, shown), ``votes`` (``[[answer, count], ...]``,
    most first), ``k``, ``m``, ``majority`` (the top answer, or ``None`` on a tie).
    """

    kind = "verify"
    cost = 50.0
    scope = "prompt"

    def __init__(self, config: SelfConsistencyConfig) -> None:
        super().__init__(config.stage_name)
        self.config = config
        self._tallies: dict[Any, Tally] = {}
        self._seen: set[Any] = set()  # keys of the records the votes were counted over
        self._sandbox: Sandbox | None = None

    # -- answers ---------------------------------------------------------------------------
    def votes(self, records: list[dict[str, Any]]) -> list[Vote]:
        """Each record's extracted answer (math) or program value (program), in order."""
        if self.config.extractor == "math":
            out = []
            for r in records:
                answer, _ = extract_answer(r.get("response") or "")
                out.append(Vote(answer, answer) if answer is not None else Vote(why="no final answer found"))
            return out
        out_p: list[Vote | None] = [None] * len(records)
        jobs: list[tuple[int, str]] = []
        for i, r in enumerate(records):
            program, source = extract_program(r.get("response"), self.config.entry)
            if program is None:
                out_p[i] = Vote(why=f"no program: {source}")
            else:
                jobs.append((i, program))
        if jobs:
            if self._sandbox is None:
                c = self.config
                limits = SandboxLimits(wall_time_s=c.timeout_s, cpu_time_s=c.timeout_s, memory_mb=c.memory_mb)
                self._sandbox = Sandbox(workers=c.workers, limits=limits)
            results = self._sandbox.run_many([p for _, p in jobs], self.config.entry)
            for (i, _), result in zip(jobs, results, strict=True):
                if result.status == "ok":
                    out_p[i] = Vote(result.value, _short(result.value))
                else:
                    out_p[i] = Vote(why=f"program {result.status}: {_short(result.error or result.status)}")
        return out_p  # type: ignore[return-value]

    def _same(self, a: Any, b: Any) -> bool:
        if self.config.extractor == "program":
            return answers_match(a, b, rel_tol=self.config.rel_tol)
        if a == b:
            return True
        try:
            return answers_equal(a, b, int(max(1, self.config.timeout_s)))
        except Exception:  # math-verify can raise on pathological inputs: not the same answer
            return False

    def tally(self, records: list[dict[str, Any]]) -> dict[Any, Tally]:
        """Votes per prompt (``seed_id``) of ``records``, each candidate put into an answer class."""
        groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for r in records:
            if r.get("response") is None:
                continue  # a failed generation: no sample, no vote
            if self.config.votes_from == "accepted" and not r["accepted"]:
                continue
            groups[_group(r)].append(r)
        tallies: dict[Any, Tally] = {}
        for group, members in groups.items():
            tally = Tally(k=len(members))
            for record, vote in zip(members, self.votes(members), strict=True):
                key = _key(record)
                tally.votes[key] = vote
                if vote.why is not None:
                    continue
                for c, cls in enumerate(tally.classes):
                    if self._same(cls[0], vote.answer):
                        cls[2] += 1
                        tally.member[key] = c
                        break
                else:
                    tally.member[key] = len(tally.classes)
                    tally.classes.append([vote.answer, vote.shown, 1])
            tallies[group] = tally
        return tallies

    # -- the stage -----------------------------------------------------------------------
    def prepare(self, records: list[dict[str, Any]]) -> None:
        """Count the votes of every candidate of the batch (accepted or not), per prompt."""
        self._tallies = self.tally(records)
        self._seen = {_key(r) for r in records}

    def check_batch(self, records: list[dict[str, Any]]) -> list[Check]:
        missing = {_group(r) for r in records if _key(r) not in self._seen}
        if missing:  # not prepared (a direct call): vote among the records given
            self._seen |= {_key(r) for r in records if _group(r) in missing}
            self._tallies.update(self.tally([r for r in records if _group(r) in missing]))
        return [self._judge(r) for r in records]

    def _judge(self, record: dict[str, Any]) -> Check:
        m = self.config.m
        tally = self._tallies[_group(record)]
        key = _key(record)
        vote = tally.votes.get(key)
        if vote is None:  # no response, or votes_from: accepted and not accepted when votes were counted
            return Check(False, "no_answer: the candidate did not vote (no response, or not accepted when votes were counted)")
        counts = sorted((c[2] for c in tally.classes), reverse=True)
        top = counts[0] if counts else 0
        leaders = [c for c in tally.classes if c[2] == top]
        detail: dict[str, Any] = {
            "answer": vote.shown,
            "votes": tally.table(),
            "k": tally.k,
            "m": m,
            "majority": leaders[0][1] if len(leaders) == 1 else None,
        }
        if vote.why is not None:
            return Check(False, f"no_answer: {vote.why}", detail)
        mine = tally.classes[tally.member[key]]
        if mine[2] < top and len(leaders) == 1:
            lead = leaders[0]
            return Check(
                False, f"inconsistent: answer {mine[1]} has {mine[2]} of {tally.k} votes, majority {lead[1]} has {top}", detail
            )
        if mine[2] < top:
            return Check(False, f"inconsistent: answer {mine[1]} has {mine[2]} of {tally.k} votes < {top} of the tied leaders", detail)
        if len(leaders) > 1:
            others = ", ".join(str(c[1]) for c in leaders if c is not mine)
            return Check(False, f"inconsistent: answer {mine[1]} ties with {others} for the most votes ({top} of {tally.k})", detail)
        if mine[2] < m:
            return Check(False, f"inconsistent: answer {mine[1]} has {mine[2]} of {tally.k} votes < m={m}", detail)
        return Check(True, None, detail)

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
