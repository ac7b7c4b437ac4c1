"""Read a user's YAML file: a missing, binary, huge, deeply nested or bad YAML file, or one
that gives a key twice, is one InputError line naming it."""
from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError
from .jsonfile import MAX_DEPTH, MAX_EXPANDED, check_tree, read_user_bytes

# Scenarios, spaces, catalogs and column maps are a few KB; PyYAML parses some 100 KB/s.
MAX_YAML_BYTES = 4 * 2**20

_MERGE = "tag:yaml.org,2002:merge"


class Refused(yaml.YAMLError):
    """A document PyYAML would accept but a user cannot have meant (its message is the line)."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last) and
    nesting deeper than MAX_DEPTH (its composer recurses once per level)."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH + 1:
                line = self.peek_event().start_mark.line + 1
                raise Refused(f"nested more than {MAX_DEPTH} levels deep (line {line})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE:    # '<<: *base' keys may be overridden: that is their point
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    line = first.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:             # unhashable: SafeConstructor names it below
                    continue
                if line != key_node.start_mark.line + 1:
                    raise Refused(f"duplicate key '{key}' at line {key_node.start_mark.line + 1} "
                                  f"(first at line {line})")
        return super().construct_mapping(node, deep)


def _text(data: bytes, p: Path) -> str:
    """Decode as YAML allows: UTF-8, or UTF-16 with a byte-order mark (Windows editors)."""
    for bom, enc in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                     (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(enc)
            except UnicodeDecodeError:
                raise InputError(f"not valid YAML (starts like {enc.upper()} text but is not)", file=p) from None
    if b"\x00" in data:
        raise InputError("not a YAML text file (it holds NUL bytes: binary, or UTF-16 without a byte-order "
                         "mark)", file=p)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not a YAML text file (byte 0x{data[e.start]:02x} at offset {e.start} is not "
                         "UTF-8)", file=p) from None


def parse_yaml(text: str, source: str | Path) -> Any:
    """Parse YAML text with the checks of ``read_yaml``; errors name ``source``."""
    try:
        doc = yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except Refused as e:
        raise InputError(str(e), file=source) from None
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML ({_first_line(e)})", file=source) from None
    except RecursionError:
        raise InputError(f"not valid YAML (nested more than {MAX_DEPTH} levels deep)", file=source) from None
    check_tree(doc, source, MAX_EXPANDED)
    return doc


def _first_line(e: yaml.YAMLError) -> str:
    msg = (getattr(e, "problem", None) or str(e).splitlines()[0]).strip()
    mark = getattr(e, "problem_mark", None)
    return f"{msg} at line {mark.line + 1}" if mark is not None else msg


def read_yaml(path: str | Path, what: str = "file") -> Any:
    """Parsed content of ``path``; ``what`` names the file's role in the error message."""
    p = Path(path)
    return parse_yaml(_text(read_user_bytes(p, what, MAX_YAML_BYTES), p), p)
