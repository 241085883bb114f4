"""Errors a user sees. Each names where the problem is (file, line, field or key path)."""

from __future__ import annotations


class DistilleryError(Exception):
    """Base of distillery's user-facing errors; the CLI prints the message and exits 1."""


class RecipeError(DistilleryError):
    """A recipe is invalid: unknown key, wrong type, missing file. Raised before any work."""


class InputError(DistilleryError):
    """A seed file row cannot be used.

    Args:
        path: the file.
        line: 1-based line (JSONL, CSV) or row number (Parquet, datasets), or ``None``.
        field: the offending field, or ``None``.
        message: what is wrong.
    """

    def __init__(self, path: object, line: int | None, field: str | None, message: str) -> None:
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = self.path + (f":{line}" if line is not None else "")
        what = f" field {field!r}:" if field else ""
        super().__init__(f"{where}:{what} {message}")

    def __reduce__(self) -> tuple:  # picklable (raised in executor worker processes)
        return (type(self), (self.path, self.line, self.field, self.message))


class BackendError(DistilleryError):
    """A teacher backend cannot be used (unreachable server, unknown model, bad credentials)."""
