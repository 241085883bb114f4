"""Executors: what schedules a run's batches (the datatrove executor/step split).

An executor takes a :class:`~distillery.pipeline.plan.Plan`, skips the batches whose marker
exists, and runs every other one through
:func:`~distillery.pipeline.batch.process_batch` — which writes the shard and marker —
where it likes: ``local`` in this process (asyncio), ``ray`` as tasks on a Ray cluster.
The reduce (deduplication) runs after, over the finished shards, whichever executor ran the
map. A recipe picks one with ``executor: local`` or ``executor: {type: ray, address: ...}``;
executors are registered under kind ``executor``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from distillery.pipeline.batch import BatchOutcome
from distillery.pipeline.plan import Plan
from distillery.pipeline.progress import RunProgress


class ExecutorConfig(BaseModel):
    """The ``executor:`` section: ``type`` names the executor (subclasses set the literal)."""

    model_config = ConfigDict(extra="forbid")

    type: str

    def build(self) -> Executor:
        """The executor this section describes."""
        raise NotImplementedError(f"{type(self).__name__}.build")


@dataclass
class ExecutionResult:
    """What an executor did.

    Attributes:
        finished: batches finished in this session (index -> marker).
        skipped: batches finished earlier (index -> marker).
        transient: transiently failed requests by kind, over the batches left unfinished.
        errors: the first error message of each kind.
        pending: the batches left unfinished.
        backend_calls, cache_hits: over this session's batches (finished or not).
        budget: why a call was not sent (``budget:`` reached), if one was not.
    """

    finished: dict[int, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[int, dict[str, Any]] = field(default_factory=dict)
    transient: Counter = field(default_factory=Counter)
    errors: dict[str, str] = field(default_factory=dict)
    pending: list[int] = field(default_factory=list)
    backend_calls: int = 0
    cache_hits: int = 0
    budget: str | None = None

    def add(self, outcome: BatchOutcome) -> None:
        """Account one batch's outcome."""
        self.backend_calls += outcome.calls
        self.cache_hits += outcome.cache_hits
        if outcome.done:
            self.finished[outcome.batch] = outcome.marker  # type: ignore[assignment]
        else:
            self.pending.append(outcome.batch)
            if outcome.budget is not None:
                self.budget = self.budget or outcome.budget
            self.transient.update(outcome.transient)
            for kind, error in outcome.errors.items():
                self.errors.setdefault(kind, error)


class Executor:
    """Base of executors: :meth:`run` processes every unfinished batch of a plan."""

    name: ClassVar[str] = "executor"

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config

    def run(self, plan: Plan, done: dict[int, dict[str, Any]], progress: RunProgress) -> ExecutionResult:
        """Process every batch of ``plan`` not in ``done`` (finished markers by index).

        Raises:
            InputError, BackendError, RecipeError: as :func:`~distillery.pipeline.batch.process_batch`.
        """
        raise NotImplementedError(f"{type(self).__name__}.run")
