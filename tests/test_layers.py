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
