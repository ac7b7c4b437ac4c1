"""User-facing errors: the CLI prints ``str(err)`` as one line and exits with status 2."""
from __future__ import annotations

from pathlib import Path


class HermesError(Exception):
    """A mistake in user input (file, field, value). Never a bug in HERMES."""


class InputError(HermesError):
    """Bad input located in a file: names the file, the row and the column when known."""

    def __init__(self, message: str, *, file: str | Path | None = None,
                 row: int | None = None, column: str | None = None) -> None:
        self.message, self.file, self.row, self.column = message, file, row, column
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


def interrupt_behind(e: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or SIGTERM raised as one) that ``e`` is, or that a library's cleanup was
    handling when it raised ``e`` instead (Optuna's trial bookkeeping can fail that way when
    the signal lands inside it): the interrupt is what happened, and it decides the exit."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None
