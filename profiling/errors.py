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


# The interrupt a signal handler raised in this process (``record_interrupt``), if any.
_RAISED: list[KeyboardInterrupt] = []


def record_interrupt(e: KeyboardInterrupt) -> KeyboardInterrupt:
    """Note that ``e`` (a Ctrl-C or a SIGTERM raised as one) was raised in this process, and
    return it: a library's cleanup may lose it from the exception chain (below)."""
    _RAISED.append(e)
    return e


def clear_interrupts() -> None:
    """Forget recorded interrupts (a new command in the same process starts clean)."""
    _RAISED.clear()


def interrupt_pending() -> bool:
    """Whether a signal handler has already raised an interrupt in this process."""
    return bool(_RAISED)


def interrupt_behind(e: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or SIGTERM raised as one) that ``e`` is, or that a library's cleanup was
    handling when it raised ``e`` instead (Optuna's trial bookkeeping can fail that way when
    the signal lands inside it): the interrupt is what happened, and it decides the exit.
    Both links of the chain are followed, and where the library stored the interrupt away
    and raised something else from its own cleanup (Optuna keeps a trial's exception aside
    while it records the trial, and a storage error there replaces it), the interrupt a
    signal handler recorded is the answer."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        x = stack.pop()
        if x is None or id(x) in seen:
            continue
        if isinstance(x, KeyboardInterrupt):
            return x
        seen.add(id(x))
        stack += [x.__context__, x.__cause__]
    return _RAISED[-1] if _RAISED else None
