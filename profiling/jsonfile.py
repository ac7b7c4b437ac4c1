"""Read a user's JSON file: a missing file or bad JSON is one InputError line naming it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InputError


def read_json(path: str | Path, what: str = "file", kind: str = "JSON") -> Any:
    """Parsed content of ``path``; ``what`` names the file's role when it is missing and
    ``kind`` what it should have been when it does not parse."""
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{what} not found", file=p) from None
    except json.JSONDecodeError as e:
        raise InputError(f"not valid {kind} ({e.msg} at line {e.lineno})", file=p) from None
    except UnicodeDecodeError:
        raise InputError(f"not valid {kind} (not UTF-8 text)", file=p) from None
