"""The stage: one check applied to every live record of a batch.

A stage is one small class with one method, :meth:`Stage.check`, returning a
:class:`Check`. The shared mechanism lives here, not in each stage: the runner calls
:meth:`Stage.apply` on a batch, which skips records already rejected, records a verdict on
every record it sees, marks failures rejected with their reason, and counts records in and
out, reasons and time (the datatrove ``BaseFilter`` pattern).

Stages that need the whole batch at once (a model forward pass, a process pool) override
:meth:`Stage.check_batch`; stages that call a model server override the coroutine
:meth:`Stage.check_batch_async` (the runner always goes through :meth:`Stage.apply_async`).
Stages whose verdict on a candidate depends on the other candidates of the same prompt
(self-consistency) set ``scope = "prompt"``: they run after sampling, on every candidate of the
batch, and see them all first through :meth:`Stage.prepare`. Stages that remember what they have accepted (deduplication)
set ``stateful = True``: they are run after every stateless stage, must treat earlier
records of the same batch as already seen, and are told which records were finally
accepted through :meth:`Stage.commit` (also used to rebuild their state on resume).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from distillery.records import add_verdict


@dataclass
class Check:
    """The outcome of one stage on one record.

    Attributes:
        passed: whether the record survives the stage.
        reason: on failure, a short reason naming the rule and the value, e.g.
            ``"too_short: 3 < 10 tokens"``. Its part before ``":"`` is the reason category
            counted in the report. Ignored when ``passed``.
        detail: JSON-serialisable facts worth keeping on the record (extracted answers,
            matched ids, scores), stored in the verdict.
        transient: the stage could not decide because a request failed transiently (a judge's
            server timed out): no verdict is final; the batch is left for the next run.
    """

    passed: bool
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    transient: bool = False


@dataclass
class StageStats:
    """Counters of one stage over a run: records in and out, seconds, failure reasons, and
    checks left undecided by transient failures (``transient``, by reason category; never
    written: a batch with any is not finished), and a stage's own run-level figures
    (``summary``, e.g. a judge's position and length bias, reported under ``stages[].summary``).

    ``summary`` layout: ``counts`` (numbers, added up over batches by :meth:`merge`),
    ``ratios`` (``{name: [numerator count, denominator count]}``: :meth:`to_dict` writes each as
    ``rates[name]``, ``None`` when the denominator is 0), and any other key (a JSON value the
    same in every batch, e.g. calibration figures: the latest one is kept)."""

    name: str
    kind: str
    records_in: int = 0
    records_out: int = 0
    seconds: float = 0.0
    reasons: Counter = field(default_factory=Counter)
    transient: Counter = field(default_factory=Counter)
    transient_errors: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def merge(self, other: StageStats) -> None:
        """Add ``other``'s counts into these."""
        self.records_in += other.records_in
        self.records_out += other.records_out
        self.seconds += other.seconds
        self.reasons.update(other.reasons)
        merge_summary(self.summary, other.summary)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the counters."""
        return {
            "name": self.name,
            "kind": self.kind,
            "in": self.records_in,
            "out": self.records_out,
            "seconds": round(self.seconds, 4),
            "reasons": dict(self.reasons.most_common()),
            **({"summary": summary_dict(self.summary)} if self.summary else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageStats:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=data["name"],
            kind=data["kind"],
            records_in=data["in"],
            records_out=data["out"],
            seconds=data["seconds"],
            reasons=Counter(data.get("reasons", {})),
            summary={k: v for k, v in (data.get("summary") or {}).items() if k != "rates"},
        )


def merge_summary(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Merge a stage summary ``other`` into ``into`` (see :class:`StageStats`): ``counts`` are
    added, other keys replaced."""
    for key, value in other.items():
        if key == "counts":
            counts = into.setdefault("counts", {})
            for name, n in value.items():
                counts[name] = counts.get(name, 0) + n
        elif key != "rates":
            into[key] = value


def summary_dict(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with its ``rates`` computed from ``counts`` and ``ratios`` (see :class:`StageStats`)."""
    out = {k: v for k, v in summary.items() if k != "rates"}
    counts = summary.get("counts", {})
    if summary.get("ratios"):
        out["rates"] = {name: (round(counts.get(a, 0) / counts[b], 4) if counts.get(b) else None)
                        for name, (a, b) in summary["ratios"].items()}
    return out


def reason_category(reason: str | None) -> str:
    """The category of a rejection reason: its text before the first ``":"``."""
    if not reason:
        return "unspecified"
    return reason.split(":", 1)[0].strip() or "unspecified"


class Stage:
    """Base class of verifiers, filters, decontamination and deduplication stages.

    Subclasses set ``kind`` and implement :meth:`check` (or :meth:`check_batch`).
    ``cost`` is a relative per-record cost used to run cheap stages first
    (about: 1 = a regex over the text, 10 = a parse, 100 = a subprocess, 1000 = a model call).
    What a stage reads beyond the response is declared by its config
    (:attr:`~distillery.pipeline.config.StageConfig.inputs`) and checked before any work.

    Args:
        name: the stage's name in verdicts and the report (its config's
            :attr:`~distillery.pipeline.config.StageConfig.stage_name`: ``name``, else ``type``).
    """

    kind: ClassVar[str] = "filter"
    cost: ClassVar[float] = 1.0
    stateful: ClassVar[bool] = False
    scope: ClassVar[str] = "record"  # or "prompt": needs all candidates of a prompt (see module doc)

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = StageStats(self.name, self.kind)

    # -- what a stage implements -------------------------------------------------------
    def check(self, record: dict[str, Any]) -> Check:
        """Judge one record. Must not mutate it; return a :class:`Check`."""
        raise NotImplementedError(f"{type(self).__name__} implements neither check nor check_batch")

    def check_batch(self, records: list[dict[str, Any]]) -> list[Check]:
        """Judge live records in order; default: :meth:`check` on each."""
        return [self.check(r) for r in records]

    async def check_batch_async(self, records: list[dict[str, Any]]) -> list[Check]:
        """Coroutine form of :meth:`check_batch` (default: calls it); override to await a backend."""
        return self.check_batch(records)

    def prepare(self, records: list[dict[str, Any]]) -> None:
        """Prompt-scoped stages: see every candidate of the batch (accepted or not) before checking."""

    def commit(self, records: list[dict[str, Any]]) -> None:
        """Stateful stages: remember ``records``, the batch's finally accepted ones, in order."""

    def close(self) -> None:
        """Release resources (processes, models). Called once at the end of a run."""

    # -- the shared mechanism ----------------------------------------------------------
    def apply(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Check the live (still accepted) records of ``records`` and record verdicts.

        Returns the records that survive. Rejected records are marked in place
        (``accepted=False``, ``reject_stage``, ``reject_reason``); none is dropped.
        Must not be called from a running event loop when the stage is asynchronous; use
        :meth:`apply_async` there.

        Raises:
            RuntimeError: ``check_batch`` returned a different number of checks than records.
        """
        live = [r for r in records if r["accepted"]]
        if not live:
            return []
        start = time.perf_counter()
        return self._record(live, self.check_batch(live), start)

    async def apply_async(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """:meth:`apply` for use inside an event loop (awaits :meth:`check_batch_async`)."""
        live = [r for r in records if r["accepted"]]
        if not live:
            return []
        start = time.perf_counter()
        return self._record(live, await self.check_batch_async(live), start)

    def _record(self, live: list[dict[str, Any]], checks: list[Check], start: float) -> list[dict[str, Any]]:
        if len(checks) != len(live):
            raise RuntimeError(f"stage {self.name}: {len(checks)} checks for {len(live)} records")
        survivors = []
        for record, check in zip(live, checks, strict=True):
            if check.transient:  # undecided: the batch will be redone, this record is not judged
                self.stats.transient[reason_category(check.reason)] += 1
                self.stats.transient_errors.setdefault(reason_category(check.reason), str(check.reason)[:300])
                continue
            detail = dict(check.detail)
            if not check.passed:
                detail["reason"] = check.reason or self.name
                self.stats.reasons[reason_category(check.reason)] += 1
            add_verdict(record, self.kind, self.name, check.passed, detail)
            if check.passed:
                survivors.append(record)
        self.stats.records_in += len(live)
        self.stats.records_out += len(survivors)
        self.stats.seconds += time.perf_counter() - start
        return survivors


@dataclass
class BuildContext:
    """What a stage config may need to build its stage.

    Attributes:
        base_dir: folder that relative paths in the recipe are resolved against (the
            recipe's folder).
        run_dir: the run directory (for caches or artefacts a stage writes), or ``None``
            outside a run.
        extras: shared objects later stages may need (e.g. a judge backend), by name.
    """

    base_dir: Any = None
    run_dir: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    def resolve(self, path: str) -> Any:
        """``path`` resolved against :attr:`base_dir` unless absolute."""
        from pathlib import Path

        p = Path(path).expanduser()
        if p.is_absolute() or self.base_dir is None:
            return p
        return Path(self.base_dir) / p
