"""Derived constraints as small, safe expressions over the candidate scenario.

``"deployments.0.tp * deployments.0.pp <= devices_per_node(deployments.0.hardware)"``
Dotted paths read the candidate scenario; the helper functions read the catalogs.
Only arithmetic, comparisons, boolean logic and the helpers below are allowed (parsed
with ``ast``, never ``eval``), so a space file cannot run code.
"""
from __future__ import annotations

import ast
import operator
import os
import re
from functools import lru_cache
from dataclasses import dataclass
from typing import Any, Callable

from profiling.hardware import load_catalog
from profiling.models import resolve_model

from .paths import MISSING, get_path

_PATH = re.compile(r"\b[A-Za-z_]\w*(?:\.\w+)+")


def catalog():
    """The hardware catalog, parsed once per process (and per $HERMES_CATALOG value)."""
    return _catalog(os.environ.get("HERMES_CATALOG", ""))


@lru_cache(maxsize=4)
def _catalog(_env: str):
    return load_catalog()


def _hw(name: str):
    return catalog().get(str(name))


HELPERS: dict[str, Callable[[Any], Any]] = {
    "heads": lambda m: resolve_model(str(m)).num_heads,
    "kv_heads": lambda m: resolve_model(str(m)).num_kv_heads,
    "layers": lambda m: resolve_model(str(m)).num_layers,
    "devices_per_node": lambda h: _hw(h).devices_per_node,
    "mem_gb": lambda h: _hw(h).mem_capacity_gb,
    "price_per_hour": lambda h: _hw(h).price_per_hour,
    "kind": lambda h: _hw(h).kind,
}
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
        ast.Pow: operator.pow}
_CMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne,
        ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}


@dataclass(frozen=True)
class Requirement:
    """A compiled expression; ``holds(scenario)`` is True when the candidate satisfies it."""

    text: str
    tree: ast.Expression
    paths: tuple[str, ...]

    def holds(self, scenario: dict) -> bool:
        env = {f"_p{i}": get_path(scenario, p) for i, p in enumerate(self.paths)}
        for i, p in enumerate(self.paths):
            if env[f"_p{i}"] is MISSING:
                raise ValueError(f"require '{self.text}': '{p}' is not set in the scenario")
        return bool(_eval(self.tree.body, env))


def compile_requirement(text: str) -> Requirement:
    """Parse one ``require:`` entry; ValueError names the bad part."""
    paths: list[str] = []

    def sub(m: re.Match) -> str:
        paths.append(m.group(0))
        return f"_p{len(paths) - 1}"

    try:
        tree = ast.parse(_PATH.sub(sub, text), mode="eval")
        _check(tree.body)
    except (SyntaxError, ValueError) as e:
        raise ValueError(f"require '{text}': {getattr(e, 'msg', e)}") from None
    return Requirement(text, tree, tuple(paths))


def _check(node: ast.AST) -> None:
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in HELPERS or node.keywords:
            raise ValueError(f"only these functions are allowed: {', '.join(HELPERS)}")
        for a in node.args:
            _check(a)
        return
    allowed = (ast.BinOp, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.Name, ast.Constant,
               ast.Tuple, ast.List)
    if not isinstance(node, allowed):
        raise ValueError(f"'{type(node).__name__}' is not allowed")
    if isinstance(node, ast.Name) and not node.id.startswith("_p"):
        raise ValueError(f"unknown name '{node.id}' (use a dotted scenario path)")
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.operator, ast.cmpop, ast.boolop, ast.unaryop, ast.expr_context)):
            _check(child)


def _eval(node: ast.AST, env: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_eval(e, env) for e in node.elts)
    if isinstance(node, ast.Call):
        return HELPERS[node.func.id](*[_eval(a, env) for a in node.args])
    if isinstance(node, ast.BinOp):
        return _BIN[type(node.op)](_eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, env)
        return (not v) if isinstance(node.op, ast.Not) else (-v if isinstance(node.op, ast.USub) else v)
    if isinstance(node, ast.BoolOp):
        vals = (_eval(v, env) for v in node.values)
        return all(vals) if isinstance(node.op, ast.And) else any(vals)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, env)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    raise ValueError(f"'{type(node).__name__}' is not allowed")
