"""Architecture: imports run one way, search -> simulator -> surrogates -> profiling."""
import shutil
import subprocess
import sys

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_layers_are_one_way():
    """import-linter's layers contract (pyproject.toml) holds for the whole code base."""
    exe = shutil.which("lint-imports") or str(REPO / ".venv" / "bin" / "lint-imports")
    res = subprocess.run([exe, "--config", str(REPO / "pyproject.toml")], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_cli_help_lists_design_verbs():
    """`hermes-sim --help` lists every verb of the design's command line."""
    res = subprocess.run([sys.executable, "-m", "hermes_sim.cli", "--help"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for verb in ("profile", "surrogate", "calibrate", "simulate", "search", "validate", "ui"):
        assert verb in res.stdout, verb


def _import_cycles(graph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), lazy imports included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.find_modules_directly_imported_by(v)):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return cycles


def test_no_import_circles():
    """No two modules of the project import each other, directly or round a longer circle
    (function-level imports count: a lazy import is still a circle)."""
    import grimp
    graph = grimp.build_graph("profiling", "surrogates", "simulator", "search", "hermes_sim")
    assert _import_cycles(graph) == []


def test_cycle_finder_finds_a_circle(tmp_path, monkeypatch):
    """The circle finder reports a real two-module circle (so the test above can fail)."""
    import grimp
    pkg = tmp_path / "circlepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _import_cycles(grimp.build_graph("circlepkg")) == [["circlepkg.a", "circlepkg.b"]]


def test_architecture_map_names_real_places():
    """Every folder (`x/`) and path (`x/y.py`) ARCHITECTURE.md names exists, and each room
    of the simulator it describes is a package with a docstring map."""
    import re
    text = (REPO / "ARCHITECTURE.md").read_text()
    named = set(re.findall(r"`([A-Za-z_./]+/[A-Za-z_./*]*)`", text))
    assert named, "no paths found"
    for path in named:
        if "*" in path:
            continue
        assert (REPO / path).exists(), f"ARCHITECTURE.md names {path}, which does not exist"
    import importlib
    for room in ("engine", "pipelines", "fidelity"):
        mod = importlib.import_module(f"simulator.{room}")
        assert mod.__doc__ and "Map" in mod.__doc__, room
