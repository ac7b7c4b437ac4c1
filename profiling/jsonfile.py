"""Read a user's JSON file: a missing, binary, huge, deeply nested or bad JSON file is one
InputError line naming it. Also the size and shape checks the YAML and CSV readers share."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import InputError

# Deeper than any configuration or measurement file; parsers and validators recurse per level.
MAX_DEPTH = 100
# Values a YAML document may hold once its aliases are expanded (a billion-laughs file is tiny on disk).
MAX_EXPANDED = 1_000_000


def physical_memory() -> int | None:
    """Bytes of RAM this process may use: the machine's, or a smaller cgroup limit; None if unknown."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total if total > 0 else None


def data_file_limit() -> int:
    """Largest JSON/CSV file read whole: parsed, it takes several times its size in memory."""
    mem = physical_memory()
    return mem // 8 if mem else 4 * 2**30


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def check_user_file(path: str | Path, what: str, limit: int) -> int:
    """Size of a user's file, refused in one line if it is missing, not a regular file or
    larger than ``limit`` bytes."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found", file=p)
    if not p.is_file():
        raise InputError(f"{what} is not a regular file", file=p)
    size = p.stat().st_size
    if size > limit:
        raise InputError(f"{what} is {human_bytes(size)}, larger than the {human_bytes(limit)} this reader "
                         "accepts", file=p)
    return size


def read_user_bytes(path: str | Path, what: str, limit: int) -> bytes:
    """The bytes of a user's file, after ``check_user_file``."""
    p = Path(path)
    check_user_file(p, what, limit)
    try:
        return p.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {what} ({e.strerror or e})", file=p) from None


def check_tree(doc: Any, source: str | Path | None, expanded_limit: int | None = None) -> None:
    """Refuse a parsed document nested deeper than MAX_DEPTH, one that contains itself (a YAML
    anchor inside its own alias) or, with ``expanded_limit``, one whose shared parts (YAML
    aliases) expand to more values than that. Iterative: the check itself never recurses."""
    if not isinstance(doc, (dict, list)):
        return
    done: dict[int, tuple[int, int]] = {}          # id -> (levels below, values once expanded)
    path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(doc, False)]
    while stack:
        node, finish = stack.pop()
        key = id(node)
        kids = list(node.values()) if isinstance(node, dict) else node
        if finish:
            path.discard(key)
            inner = [done[id(c)] for c in kids if isinstance(c, (dict, list))]
            size = 1 + len(kids) + sum(s for _, s in inner)
            done[key] = (1 + max((h for h, _ in inner), default=0), size)
            if expanded_limit is not None and size > expanded_limit:
                raise InputError(f"holds more than {expanded_limit:,} values once its aliases are expanded",
                                 file=source)
            continue
        if key in done:
            if len(path) + done[key][0] > MAX_DEPTH:
                raise InputError(f"nested more than {MAX_DEPTH} levels deep", file=source)
            continue
        if key in path:
            raise InputError("a value contains itself (an alias inside its own anchor)", file=source)
        path.add(key)
        if len(path) > MAX_DEPTH:
            raise InputError(f"nested more than {MAX_DEPTH} levels deep", file=source)
        stack.append((node, True))
        stack.extend((c, False) for c in kids if isinstance(c, (dict, list)))


def read_json(path: str | Path, what: str = "file", kind: str = "JSON") -> Any:
    """Parsed content of ``path``; ``what`` names the file's role when it is missing and
    ``kind`` what it should have been when it does not parse."""
    p = Path(path)
    data = read_user_bytes(p, what, data_file_limit())
    try:
        doc = json.loads(data)     # bytes: UTF-8, -16 or -32 detected as RFC 8259 allows
    except json.JSONDecodeError as e:
        raise InputError(f"not valid {kind} ({e.msg} at line {e.lineno})", file=p) from None
    except UnicodeDecodeError:
        raise InputError(f"not valid {kind} (not UTF-8 text)", file=p) from None
    except RecursionError:
        raise InputError(f"not valid {kind} (nested more than {MAX_DEPTH} levels deep)", file=p) from None
    check_tree(doc, p)
    return doc
