"""Live progress of a run: a rich bar with rate, ETA, accepted count and tokens."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RunProgress:
    """Progress over seeds, with counters of candidates, accepted records and tokens.

    Args:
        total: number of seeds if known.
        enabled: draw the bar (off in tests / non-interactive use if wanted).
        console: where to draw.
    """

    def __init__(self, total: int | None, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.candidates = 0
        self.accepted = 0
        self.tokens = 0
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("candidates {task.fields[candidates]} · accepted {task.fields[accepted]} · tokens {task.fields[tokens]}"),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self._task = self._progress.add_task("seeds", total=total, rate="", candidates=0, accepted=0, tokens=0)

    def __enter__(self) -> RunProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def on_candidate(self, record: dict[str, Any]) -> None:
        """Count one generated candidate and its tokens."""
        self.candidates += 1
        self.tokens += (record.get("tokens_in") or 0) + (record.get("tokens_out") or 0)
        self._refresh(0)

    def on_batch(self, seeds: int, accepted: int, candidates: int | None = None) -> None:
        """Advance by a finished batch of ``seeds`` seeds with ``accepted`` accepted records."""
        self.accepted += accepted
        if candidates is not None:
            self.candidates += candidates
        self._refresh(seeds)

    def _refresh(self, advance: int) -> None:
        if not self.enabled:
            return
        task = self._progress.tasks[0]
        speed = task.speed
        rate = f"{speed:.1f} seeds/s" if speed else ""
        self._progress.update(
            self._task, advance=advance, rate=rate, candidates=self.candidates, accepted=self.accepted, tokens=self.tokens
        )
