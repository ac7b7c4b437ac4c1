"""What every trace reader shares: the reader record, read options, and file helpers.

A reader turns one file into canonical rows (``schema.COLUMNS``, not yet validated) plus
the rows it already knows are bad (quarantine records). A file that is not of the
reader's format raises ``InputError`` naming the file and what is missing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from ..csvfile import read_csv as read_user_csv
from ..errors import InputError
from ..schema import empty_quarantine


@dataclass(frozen=True)
class ReadOptions:
    """User overrides: ``hardware`` replaces what the path says; ``column_map`` (plain CSV)
    maps canonical fields to source columns with units; ``defaults`` fills constant fields."""

    hardware: str | None = None
    column_map: dict | None = None
    defaults: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ReadOutput:
    table: pd.DataFrame
    quarantine: pd.DataFrame

    @classmethod
    def of(cls, table: pd.DataFrame, quarantine: pd.DataFrame | None = None) -> "ReadOutput":
        return cls(table, empty_quarantine() if quarantine is None else quarantine)


@dataclass(frozen=True)
class FormatReader:
    """One trace format: which files of a directory tree it reads, and how."""

    name: str
    description: str
    matches: Callable[[Path], bool]
    read: Callable[[Path, ReadOptions], ReadOutput]
    # (hardware name, spec-sheet file) a file of the format comes with, if any: named to
    # the user when that hardware is not in the catalog.
    spec_sheet: Callable[[Path], tuple[str, Path] | None] | None = None


# First bytes of a Git LFS pointer: what a clone without ``git lfs`` holds in place of a
# data file (AIConfigurator's upstream tables are stored this way).
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
# Suffixes of files that hold measurements: a directory's such files that a format does not
# read are reported, never skipped in silence.
DATA_SUFFIXES = (".parquet", ".csv", ".txt", ".json", ".jsonl", ".gz")


def refuse_lfs_pointer(path: Path) -> None:
    """Raise one clear line if ``path`` is a Git LFS pointer instead of the data it names."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(LFS_POINTER))
    except OSError as e:
        raise InputError(f"cannot read ({e.strerror or e})", file=path) from None
    if head == LFS_POINTER:
        raise InputError("a Git LFS pointer, not the measured data: fetch it with `git lfs pull` "
                         "in the repository it came from", file=path)


def source_label(fmt: str, path: Path) -> str:
    return f"{fmt}:{path}"


def read_csv(path: Path, fmt: str, **kw) -> pd.DataFrame:
    """Read a CSV or raise one clear line (not a parser traceback): the one CSV reader."""
    return read_user_csv(path, f"{fmt} CSV", **kw)


def require_columns(df: pd.DataFrame, columns: Iterable[str], path: Path, what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"not a {what}: missing column(s) {', '.join(missing)}", file=path)


def to_bool(s: pd.Series) -> pd.Series:
    """'True'/'False'/1/0 as booleans (CSV round trips booleans as text)."""
    if s.dtype == bool:
        return s
    return s.astype(str).str.strip().str.lower().isin(("true", "1", "yes"))
