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
