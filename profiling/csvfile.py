"""Read a user's CSV (or Parquet) table: a missing, empty, binary, huge or unparsable file is
one InputError line naming it (never a pandas traceback)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import InputError
from .jsonfile import check_user_file, data_file_limit

_SNIFF = 64 * 1024


def read_csv(path: str | Path, what: str = "CSV file", **kw) -> pd.DataFrame:
    """``pd.read_csv(path, **kw)`` with the file checked first; ``what`` names its role.
    A header-only file gives an empty frame: whether that is enough is the caller's call."""
    p = Path(path)
    if check_user_file(p, what, data_file_limit()) == 0:
        raise InputError(f"empty file, not a {what}", file=p)
    with open(p, "rb") as f:
        head = f.read(_SNIFF)
    if b"\x00" in head:
        raise InputError(f"not a readable {what} (it holds NUL bytes: binary, or UTF-16)", file=p)
    try:
        return pd.read_csv(p, **kw)
    except pd.errors.EmptyDataError:
        raise InputError(f"empty file, not a {what} (blank lines only)", file=p) from None
    except UnicodeDecodeError as e:
        raise InputError(f"not a readable {what} (byte 0x{e.object[e.start]:02x} at offset {e.start} is not "
                         "UTF-8)", file=p) from None
    except (pd.errors.ParserError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"not a readable {what} ({first})", file=p) from None


def read_table(path: str | Path, what: str) -> pd.DataFrame:
    """A ``.csv`` (``read_csv``) or any other suffix as Parquet, checked the same way; ``what``
    names its role (``--plan``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what}: no such file", file=p)
    if p.suffix.lower() == ".csv":
        return read_csv(p, f"{what} table")
    check_user_file(p, what, data_file_limit())
    try:
        return pd.read_parquet(p)
    except Exception as e:  # noqa: BLE001 - any reader error of a foreign file: one line
        raise InputError(f"{what}: not a readable .csv or .parquet table ({type(e).__name__})", file=p) from None
