"""Generation strategies: the seam between seeds and candidate records.

A strategy turns one batch of seeds into candidate records through the teacher, in as many
steps as it needs: one call per prompt, waves of best-of-N with the verifiers in the loop
(:mod:`distillery.generate.rejection_sampling`), or a chain such as generate-instruction ->
generate-response or answer -> critique -> revise. ``curate`` (:mod:`distillery.generate.curate`)
takes the responses from the seeds and calls nothing. A recipe selects one with
``generation.strategy``; each is registered under kind ``strategy``::

    @register("strategy")
    class ShoutConfig(StrategyConfig):
        strategy: Literal["shout"] = "shout"
        def build(self, recipe): return Shout(self, recipe)

    class Shout(Strategy):
        async def generate(self, seeds, ctx):
            items, records = ctx.prompts(seeds)
            requests = [GenerationRequest.make(i.messages, ctx.sampling) for i in items]
            async for i, result in ctx.stream(requests):
                if ctx.keep(result):                       # transient failures wait for a re-run
                    records.append(ctx.candidate(items[i], result, 0))
            return records

Every call goes through :class:`GenerationContext`, which serves it from the run's response
cache (each request has its own key: messages, sampling, sample index and ``step``), counts
calls, tokens and retries, and holds back transient failures: a batch with one is left
unfinished and retried by the next run, never recorded as a verdict. Each record is stamped
with the strategy's name, parameters and intermediate steps (``strategy``,
``strategy_params``, ``steps``) as provenance.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from distillery.backends.base import Backend, GenerationRequest, GenerationResult, SamplingParams
from distillery.errors import InputError
from distillery.generate.candidates import PromptItem, bad_row_record, candidate_record, seed_id
from distillery.generate.prompt import PromptBuilder
from distillery.io.seeds import BadRow, SeedRow
from distillery.pipeline.stage import Stage, StageStats
from distillery.records import add_verdict, new_record

if TYPE_CHECKING:
    from distillery.recipe import Recipe


class StrategyConfig(BaseModel):
    """The ``generation:`` section of a recipe: ``strategy`` names the strategy, the rest are
    its parameters. Subclasses set ``strategy: Literal[...]`` (the name, written once) and
    implement :meth:`build`."""

    model_config = ConfigDict(extra="forbid")

    strategy: str

    def build(self, recipe: Recipe) -> Strategy:
        """The strategy this section describes, for ``recipe``.

        Raises:
            distillery.errors.RecipeError: the section cannot be used with this recipe.
        """
        raise NotImplementedError(f"{type(self).__name__}.build")

    def params(self) -> dict[str, Any]:
        """The strategy's parameters (JSON-ready), as stamped on every record."""
        return self.model_dump(mode="json", exclude={"strategy"})


class Strategy:
    """Base of generation strategies.

    Class attributes:
        needs_teacher: the strategy calls the teacher (a recipe must have a ``teacher:``).
        outputs: record fields the strategy adds beyond :data:`distillery.records.RECORD_FIELDS`,
            with their Arrow types (written as columns of the dataset).
        mode: the run's mode in the report (``generate`` or ``curate``).
        sequential: see below.

    Args:
        config: the ``generation:`` section.
        recipe: the whole recipe (prompt, seeds, teacher).
    """

    needs_teacher: ClassVar[bool] = True
    outputs: ClassVar[dict[str, pa.DataType]] = {}
    mode: ClassVar[str] = "generate"
    sequential: ClassVar[bool] = False
    """Batches depend on earlier ones (a growing task pool, Self-Instruct): they run in order
    in one process, a run stops at the first unfinished batch, and :meth:`GenerationContext.history`
    gives the records of the batches before."""

    def __init__(self, config: StrategyConfig, recipe: Recipe) -> None:
        self.config = config
        self.recipe = recipe
        prompt = recipe.prompt
        self.prompt = PromptBuilder(prompt.template, prompt.system, [t.model_dump() for t in prompt.few_shot])

    @property
    def name(self) -> str:
        """The registered name (``generation.strategy``)."""
        return self.config.strategy

    @property
    def inputs(self) -> set[str]:
        """Seed fields the strategy reads (default: the prompt template's variables)."""
        return set(self.prompt.variables)

    def describe(self) -> str:
        """One Markdown line for the dataset card saying how records were made."""
        return f"**Generation**: strategy `{self.name}` ({json.dumps(self.config.params())})."

    async def generate(self, seeds: list[SeedRow], ctx: GenerationContext) -> list[dict[str, Any]]:
        """Candidate records for ``seeds`` (one batch), in a stable order.

        Records that fail a step are returned rejected with their reason; transient failures
        are passed to :meth:`GenerationContext.keep`, which holds them back. Records not put
        through :meth:`GenerationContext.check` are checked by the runner afterwards.
        """
        raise NotImplementedError(f"{type(self).__name__}.generate")

    def close(self) -> None:
        """Release what :meth:`generate` opened (called once per worker, at the end of a run).

        A strategy is also built just to check a recipe, so ``__init__`` must be cheap and open
        nothing: open models or connections on first use in :meth:`generate`.
        """


@dataclass
class Ledger:
    """Calls, tokens and time of one batch's generation.

    Attributes:
        calls: responses the backend produced (not from the cache), failed ones included.
        cache_hits: responses served from the response cache.
        tokens_in, tokens_out: tokens of every response (cached ones too).
        billed_tokens_in, billed_tokens_out: tokens of the responses actually generated now.
        retries: retries spent. waves: rounds of requests (rejection sampling).
        stopped_early: prompts a sample allocation stopped drawing for before their budget
            (``allocation: posterior``), none accepted.
        seconds: time spent waiting for the backend.
        transient: transiently failed requests by error kind (the batch is left unfinished).
        errors: the first error message of each transient kind.
    """

    calls: int = 0
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    billed_tokens_in: int = 0
    billed_tokens_out: int = 0
    retries: int = 0
    waves: int = 0
    stopped_early: int = 0
    seconds: float = 0.0
    transient: Counter = field(default_factory=Counter)
    errors: dict[str, str] = field(default_factory=dict)

    def count(self, result: GenerationResult) -> None:
        """Add one result's figures (a call the budget did not send is no call)."""
        if result.error_kind == "budget":
            return
        if result.cached:
            self.cache_hits += 1
        else:
            self.calls += 1
            self.billed_tokens_in += result.tokens_in or 0
            self.billed_tokens_out += result.tokens_out or 0
        self.tokens_in += result.tokens_in or 0
        self.tokens_out += result.tokens_out or 0
        self.retries += result.retries


class SharedWork:
    """What the batches one worker runs concurrently share: a lock per stage, and the number of
    teacher requests sent and not yet answered (:attr:`outstanding`), which an executor reads to
    start the next batch before the backend would idle.

    Attributes:
        outstanding: requests in flight or queued at the backend, over every batch.
        low_water: :meth:`received` sets :attr:`changed` once ``outstanding`` falls below it.
    """

    def __init__(self, low_water: int = 0) -> None:
        self.outstanding = 0
        self.low_water = low_water
        self.changed = asyncio.Event()
        self._locks: dict[int, asyncio.Lock] = {}

    def lock(self, stage: Stage) -> asyncio.Lock:
        """The lock of ``stage`` (one batch at a time in a stage)."""
        lock = self._locks.get(id(stage))
        if lock is None:
            lock = self._locks[id(stage)] = asyncio.Lock()
        return lock

    def sent(self, n: int) -> None:
        """``n`` more requests went to the backend."""
        self.outstanding += n

    def received(self, n: int) -> None:
        """``n`` requests were answered (or given up)."""
        self.outstanding -= n
        if n and self.outstanding < self.low_water:
            self.changed.set()


class GenerationContext:
    """What a strategy uses while it generates one batch.

    Args:
        strategy: the strategy (for provenance).
        backend: the cached teacher backend, or ``None`` when the strategy calls nothing.
        stages: the stateless record-scoped stages run by :meth:`check` (verifiers, filters,
            decontamination), cheapest first.
        sampling: the recipe's sampling parameters.
        source: the seed file or source name (provenance); source_name: its short name (ids).
        id_field: the seed field holding ids.
        skip_bad_rows: record seeds that cannot be prompted as rejected instead of stopping.
        on_candidate: called with every new candidate record (progress display).
        batch: the batch's index ``k``. history: returns the records of the finished batches
            before ``k`` in batch order (for :attr:`Strategy.sequential` strategies).
        base_dir: the recipe's folder (relative paths); state_dir: where a strategy may keep
            state for inspection (``<run_dir>/state``; a scratch folder in a plan's pilot).
        shared: what the batches a worker runs at the same time share (one lock per stage, the
            count of requests in flight); ``None``: this batch alone.

    Each batch counts its stages' figures in its own :class:`StageStats` (:meth:`stats_of`), so
    batches may run concurrently on one event loop: a stage runs one batch's records at a time
    (its lock), its ``stats`` pointing at that batch's counters meanwhile.
    """

    def __init__(
        self,
        strategy: Strategy,
        backend: Backend | None,
        stages: list[Stage],
        sampling: SamplingParams,
        source: str,
        source_name: str,
        id_field: str | None,
        skip_bad_rows: bool,
        on_candidate: Callable[[dict[str, Any]], None] | None = None,
        batch: int = 0,
        history: Callable[[], Iterator[dict[str, Any]]] | None = None,
        base_dir: str | None = None,
        state_dir: Path | None = None,
        shared: SharedWork | None = None,
    ) -> None:
        self.strategy = strategy
        self.shared = shared or SharedWork()
        self._stage_stats: dict[int, StageStats] = {}
        self.batch = batch
        self._history = history
        self.base_dir = base_dir
        self.state_dir = state_dir
        self.backend = backend
        self.stages = stages
        self.sampling = sampling
        self.source = source
        self.source_name = source_name
        self.id_field = id_field
        self.skip_bad_rows = skip_bad_rows
        self.on_candidate = on_candidate
        self.ledger = Ledger()
        self.prompted = 0
        self.bad: Counter = Counter()
        self._checked: set[int] = set()
        self._undecided: set[int] = set()
        self._params = json.dumps(strategy.config.params(), sort_keys=True)

    # -- seeds -> prompts ----------------------------------------------------------------------
    def prompts(self, seeds: list[SeedRow], builder: PromptBuilder | None = None) -> tuple[list[PromptItem], list[dict[str, Any]]]:
        """Seeds made into prompts with ``builder`` (default the recipe's ``prompt:``).

        Returns:
            ``(items, rejected)``: prompt items, and a rejected record for each seed the
            template cannot be filled from (with ``--skip-bad-rows``).

        Raises:
            InputError: a seed lacks a field the template uses, or the template fails on its
                values (without ``--skip-bad-rows``).
        """
        builder = builder or self.strategy.prompt
        items: list[PromptItem] = []
        rejected: list[dict[str, Any]] = []
        for row in seeds:
            try:
                messages = builder.messages(row.data)
            except KeyError as e:
                rejected.append(self.bad_row(BadRow(row.index, row.line, f"missing_field: {e.args[0]}")))
                continue
            except Exception as e:  # the template itself failed on this row's values (e.g. {{ question / 0 }})
                reason = f"template_error: {type(e).__name__}: {str(e)[:200]}"
                rejected.append(self.bad_row(BadRow(row.index, row.line, reason, field="prompt.template")))
                continue
            items.append(PromptItem(row, seed_id(row, self.id_field, self.source_name), messages))
        self.prompted += len(items)
        return items, rejected

    def texts(self, seeds: list[SeedRow], field: str) -> tuple[list[tuple[SeedRow, str, str]], list[dict[str, Any]]]:
        """The seeds' documents in ``field`` (rephrasing, backtranslation), counted as prompted.

        Returns:
            ``(documents, rejected)``: ``(row, seed id, text)`` of each seed with text, and a
            rejected ``empty_field`` record for each seed whose ``field`` is missing or blank.

        Raises:
            InputError: a seed's ``field`` is blank (without ``--skip-bad-rows``).
        """
        docs: list[tuple[SeedRow, str, str]] = []
        rejected: list[dict[str, Any]] = []
        for row in seeds:
            value = row.data.get(field)
            text = "" if value is None else str(value)
            if not text.strip():
                rejected.append(self.bad_row(BadRow(row.index, row.line, f"empty_field: {field!r} is empty", field=field)))
                continue
            docs.append((row, seed_id(row, self.id_field, self.source_name), text))
        self.prompted += len(docs)
        return docs, rejected

    def bad_row(self, bad: BadRow) -> dict[str, Any]:
        """A rejected record for a seed that cannot be used (keeps its raw text and reason).

        Raises:
            InputError: unless ``skip_bad_rows`` (names the file, line and field).
        """
        if not self.skip_bad_rows:
            raise InputError(self.source, bad.line, bad.field, bad.reason + " (use --skip-bad-rows to record it as rejected and go on)")
        self.bad[bad.reason.split(":", 1)[0]] += 1
        return bad_row_record(bad, self.source, self.source_name)

    # -- calls -----------------------------------------------------------------------------------
    async def stream(self, requests: list[GenerationRequest]) -> AsyncIterator[tuple[int, GenerationResult]]:
        """The results of ``requests`` as they complete, ``(position, result)``, through the cache.

        Every result is counted in :attr:`ledger`; each has already been written to the cache
        when it arrives here.

        Raises:
            RuntimeError: the strategy calls the teacher but the run has none.
        """
        if self.backend is None:
            raise RuntimeError(f"strategy {self.strategy.name!r} called the teacher, but the run has none")
        started = time.perf_counter()
        shared = self.shared
        shared.sent(len(requests))
        left = len(requests)
        try:
            async for i, result in self.backend.stream(requests):
                left -= 1
                shared.received(1)
                self.ledger.count(result)
                yield i, result
        finally:
            shared.received(left)
            self.ledger.seconds += time.perf_counter() - started

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """The results of ``requests``, in order (see :meth:`stream`)."""
        out: list[GenerationResult | None] = [None] * len(requests)
        async for i, result in self.stream(requests):
            out[i] = result
        return out  # type: ignore[return-value]

    def keep(self, result: GenerationResult) -> bool:
        """Whether ``result`` may become (part of) a record: ``False`` for a transient failure
        (timeout, connection, 429, 5xx, garbled body), which is counted and leaves the batch
        unfinished so that the next run retries it."""
        if result.transient:
            self.ledger.transient[result.error_kind] += 1
            self.ledger.errors.setdefault(result.error_kind, str(result.error)[:300])  # type: ignore[arg-type]
            return False
        return True

    # -- records ---------------------------------------------------------------------------------
    def candidate(
        self,
        item: PromptItem,
        result: GenerationResult,
        sample_index: int,
        steps: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A candidate record for ``result`` (sample ``sample_index`` of ``item``), stamped with
        the strategy; failed, empty and truncated results are rejected at stage ``generate``.

        Args:
            steps: intermediate steps (see :meth:`step`) that led to this result.
            **extra: the strategy's own output fields (its :attr:`Strategy.outputs`).
        """
        backend = self.backend
        record = candidate_record(
            item, self.source, backend.model if backend else None, backend.kind if backend else None,
            self.sampling, self.strategy.prompt.template_hash, sample_index, result,
        )
        return self.stamp(record, steps, **extra)

    def stamp(self, record: dict[str, Any], steps: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
        """Set the strategy's provenance (name, parameters, steps) and output fields on ``record``."""
        record["strategy"] = self.strategy.name
        record["strategy_params"] = self._params
        record["steps"] = list(steps or [])
        for name in self.strategy.outputs:
            record[name] = extra.pop(name, None)
        if extra:
            raise KeyError(f"strategy {self.strategy.name!r} does not declare outputs {sorted(extra)}")
        if self.on_candidate:
            self.on_candidate(record)
        return record

    def record(
        self,
        item: PromptItem,
        response: str | None,
        sample_index: int = 0,
        steps: list[dict[str, Any]] | None = None,
        reject: str | None = None,
        raw: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A candidate record whose ``response`` does not come from one call: a document
        (instruction backtranslation), a seed's answer, or text assembled over ``steps``.
        ``item.messages`` is the record's prompt (what a student is trained on). Its
        ``tokens_in``/``tokens_out`` are unset (no one call produced the response; each step
        carries its own, and the run's ledger counts every call), so a ``length`` filter
        measures the response itself.

        With ``reject`` (``category: detail``) the record is rejected for that reason, the
        model's ``raw`` text kept in the verdict (a step failed before there was a response);
        otherwise an empty response is rejected as ``empty_response``."""
        backend = self.backend
        steps = list(steps or [])
        record = new_record(
            id=f"{item.seed_id}#{sample_index}",
            seed_id=item.seed_id,
            seed_index=item.row.index,
            seed_source=self.source,
            seed=item.row.data,
            prompt=item.messages,
            response=response,
            teacher=backend.model if backend else None,
            backend=backend.kind if backend else "seed",
            sampling=json.dumps(self.sampling.to_dict(), sort_keys=True) if self.sampling else None,
            prompt_template_hash=self.strategy.prompt.template_hash,
            sample_index=sample_index,
            finish_reason=steps[-1].get("finish_reason") if steps else None,
            cached=all(s.get("cached") for s in steps) if steps else None,
        )
        if reject is not None:
            self.reject(record, reject, raw=raw)
        elif not (response or "").strip():
            add_verdict(record, "generate", "generate", False, {"reason": "empty_response: no text to keep"})
        return self.stamp(record, steps, **extra)

    def reject(self, record: dict[str, Any], reason: str, stage: str = "generate", name: str | None = None,
               raw: str | None = None) -> dict[str, Any]:
        """Mark ``record`` rejected at ``stage`` with ``reason`` (``category: detail``), keeping
        the model's ``raw`` text in the verdict's detail; returns the record.

        This is how malformed model output (bad JSON, no list, no score, a refusal) becomes a
        rejected record with its reason instead of a crash or a silent ``None``."""
        detail: dict[str, Any] = {"reason": reason}
        if raw is not None:
            detail["raw"] = raw
        if record["accepted"]:
            add_verdict(record, stage, name or stage, False, detail)
        return record

    def history(self) -> Iterator[dict[str, Any]]:
        """The records of the finished batches before this one, in batch order (accepted and
        rejected; nothing when the strategy is not :attr:`Strategy.sequential`)."""
        if self._history is None:
            return iter(())
        return self._history()

    @staticmethod
    def step(name: str, request: GenerationRequest, result: GenerationResult) -> dict[str, Any]:
        """An intermediate step for a record's ``steps``: the call's prompt, response and tokens."""
        return {
            "name": name,
            "prompt": request.message_dicts(),
            "response": result.text,
            "tokens_in": result.tokens_in,
            "tokens_out": result.tokens_out,
            "cached": result.cached,
            "finish_reason": result.finish_reason,
        }

    async def check(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run the stateless stages on the live records of ``records``; return the survivors
        (rejected ones are marked in place). Records checked here are not checked again.

        A record a stage could not decide (its model call failed transiently) is neither: it
        is left out of the survivors and listed by :meth:`undecided`; its batch will be redone.
        """
        self._checked.update(id(r) for r in records)
        live = [r for r in records if r["accepted"]]
        for stage in self.stages:
            survivors = await self.apply(stage, live)
            kept = {id(r) for r in survivors}
            self._undecided.update(id(r) for r in live if r["accepted"] and id(r) not in kept)
            live = survivors
        return live

    def stats_of(self, stage: Stage) -> StageStats:
        """This batch's counters of ``stage``."""
        stats = self._stage_stats.get(id(stage))
        if stats is None:
            stats = self._stage_stats[id(stage)] = StageStats(stage.name, stage.kind)
        return stats

    async def apply(self, stage: Stage, records: list[dict[str, Any]], prepare: list[dict[str, Any]] | None = None,
                    ) -> list[dict[str, Any]]:
        """``stage.apply_async(records)`` counted in this batch's :meth:`stats_of` ``stage``,
        holding the stage's lock (after ``stage.prepare(prepare)`` for a prompt-scoped stage)."""
        async with self.shared.lock(stage):
            stage.stats = self.stats_of(stage)
            if prepare is not None:
                stage.prepare(prepare)
            return await stage.apply_async(records)

    def undecided(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records of ``records`` that a stage could not decide (see :meth:`check`)."""
        return [r for r in records if id(r) in self._undecided]

    def unchecked(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records of ``records`` that :meth:`check` has not seen."""
        return [r for r in records if id(r) not in self._checked]
