"""Nothing a user has is lost or written where it should not be (issue 23, first part).

Atomic writes (profiling.atomicfile) for every kept file, outputs that would overwrite an
input refused, study names that stay inside search-results/, stale best outputs removed,
and the real CLI interrupted (SIGINT, SIGKILL) while training, ingesting and searching.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hermes_sim.cli import main
from profiling.atomicfile import atomic_open, atomic_path, savefig_atomic, write_bytes_atomic, write_text_atomic

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("profiling", "surrogates", "simulator", "search", "hermes_sim")
PHI2_CSV = "vidur/data/profiling/compute/a100/microsoft/phi-2/mlp.csv"  # 262 real rows
INGEST = ["--format", "vidur", "--hardware", "A100-80GB"]
# big enough that the xz save of the model takes ~1 s: a kill can land inside it
TRAIN = ["--max-rows", "3000", "--param", "max_depth=8", "--no-mlflow", "--json"]
SEED = 23


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _one_line_error(capsys, args: list[str]) -> str:
    """Run the CLI in-process; assert exit 2 and one stderr line; return it."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("hermes-sim: error:"), err
    return err


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


# ---- the helper -------------------------------------------------------------
def test_interrupted_write_keeps_the_old_file(tmp_path):
    """A Ctrl-C (KeyboardInterrupt) or an error inside atomic_path leaves the old content
    and no temporary file; a finished block replaces the content whole."""
    dest = tmp_path / "summary.json"
    dest.write_text("old")
    for exc in (KeyboardInterrupt, OSError):
        with pytest.raises(exc):
            with atomic_path(dest) as tmp:
                tmp.write_text("half of the new")
                assert tmp.parent == dest.parent and dest.read_text() == "old"
                raise exc()
        assert dest.read_text() == "old" and _temps(tmp_path) == []
    write_text_atomic(dest, "new")
    assert dest.read_text() == "new" and _temps(tmp_path) == []
    write_bytes_atomic(dest, b"\x00\x01")
    assert dest.read_bytes() == b"\x00\x01"
    with atomic_open(dest, "w") as f:
        json.dump({"a": 1}, f)
    assert json.loads(dest.read_text()) == {"a": 1}
    with pytest.raises(ValueError, match="'a'"):
        with atomic_open(dest, "a"):
            pass


def test_atomic_write_keeps_mode_and_links(tmp_path):
    """A replaced file keeps its permission bits, a new one gets what open() would give
    (0666 minus the umask, not mkstemp's 0600), and a symlink still points to the file."""
    kept = tmp_path / "kept.yaml"
    kept.write_text("a: 1\n")
    kept.chmod(0o640)
    write_text_atomic(kept, "a: 2\n")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text() == "a: 2\n"
    mask = os.umask(0o022)
    try:
        fresh = write_text_atomic(tmp_path / "fresh.txt", "x")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
    finally:
        os.umask(mask)
    link = tmp_path / "link.yaml"
    link.symlink_to(kept)
    write_text_atomic(link, "a: 3\n")
    assert link.is_symlink() and kept.read_text() == "a: 3\n"


def test_savefig_atomic_keeps_the_format_of_the_suffix(tmp_path):
    """A plot saved through a temporary name is still a PNG for .png and a PDF for .pdf."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    savefig_atomic(fig, tmp_path / "p.png", dpi=50)
    savefig_atomic(fig, tmp_path / "p.pdf")
    plt.close(fig)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "p.pdf").read_bytes()[:5] == b"%PDF-"
    assert _temps(tmp_path) == []


def _atomic_names(tree: ast.AST) -> set[str]:
    """Names bound by ``with atomic_path(...) as NAME`` / ``with atomic_open(...) as NAME``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                if isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", "")) in (
                        "atomic_path", "atomic_open") and isinstance(item.optional_vars, ast.Name):
                    names.add(item.optional_vars.id)
    return names


def _direct_writes(path: Path) -> list[str]:
    """Calls in ``path`` that write a file in place instead of through profiling.atomicfile."""
    tree = ast.parse(path.read_text(), str(path))
    ok = _atomic_names(tree)
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", getattr(node.func, "id", ""))
        where = f"{path.relative_to(REPO)}:{node.lineno} {name}"
        if name in ("write_text", "write_bytes") and isinstance(node.func, ast.Attribute):
            target = node.func.value
        elif name in ("to_parquet", "to_csv", "to_json", "savefig") and node.args:
            target = node.args[0]
        elif name == "dump" and len(node.args) >= 2:  # json/joblib/pickle/yaml.dump(obj, file)
            target = node.args[1]
        elif name == "open":
            mode = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "mode"), None)
            if isinstance(node.func, ast.Attribute):  # Path.open(mode)
                mode = node.args[0] if node.args else mode
            if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set("wax+"):
                bad.append(where)
            continue
        else:
            continue
        if not (isinstance(target, ast.Name) and target.id in ok):
            bad.append(where)
    return bad


def test_every_kept_file_is_written_atomically():
    """No module of the project writes a file in place (write_text, to_parquet, to_csv,
    savefig, joblib/json dump, open for writing): each goes through profiling.atomicfile."""
    files = [p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))
             if p != REPO / "profiling" / "atomicfile.py"]
    assert len(files) > 50
    bad = [w for p in files for w in _direct_writes(p)]
    assert bad == [], "written in place (use profiling.atomicfile): " + ", ".join(bad)


# ---- surrogates ---------------------------------------------------------------
@pytest.fixture(scope="module")
def phi2(traces_dir, tmp_path_factory) -> dict:
    """A copy of a small real Vidur CSV, its canonical table (ingested by the CLI), a
    surrogate trained on it (the model the user already has) and the training seconds."""
    d = tmp_path_factory.mktemp("phi2")
    (d / "in").mkdir()
    shutil.copy(traces_dir / PHI2_CSV, d / "in" / "mlp.csv")
    table = d / "out" / "t.parquet"
    table.parent.mkdir()
    assert main(["profile", "ingest", str(d / "in" / "mlp.csv"), *INGEST, "-o", str(table), "--json"]) == 0
    t0 = time.monotonic()
    assert main(["surrogate", "train", str(table), "-o", str(d / "model"), *TRAIN,
                 "--param", "n_estimators=300"]) == 0
    return {"csv": d / "in" / "mlp.csv", "table": table, "model": d / "model",
            "train_s": time.monotonic() - t0}


@pytest.mark.parametrize("cut", ["empty", "32 bytes", "half", "garbage", "a pickled int"])
def test_a_truncated_or_foreign_surrogate_is_one_line(phi2, tmp_path, capsys, cut):
    """Loading a surrogate.joblib that is truncated (as an interrupted save used to leave
    it), garbage or another pickle exits 2 with one line naming the file, never 'aborted'."""
    import pickle
    good = (phi2["model"] / "surrogate.joblib").read_bytes()
    data = {"empty": b"", "32 bytes": good[:32], "half": good[:len(good) // 2],
            "garbage": b"garbage here\n" * 10, "a pickled int": pickle.dumps(5)}[cut]
    (tmp_path / "m").mkdir()
    bad = tmp_path / "m" / "surrogate.joblib"
    bad.write_bytes(data)
    err = _one_line_error(capsys, ["surrogate", "eval", tmp_path / "m", phi2["table"], "--json"])
    assert str(bad) in err and "not a HERMES surrogate" in err and "aborted" not in err


@dataclass(frozen=True)
class Interrupted:
    """How one interrupted CLI run went: whether the signal reached it while running."""

    hit: bool
    returncode: int
    stderr: str


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for e in os.scandir(folder) if folder.is_dir() else ():
        try:
            s = e.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        out[e.name] = (s.st_ino, s.st_size, s.st_mtime_ns)
    return out


def _interrupt(args: list, sig: int, *, cwd: Path, delay: float | None = None, watch: Path | None = None,
               env: dict | None = None, timeout: float = 120) -> Interrupted:
    """Run `hermes-sim ARGS` and send ``sig`` after ``delay`` seconds, or as soon as
    anything in the folder ``watch`` changes (a save begins); wait for the process to end."""
    p = subprocess.Popen([sys.executable, "-m", "hermes_sim.cli", *map(str, args)], cwd=cwd,
                         env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    try:
        if watch is not None:
            before, end = _snapshot(watch), time.monotonic() + timeout
            while p.poll() is None and _snapshot(watch) == before and time.monotonic() < end:
                time.sleep(0.002)
        else:
            try:
                p.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
        hit = p.poll() is None
        if hit:
            p.send_signal(sig)
        _, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return Interrupted(hit, p.returncode, err)


def _timed(args: list, cwd: Path, env: dict | None = None) -> float:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "hermes_sim.cli", *map(str, args)], cwd=cwd,
                       env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return time.monotonic() - t0


def _points(duration: float, n: int = 1, at_write: tuple[int, ...] = (signal.SIGINT, signal.SIGKILL)
            ) -> list[tuple[int, float | None]]:
    """(signal, delay) pairs: SIGINT and SIGKILL each at ``n`` seeded random moments of a run
    that takes ``duration`` seconds, and the ``at_write`` signals (delay None) at the moment
    its output starts to change."""
    rng = random.Random(SEED)  # the same moments whichever tests ran before
    pts: list[tuple[int, float | None]] = []
    for sig in (signal.SIGINT, signal.SIGKILL):
        pts += [(sig, rng.uniform(0.1, 0.95) * duration) for _ in range(n)]
        pts += [(sig, None)] if sig in at_write else []
    return pts


@pytest.mark.slow
def test_interrupted_retraining_keeps_the_previous_surrogate(phi2, tmp_path):
    """`surrogate train` into an existing directory, stopped by SIGINT or kill -9 at random
    moments and right inside the save: the directory's model still loads and predicts, and
    when the save was cut it is the previous model byte for byte."""
    from surrogates.evaluate import accuracy_table
    from surrogates.model import SurrogateModel
    model = tmp_path / "model"
    shutil.copytree(phi2["model"], model)
    old = _sha(model / "surrogate.joblib")
    table = pd.read_parquet(phi2["table"])
    # other trees than the model there: a finished save would change its bytes
    args = ["surrogate", "train", phi2["table"], "-o", model, *TRAIN, "--param", "n_estimators=250"]
    for sig, delay in _points(phi2["train_s"] + 1.0):  # + the CLI's start-up
        run = _interrupt(args, sig, cwd=tmp_path, delay=delay, watch=model if delay is None else None)
        what = f"{signal.Signals(sig).name} at {'the save' if delay is None else f'{delay:.2f} s'}"
        if delay is None and run.hit:  # killed while saving: the save must not have happened
            assert _sha(model / "surrogate.joblib") == old, what
        m = SurrogateModel.load(model)
        acc = accuracy_table(m, table)
        assert {"gemm", "elementwise"} <= set(acc), what
        assert all(0 <= v["mape"] < 100 for by_hw in acc.values() for v in by_hw.values()), what
        if sig == signal.SIGINT:
            assert _temps(model) == [], f"{what}: temporary file left behind"
        shutil.copy(phi2["model"] / "surrogate.joblib", model / "surrogate.joblib")  # the old one again


# ---- ingest ---------------------------------------------------------------------
def test_ingest_refuses_to_overwrite_its_input(phi2, tmp_path, capsys):
    """`profile ingest` with -o or --quarantine naming the input (also through a symlink or
    a hard link), an output inside the input folder, or -o equal to --quarantine: exit 2,
    one line naming the output, and the input is byte-identical."""
    src = tmp_path / "in" / "mlp.csv"
    src.parent.mkdir()
    shutil.copy(phi2["csv"], src)
    digest = _sha(src)
    (tmp_path / "link.csv").symlink_to(src)
    os.link(src, tmp_path / "hard.csv")
    cases = [
        ([src, "-o", src], src),
        ([src, "-o", tmp_path / "o.parquet", "--quarantine", src], src),
        ([src, "-o", tmp_path / "link.csv"], tmp_path / "link.csv"),
        ([src, "-o", tmp_path / "hard.csv"], tmp_path / "hard.csv"),
        ([src.parent, "-o", src.parent / "t.parquet"], src.parent / "t.parquet"),
        ([src.parent, "-o", tmp_path / "o.parquet", "--quarantine", src.parent / "q.csv"], src.parent / "q.csv"),
        ([src, "-o", tmp_path / "o.parquet", "--quarantine", tmp_path / "o.parquet"], tmp_path / "o.parquet"),
    ]
    for args, named in cases:
        err = _one_line_error(capsys, ["profile", "ingest", args[0], *INGEST, *args[1:]])
        assert str(named) in err, err
        assert _sha(src) == digest and sorted(p.name for p in src.parent.iterdir()) == ["mlp.csv"]
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.slow
def test_interrupted_ingest_keeps_input_and_output(phi2, tmp_path):
    """`profile ingest` stopped by SIGINT or kill -9 at random moments and as it writes:
    the input CSV is byte-identical and the earlier Parquet output still reads whole."""
    src = tmp_path / "in" / "mlp.csv"
    src.parent.mkdir()
    shutil.copy(phi2["csv"], src)
    digest, rows = _sha(src), len(pd.read_parquet(phi2["table"]))
    out = tmp_path / "out" / "t.parquet"
    out.parent.mkdir()
    args = ["profile", "ingest", src, *INGEST, "-o", out, "--json"]
    duration = _timed(args, tmp_path)
    for sig, delay in _points(duration, n=2):
        run = _interrupt(args, sig, cwd=tmp_path, delay=delay, watch=out.parent if delay is None else None)
        what = f"{signal.Signals(sig).name} at {'the write' if delay is None else f'{delay:.2f} s'}"
        assert _sha(src) == digest, f"{what}: the input changed"
        assert len(pd.read_parquet(out)) == rows, what
        if sig == signal.SIGINT:
            assert _temps(out.parent) == [], f"{what}: temporary file left behind ({run})"


# ---- search -----------------------------------------------------------------------
def _small_space(slo: dict | None = None) -> dict:
    """The search tests' small real space (Llama-3.1-8B chat, roofline costs), 60 requests."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("search_helpers", REPO / "tests" / "search" / "search_helpers.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    return helpers.small_space(requests=60, slo=slo)


@pytest.fixture
def search_env(tmp_path, monkeypatch) -> dict[str, str]:
    """An MLflow file store per test (no SQLite schema migrations to wait for)."""
    env = {"MLFLOW_TRACKING_URI": (tmp_path / "mlruns").as_uri(),
           "HERMES_MLFLOW_ARTIFACTS": str(tmp_path / "mlartifacts")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.mark.parametrize("name", ["../../etc/x", "a/b", "..", ".", "", "  ", "x\ny", "a\\b", "tab\there",
                                  "x" * 201])
def test_unsafe_study_names_are_refused(tmp_path, capsys, monkeypatch, name):
    """`search --study NAME` with a path separator, '..', a control character, an empty or
    an over-long name exits 2 with one line before anything is written (no storage, no
    folder outside the results folder)."""
    work = tmp_path / "w" / "d"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    space = work / "space.yaml"
    space.write_text(yaml.safe_dump(_small_space()))
    err = _one_line_error(capsys, ["search", space, "--study", name, "--trials", "1"])
    assert "--study" in err and "folder name" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["d", "space.yaml", "w"]


def test_unsafe_space_name_is_refused(tmp_path, capsys, monkeypatch):
    """A space file whose `name:` (the default study name) is '../x' exits 2 naming the file."""
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**_small_space(), "name": "../outside"}))
    err = _one_line_error(capsys, ["search", space, "--trials", "1"])
    assert str(space) in err and "name" in err and "path separator" in err
    assert not (tmp_path.parent / "outside").exists() and not (tmp_path / "hermes-search.db").exists()


def test_infeasible_search_removes_an_earlier_best(tmp_path, capsys, search_env):
    """A search where nothing meets the SLOs, run into a folder holding an earlier run's
    best.yaml and best/summary.json, removes them and says so (none is left as if current)."""
    out = tmp_path / "out"
    (out / "best").mkdir(parents=True)
    (out / "best.yaml").write_text("# Best configuration of an earlier study\nname: earlier\n")
    (out / "best" / "summary.json").write_text('{"slo_met": true}\n')
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(_small_space(slo={"ttft_p90_s": 1e-6})))
    code = main(["search", str(space), "--trials", "2", "--storage", f"sqlite:///{tmp_path / 's.db'}",
                 "-o", str(out), "--json"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert json.loads(cap.out)["best"] is None
    assert not (out / "best.yaml").exists() and not (out / "best").exists()
    assert "removed best.yaml, best/ of an earlier run" in cap.err
    assert (out / "trials.csv").is_file()


def _complete(url: str, name: str) -> dict[int, tuple]:
    import optuna
    from optuna.trial import TrialState
    study = optuna.load_study(study_name=name, storage=url)
    return {t.number: (t.params, t.values) for t in study.get_trials(states=(TrialState.COMPLETE,))}


@pytest.mark.slow
def test_interrupted_search_keeps_the_study_and_resumes(tmp_path, search_env):
    """`search` resumed with a larger budget and stopped by SIGINT or kill -9 at random
    moments and as it writes its report: the earlier study still loads with every finished
    trial unchanged, best.yaml still parses, and a final rerun resumes to the full budget."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(_small_space()))
    url = f"sqlite:///{tmp_path / 's.db'}"
    out = tmp_path / "out"
    base = ["search", space, "--storage", url, "-o", out, "--heartbeat", "1", "--json"]
    duration = _timed([*base, "--trials", "2"], tmp_path, search_env)
    first = _complete(url, "small")
    assert len(first) >= 2
    args = [*base, "--trials", "6"]  # below the ~7 trials after which this space's optimum is proven
    for sig, delay in _points(duration, at_write=(signal.SIGKILL,)):
        _interrupt(args, sig, cwd=tmp_path, delay=delay, env=search_env, watch=out if delay is None else None)
        what = f"{signal.Signals(sig).name} at {'the first write' if delay is None else f'{delay:.2f} s'}"
        now = _complete(url, "small")
        assert {k: now[k] for k in first} == first, what
        if (out / "best.yaml").exists():
            assert yaml.safe_load((out / "best.yaml").read_text())["deployments"], what
    p = subprocess.run([sys.executable, "-m", "hermes_sim.cli", *map(str, args)], cwd=tmp_path,
                       env={**os.environ, **search_env}, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["trials"] >= 6 and res["best"] is not None, res
    final = _complete(url, "small")
    assert {k: final[k] for k in first} == first and len(final) >= 6
