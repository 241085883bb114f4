"""Errors a user sees. Each names where the problem is (file, line, field or key path).

The command line is one error boundary (:func:`user_message`): a :class:`DistilleryError`
is printed as its message; the few exceptions that input can cause below the code that
names it (a folder where a file belongs, a full disk, nesting too deep for an interpreter
stack) are printed as one line too; anything else is a bug, said so in one line, with the
traceback behind ``DISTILLERY_DEBUG=1``.
"""

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


def one_line(text: str) -> str:
    """``text`` with its line breaks made visible (``\\n``), so a message stays one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n") if "\n" in text or "\r" in text else text


def user_message(e: BaseException) -> tuple[str, bool]:
    """The message the command line prints for ``e``, and whether ``e`` is a bug.

    A :class:`DistilleryError` prints as itself (each of its lines names a file or key); an
    ``OSError`` as ``<file>: <reason>``; a ``RecursionError`` or ``MemoryError`` as what the
    input did; anything else as ``internal error: <type>: <message>`` (a bug: the input
    should have been refused with a clear error before it got there).
    """
    if isinstance(e, DistilleryError):
        return "\n".join(one_line(line) for line in str(e).split("\n") if line.strip()) or type(e).__name__, False
    if isinstance(e, OSError):
        if e.filename is None or e.strerror is None:
            return one_line(str(e)[:500] or type(e).__name__), False
        return one_line(f"{str(e.filename)[:300]}: {e.strerror}"), False
    if isinstance(e, RecursionError):
        return "the input is nested too deeply to process (a recipe or seed value nested thousands of levels)", False
    if isinstance(e, MemoryError):
        return "out of memory (an input too large for this machine: reduce output.batch_size or split the seeds)", False
    text = str(e).splitlines()[0][:300] if str(e) else ""
    return one_line(f"internal error: {type(e).__name__}: {text} (a bug in distillery: please report it; "
                    "set DISTILLERY_DEBUG=1 for the traceback)"), True
