"""The run directory: one writer at a time, the recipe it holds, and starting afresh.

A run holds an exclusive lock on ``<run_dir>/.lock`` (a POSIX record lock, ``fcntl.lockf``)
for as long as it runs; a second run on the same directory refuses at once, naming the
holder's pid. The kernel drops the lock when its process dies, however it dies, so a lock
left by a killed run is taken over by the next one (and said so). Record locks belong to the
process, not to its children: sandbox workers and executor processes never keep a dead run's
lock alive. (Two runs inside one process are not told apart: POSIX locks are per process.)
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

from rich.console import Console

from distillery import __version__
from distillery.errors import DistilleryError, RecipeError
from distillery.io.atomic import atomic_write_text
from distillery.records import utc_now

OUTPUTS = ("accepted.parquet", "rejected.parquet", "accepted.jsonl", "rejected.jsonl", "report.json", "README.md",
           "reduce.json")
"""Files a finished run writes (removed by ``--fresh``)."""


class RunDirLocked(DistilleryError):
    """Another live process is running on this run directory."""


class RunDir:
    """A run directory, locked while this object is open.

    Args:
        path: the folder (created if missing).
        console: where to say that a stale lock was taken over.

    Raises:
        RunDirLocked: (on :meth:`open`) another live process holds the lock.
        RecipeError: (on :meth:`open`) the folder cannot be created or written.
    """

    def __init__(self, path: str | Path, console: Console | None = None) -> None:
        self.path = Path(path)
        self.console = console
        self._fd: int | None = None

    @property
    def lock_path(self) -> Path:
        """The lock file."""
        return self.path / ".lock"

    def open(self) -> RunDir:
        """Take the lock (see the module doc)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise RecipeError(f"output.dir: cannot create or write {self.path}: {e.strerror}") from e
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise RecipeError(
                    f"output.dir: cannot lock {self.lock_path}: {e.strerror} (the run directory needs a filesystem "
                    "with POSIX locks: a local disk, or NFS with locking, Lustre, GPFS)"
                ) from e
            who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
            raise RunDirLocked(
                f"{self.path} is in use by {who} (since {holder.get('since', '?')}); wait for it to finish, "
                "or use another output.dir"
            ) from None
        previous = _read_holder(fd)
        if previous and previous.get("pid") != os.getpid() and self.console is not None:
            self.console.print(
                f"{self.path}: taking over the lock left by pid {previous.get('pid')} (no longer running)", highlight=False
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": utc_now()}).encode(), 0)
        self._fd = fd
        return self

    def close(self) -> None:
        """Release the lock. The file stays, emptied: only a killed run leaves its pid in it."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the record lock
            self._fd = None

    def __enter__(self) -> RunDir:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- what the directory holds -----------------------------------------------------------------
    def prepare(self, recipe_yaml: str, recipe_hash: str, fresh: bool, clear: Any) -> dict[str, Any] | None:
        """Check the directory holds a run of this recipe (or none), start afresh if asked, and
        write ``recipe.yaml`` and ``run.json``.

        Two recipes are the same run when :func:`distillery.recipe.data_view` of both is equal
        (so ``seeds.limit``, concurrency, URLs, pricing and the output location may change); a
        refusal names every key that differs, compared key by key with the ``recipe.yaml``
        the directory holds.

        Args:
            recipe_yaml, recipe_hash: the resolved recipe and its data hash.
            fresh: discard earlier results (``clear()`` empties the shards; the cache is kept).
            clear: called to remove the shards when starting afresh.

        Returns:
            The recipe the directory held before (``recipe.yaml`` loaded), or ``None`` when it
            held none or ``fresh`` discarded it.

        Raises:
            RecipeError: the directory holds a run of another recipe and ``fresh`` is false.
        """
        import yaml

        from distillery.recipe import data_view

        meta_path = self.path / "run.json"
        previous: dict[str, Any] | None = None
        if meta_path.exists():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if (self.path / "recipe.yaml").exists():
                loaded = yaml.safe_load((self.path / "recipe.yaml").read_text(encoding="utf-8"))
                previous = loaded if isinstance(loaded, dict) else None
            if fresh:
                clear()
                for name in OUTPUTS:
                    (self.path / name).unlink(missing_ok=True)
                previous = None
            elif meta.get("recipe_hash") != recipe_hash:
                current = yaml.safe_load(recipe_yaml)
                keys = differing_keys(data_view(previous), data_view(current)) if previous is not None else ["?"]
                if keys:  # (equal views: a directory made before the hash left seeds.limit out)
                    shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
                    raise RecipeError(
                        f"{self.path} holds a run of a different recipe (these keys differ: {shown}); "
                        "use another output.dir or --fresh to start over (the response cache is kept)"
                    )
        atomic_write_text(self.path / "recipe.yaml", recipe_yaml)
        atomic_write_text(
            meta_path,
            json.dumps({"recipe_hash": recipe_hash, "distillery_version": __version__, "created_at": utc_now()}, indent=2),
        )
        return previous

    def drop_batches(self, shards: Path, keep: Any) -> list[int]:
        """Remove the markers (then the shards) of the finished batches for which
        ``keep(k, marker)`` is false, so they are redone (from the response cache); return them.

        Used when ``seeds.limit`` changed: a batch is kept only if the new limit makes the same
        batch (whole, and inside the limit)."""
        dropped = []
        for marker in sorted(shards.glob("batch-*.json")):
            k = int(marker.stem.split("-")[1])
            if not keep(k, json.loads(marker.read_text(encoding="utf-8"))):
                marker.unlink()
                marker.with_suffix(".parquet").unlink(missing_ok=True)
                dropped.append(k)
        return dropped


def differing_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted key paths whose values differ between two nested mappings (lists compared whole,
    or item by item when both have the same length), in sorted order."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(path)
            else:
                out.extend(differing_keys(old[key], new[key], path))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [k for i, (a, b) in enumerate(zip(old, new, strict=True)) for k in differing_keys(a, b, f"{prefix}.{i}")]
    return [] if old == new else [prefix or "(recipe)"]


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}
