"""Read a user's YAML file: a missing file or bad YAML is one InputError line naming it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import InputError


def read_yaml(path: str | Path, what: str = "file") -> Any:
    """Parsed content of ``path``; ``what`` names the file's role in the error message."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} not found", file=p)
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML ({str(e).splitlines()[0]})", file=p) from None
