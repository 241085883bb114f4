"""Live progress of a run: a rich bar over seeds that moves with every candidate, with
requests/s, tokens/s, the accept rate so far and (when ``pricing:`` is set) the cost so far.

Seeds are only known to be done when their batch is checkpointed, so between batch ends the bar
advances by ``1 / per_seed`` of a seed for every candidate received (``per_seed``: the candidates
a seed is expected to give, e.g. ``samples_per_prompt``), never past the seeds still to do; when a
batch finishes the estimate is replaced by its real seed count. The ETA follows from that
movement (rich's speed estimate over the last 30 s).
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RunProgress:
    """Progress over seeds, with counters of candidates, accepted records, requests and tokens.

    Args:
        total: number of seeds if known (``None``: the bar shows counts only).
        enabled: draw the bar (off in tests / non-interactive use if wanted).
        console: where to draw.
        per_seed: candidates one seed is expected to give (> 0; default 1): how far one
            candidate moves the bar before its batch is finished.
        prices: ``(input per million tokens, output per million tokens, currency)``: show the
            cost so far of the requests sent (not cache hits); ``None`` or zero prices: no cost.

    Attributes:
        candidates: candidates seen (received now or counted from finished batches).
        accepted: accepted records of finished batches (checks run per batch).
        requests: candidates that came from the teacher, not from the response cache.
        tokens_in, tokens_out: tokens of those requests. seeds_done: seeds of finished batches.
    """

    def __init__(
        self,
        total: int | None,
        enabled: bool = True,
        console: Console | None = None,
        per_seed: float | None = None,
        prices: tuple[float, float, str] | None = None,
    ) -> None:
        self.enabled = enabled
        self.total = total
        self.per_seed = float(per_seed) if per_seed and per_seed > 0 else 1.0
        self.prices = prices if prices and (prices[0] or prices[1]) else None
        self.candidates = 0
        self.accepted = 0
        self.requests = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.seeds_done = 0
        self._finished_candidates = 0  # candidates of finished batches (the accept rate's denominator)
        self._live = 0.0  # candidates received whose batch is not finished yet (an estimate once batches end)
        self._started = time.monotonic()
        self._shown = 0.0
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[figures]}"),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self._task = self._progress.add_task("seeds", total=total, count=self._count(), figures="")

    @property
    def tokens(self) -> int:
        """Tokens in + out of the requests sent."""
        return self.tokens_in + self.tokens_out

    def __enter__(self) -> RunProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def on_candidate(self, record: dict[str, Any]) -> None:
        """Count one candidate just made (a record with ``tokens_in``, ``tokens_out``,
        ``cached``) and move the bar by ``1 / per_seed`` seed."""
        self.candidates += 1
        self._live += 1
        if not record.get("cached"):
            self.requests += 1
            self.tokens_in += record.get("tokens_in") or 0
            self.tokens_out += record.get("tokens_out") or 0
        self._refresh()

    def on_batch(self, seeds: int, accepted: int, candidates: int | None = None, made: int | None = None) -> None:
        """A batch of ``seeds`` seeds is finished (or was finished in an earlier session).

        Args:
            seeds, accepted: its seeds and accepted records.
            candidates: its candidates when they were *not* passed to :meth:`on_candidate`
                (a batch finished earlier, or run where no callback reaches this process).
            made: its candidates when they were passed to :meth:`on_candidate` (replaces the
                ``seeds * per_seed`` estimate of what it took from the bar).
        """
        self.seeds_done += seeds
        self.accepted += accepted
        if candidates is not None:
            self.candidates += candidates
            self._finished_candidates += candidates
        else:
            took = made if made is not None else seeds * self.per_seed
            self._live = max(0.0, self._live - took)
            self._finished_candidates += made if made is not None else min(seeds * self.per_seed, self.candidates)
        self._refresh()

    # -- drawing ------------------------------------------------------------------------------------
    def completed(self) -> float:
        """Seeds shown as done: finished batches plus the estimate for the candidates in flight."""
        done = float(self.seeds_done)
        partial = self._live / self.per_seed
        if self.total is not None:
            partial = min(partial, max(0.0, self.total - done) * 0.99)  # only a finished batch completes seeds
        return done + partial

    def _count(self) -> str:
        """``"12/100 seeds"``: the seeds shown as done (whole), and those checkpointed when fewer."""
        shown = int(self.completed())
        count = f"{shown}/{self.total}" if self.total is not None else f"{shown}"
        return count + (f" ({self.seeds_done} checkpointed)" if self.seeds_done < shown else "")

    def figures(self) -> str:
        """The text beside the bar: candidates, accept rate, requests/s, tokens/s, cost."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        parts = [f"candidates {self.candidates}"]
        if self._finished_candidates:
            parts.append(f"accepted {self.accepted} ({self.accepted / self._finished_candidates:.0%})")
        else:
            parts.append(f"accepted {self.accepted}")
        parts.append(f"{self.requests / elapsed:.1f} req/s")
        parts.append(f"{self.tokens / elapsed:.0f} tok/s")
        if self.prices is not None:
            cost = (self.tokens_in * self.prices[0] + self.tokens_out * self.prices[1]) / 1e6
            parts.append(f"cost {cost:.4f} {self.prices[2]}")
        return " · ".join(parts)

    def _refresh(self) -> None:
        if not self.enabled:
            return
        now = self.completed()
        self._progress.update(self._task, advance=now - self._shown, count=self._count(), figures=self.figures())
        self._shown = now
