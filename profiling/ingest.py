"""Read real traces of any supported format into one validated canonical table.

``read_traces(path, fmt)`` walks ``path`` (a file or a directory tree), lets the format's
reader parse every file it knows, validates the rows (``schema.validate_traces``), adds
roofline features (``roofline.add_roofline_features``) and quarantines rows the roofline
proves wrong: a latency more than ``ABSURD_SPEEDUP`` x below the hardware's physical bound
(which already allows for warm L2) is a unit, hardware or measurement mistake, not a fast
kernel. In the shared traces this catches the A30 Vidur fork's impossible GEMM times
(up to 360x faster than the A30 can compute), Splitwise's Llama-2-70B TP2 batch-64
prompt rows (~10x) and AIConfigurator's A100 TRT-LLM decode rows that read more KV per
second than the HBM delivers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .errors import HermesError, InputError
from .hardware import HardwareCatalog, load_catalog
from .operators import COLLECTIVE
from .readers import READERS
from .readers.base import DATA_SUFFIXES, ReadOptions, refuse_lfs_pointer
from .roofline import add_roofline_features, roofline_problems
from .schema import QUARANTINE_COLUMNS, conform, empty_quarantine, quarantine_rows, validate_traces

# Measured more than this many times faster than the roofline allows: not physics.
# (Timing noise stays well inside it: no L2-aware GEMM row of AIConfigurator exceeds 1.05x.)
ABSURD_SPEEDUP = 1.25


@dataclass(frozen=True)
class IngestResult:
    """Canonical validated rows with roofline features, the rejected rows, files read."""

    table: pd.DataFrame
    quarantine: pd.DataFrame
    files: int
    skipped: tuple[Path, ...] = ()  # data files under the path that the format does not read

    def skipped_note(self, shown: int = 3) -> str:
        """One line naming the data files the format left unread ('' when none)."""
        if not self.skipped:
            return ""
        names = ", ".join(p.name for p in self.skipped[:shown])
        more = f" and {len(self.skipped) - shown} more" if len(self.skipped) > shown else ""
        return f"{len(self.skipped)} data file(s) not of this format, not read: {names}{more}"

    def summary(self) -> pd.DataFrame:
        """Rows per (op, hardware) with the median roofline efficiency."""
        t = self.table
        if t.empty:
            return pd.DataFrame(columns=["op", "hardware", "rows", "median_efficiency"])
        eff = (t["t_roofline_ms"] / t["latency_ms"]).rename("eff")
        g = t.assign(eff=eff).groupby(["op", "hardware"], sort=True)
        return pd.DataFrame({"rows": g.size(), "median_efficiency": g["eff"].median()}).reset_index()


def walk_files(path: Path) -> list[Path]:
    """Every file under the folder ``path``, descending into symlinked folders (a system
    folder linked into a ``data/`` tree is read like a copied one; ``rglob`` skips it).
    A link back to a folder it sits in is not followed, so the walk ends. Paths keep the
    link's name."""
    out: list[Path] = []

    def walk(d: Path, ancestors: frozenset) -> None:
        st = os.stat(d)
        here = ancestors | {(st.st_dev, st.st_ino)}
        if len(here) == len(ancestors):
            return                                   # a link to a folder above it
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            raise InputError(f"cannot list this folder ({e.strerror or e})", file=d) from None
        for entry in entries:
            if entry.is_dir():                       # follows links
                walk(Path(entry.path), here)
            elif entry.is_file():
                out.append(Path(entry.path))

    walk(path, frozenset())
    return out


def trace_files(path: Path, fmt: str) -> list[Path]:
    """The files of ``path`` the format reads: ``path`` itself, or its matching descendants."""
    reader = READERS[fmt]
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError("no such file or directory", file=path)
    files = sorted(p for p in walk_files(path) if p.is_file() and reader.matches(p))
    if not files:
        raise InputError(f"no {fmt} trace files found in this directory ({reader.description})", file=path)
    return files


def refuse_output_over_input(path: Path, outputs: dict[str, Path]) -> None:
    """Raise ``InputError`` when an output (``{option: path}``) is the input ``path`` (also
    through a link), another output, or lies inside the input folder being read: writing it
    would destroy the raw traces or be read back as one on the next run."""
    src = Path(path).resolve()
    seen: dict[Path, str] = {}
    for option, out in outputs.items():
        dest = Path(out).resolve()
        if dest == src or (dest.exists() and src.exists() and os.path.samefile(dest, src)):
            raise InputError(f"{option} names the input being read; it would overwrite it", file=out)
        if src.is_dir() and src in dest.parents:
            raise InputError(f"{option} lies inside the input folder {path} being read; "
                             "write it elsewhere", file=out)
        if dest in seen:
            raise InputError(f"{option} and {seen[dest]} name the same file", file=out)
        seen[dest] = option


def skipped_files(path: Path, fmt: str) -> tuple[Path, ...]:
    """Data files (``DATA_SUFFIXES``) under a directory that ``fmt`` does not read: told to
    the user, so that a table of a kind no reader knows is never dropped unseen."""
    if not path.is_dir():
        return ()
    reader = READERS[fmt]
    return tuple(sorted(p for p in walk_files(path) if p.is_file() and not reader.matches(p)
                        and p.suffix.lower() in DATA_SUFFIXES))


def _absurd(table: pd.DataFrame) -> pd.Series:
    """Rows whose latency beats the roofline by more than ABSURD_SPEEDUP (collectives excepted:
    their wire model is a ring estimate, not a physical bound)."""
    ratio = table["t_roofline_ms"] / table["latency_ms"]
    return (table["op"] != COLLECTIVE) & (ratio > ABSURD_SPEEDUP)


def read_traces(path: str | Path, fmt: str, hardware: str | None = None, column_map: dict | None = None,
                *, catalog: HardwareCatalog | None = None, defaults: dict | None = None,
                progress: Callable[[int, int, Path], None] | None = None) -> IngestResult:
    """Read, validate and featurize every ``fmt`` trace under ``path``.

    ``hardware`` overrides the device the path names; ``column_map`` maps canonical fields
    to source columns (plain CSV); ``defaults`` gives constant fields (e.g. ``op``).
    Raises ``InputError`` for a file of the wrong format and when no usable row is left.
    """
    if fmt not in READERS:
        raise HermesError(f"unknown trace format '{fmt}' (known: {', '.join(READERS)})")
    path = Path(path)
    reader = READERS[fmt]
    files = trace_files(path, fmt)
    opts = ReadOptions(hardware=hardware, column_map=column_map, defaults=dict(defaults or {}))
    tables, quarantines = [], []
    for i, f in enumerate(files):
        if progress:
            progress(i, len(files), f)
        refuse_lfs_pointer(f)
        out = reader.read(f, opts)
        tables.append(out.table)
        quarantines.append(out.quarantine)
    if progress:
        progress(len(files), len(files), files[-1])
    raw = conform(pd.concat([t for t in tables if len(t)], ignore_index=True)) if any(len(t) for t in tables) \
        else conform(pd.DataFrame())
    tables.clear()  # ~1M-row tables: keep one copy alive at a time
    clean, rejected = validate_traces(raw)
    del raw
    quarantines.append(rejected)
    catalog = catalog or load_catalog()
    table = add_roofline_features(clean, catalog)
    del clean
    sheets = dict(filter(None, map(reader.spec_sheet, files))) if reader.spec_sheet and not hardware else {}
    why = roofline_problems(table, catalog, sheets)
    absurd = (_absurd(table) & (why == "")).to_numpy()
    why[absurd] = (f"latency more than {ABSURD_SPEEDUP:g}x below the roofline bound: "
                   "wrong unit or wrong hardware?")
    bad = (why != "").to_numpy()
    if bad.any():
        col = np.where(absurd, "latency_ms", np.where(table["hardware"].map(lambda h: h in catalog), "model",
                                                       "hardware"))
        quarantines.append(quarantine_rows(table[bad], pd.Series(col[bad]), why[bad].reset_index(drop=True)))
        table = table[~bad].reset_index(drop=True)
    quarantine = pd.concat([q for q in quarantines if len(q)], ignore_index=True) \
        if any(len(q) for q in quarantines) else empty_quarantine()
    quarantine = quarantine[list(QUARANTINE_COLUMNS)]
    if table.empty:
        first = "; ".join(quarantine["reason"].astype(str).drop_duplicates().head(3)) or "no rows"
        raise InputError(f"no usable {fmt} rows ({len(quarantine)} quarantined: {first})", file=path)
    return IngestResult(table, quarantine, len(files), skipped_files(path, fmt))
