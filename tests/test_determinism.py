"""Same input, same answer: every example simulated three times, and every built-in search
space searched twice with one seed, write the same files byte for byte, apart from the
fields that measure the run rather than the simulation (``WALL_CLOCK_FIELDS``).

Runs go through the real CLI. Most of them are separate interpreters with different
``PYTHONHASHSEED`` values, because an order that follows memory addresses or string
hashes usually repeats inside one process and only changes between processes.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest

from hermes_sim.cli import main
from simulator.engine.core import Environment
from simulator.pipelines.network import Flow, Network

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
SPACES = sorted((REPO / "search" / "spaces").glob("*.yaml"))

# Fields that measure the run, not the simulation: wall-clock seconds (summary.json's
# sim_wall_s, a trial's trial_wall_s) and the search worker's process id; the README names them.
WALL_CLOCK_FIELDS = ("sim_wall_s", "trial_wall_s", "worker_pid")

# Examples whose three runs are all separate processes (the rest: two processes and one
# in-process run, which also checks that warm in-process caches do not change a result).
ALL_IN_PROCESSES = {"rag_chat"}

# A seed whose first trials include a feasible one in every built-in space, so best.yaml exists.
SEARCH_SEED = 2
SEARCH_TRIALS = 3


def _cli(runs: list[tuple[list[str], dict]], *, cwd: Path, timeout: float = 600) -> list[str]:
    """Each ``(ARGS, env)`` as `hermes-sim ARGS` in its own fresh interpreter, all at once (two
    cores halve the wall time), each with its own string-hash seed; their stdouts."""
    procs = [subprocess.Popen([sys.executable, "-m", "hermes_sim.cli", *args], cwd=cwd,
                              env={**os.environ, "PYTHONHASHSEED": str(i + 1), **env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, (args, env) in enumerate(runs)]
    try:
        done = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:   # a timeout leaves the others running: stop and reap them
            if p.poll() is None:
                p.kill()
                p.communicate()
    for (args, _), p, (_, err) in zip(runs, procs, done):
        assert p.returncode == 0, f"hermes-sim {' '.join(args)} failed:\n{err[-3000:]}"
    return [out for out, _ in done]


def _mask(doc):
    """``doc`` with every WALL_CLOCK_FIELDS key (at any depth) set to None."""
    if isinstance(doc, dict):
        return {k: None if k in WALL_CLOCK_FIELDS else _mask(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_mask(v) for v in doc]
    return doc


def _flat(doc, prefix: str = "") -> dict:
    if isinstance(doc, dict):
        out = {}
        for k, v in doc.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: doc}


def _summary_diff(a: dict, b: dict) -> str:
    """The summary keys whose values differ, with both values (for a readable failure)."""
    fa, fb = _flat(a), _flat(b)
    rows = [f"{k}: {fa.get(k)!r} != {fb.get(k)!r}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    return "\n".join(rows[:40])


def _masked_json(path: Path) -> dict:
    doc = json.loads(path.read_text())
    assert "sim_wall_s" in doc, f"{path} has no sim_wall_s: WALL_CLOCK_FIELDS is out of date"
    return _mask(doc)


def _assert_same_outputs(dirs: list[Path]) -> None:
    """summary.json equal apart from WALL_CLOCK_FIELDS; every other written file byte-identical."""
    first = dirs[0]
    names = sorted(p.name for p in first.iterdir() if p.is_file())
    assert {"summary.json", "requests.parquet"} <= set(names), f"{first}: outputs missing ({names})"
    ref = _masked_json(first / "summary.json")
    for d in dirs[1:]:
        assert sorted(p.name for p in d.iterdir() if p.is_file()) == names, f"{d} wrote other files than {first}"
        other = _masked_json(d / "summary.json")
        assert other == ref, f"summary.json differs between {first.name} and {d.name}:\n{_summary_diff(ref, other)}"
        for name in names:
            if name != "summary.json":
                assert (d / name).read_bytes() == (first / name).read_bytes(), \
                    f"{name} differs between {first.name} and {d.name}"


def test_network_finishes_same_time_transfers_in_creation_order() -> None:
    """Sixty-four equal transfers sharing one link all finish at the same instant; their
    callbacks fire in the order the transfers started (not in memory-address order), and
    a Flow cannot be put in a set or used as a dict key at all."""
    env = Environment()
    net = Network(env)
    link = net.link("shared", 1000.0)
    order: list[int] = []
    for i in range(64):
        net.transfer([link], 100.0, 0.0, lambda t, i=i: order.append(i))
    env.run()
    assert order == list(range(64))
    assert env.now == pytest.approx(6.4)
    with pytest.raises(TypeError):
        hash(Flow(0, (link,), 1.0, print))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_writes_identical_files_three_times(example: Path, tmp_path: Path) -> None:
    """Simulating an unmodified example three times with its seed (separate processes with
    different hash seeds, and for most examples one more run inside this process) writes
    the same summary.json apart from WALL_CLOCK_FIELDS, and byte-identical requests.parquet
    and trace.json."""
    dirs = [tmp_path / f"run{i}" for i in range(3)]
    args = [["simulate", str(example), "-o", str(d), "--no-plots"] for d in dirs]
    in_processes = 3 if example.stem in ALL_IN_PROCESSES else 2
    _cli([(a, {}) for a in args[:in_processes]], cwd=tmp_path)
    for a in args[in_processes:]:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            rc = main(a)
        assert rc == 0, err.getvalue()
    _assert_same_outputs(dirs)


def _search_run(space: Path, run: str, tmp_path: Path) -> tuple[list[str], dict]:
    """Arguments and environment of one search of ``space`` with its own Optuna storage,
    MLflow store and output folder in ``tmp_path``."""
    args = ["search", str(space), "--trials", str(SEARCH_TRIALS), "--seed", str(SEARCH_SEED),
            "--storage", f"sqlite:///{tmp_path / f'{run}.db'}", "-o", str(tmp_path / run), "--json"]
    return args, {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / f'mlflow-{run}.db'}",
                  "HERMES_MLFLOW_ARTIFACTS": str(tmp_path / f"artifacts-{run}")}


def _trials(storage: str, study: str) -> list[tuple]:
    """Number, state, parameters, objective values and attributes (apart from WALL_CLOCK_FIELDS)."""
    st = optuna.load_study(study_name=study, storage=storage)
    return [(t.number, t.state.name, t.params, t.values, _mask(t.user_attrs))
            for t in st.get_trials(deepcopy=False)]


def _csv(path: Path) -> pd.DataFrame:
    """trials.csv as text cells, without the WALL_CLOCK_FIELDS columns."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    drop = [c for c in df.columns if c.split(":")[-1] in WALL_CLOCK_FIELDS]
    assert drop, f"{path} has none of {WALL_CLOCK_FIELDS}: the constant is out of date"
    return df.drop(columns=drop)


@pytest.mark.parametrize("space", SPACES, ids=lambda p: p.stem)
def test_same_seed_search_picks_same_trials_and_best(space: Path, tmp_path: Path) -> None:
    """Two searches of a built-in space with one seed (separate processes, storages and
    MLflow stores) run the same trials with identical objective values and attributes,
    and write the same trials.csv (apart from WALL_CLOCK_FIELDS), best.yaml and best run."""
    outs = _cli([_search_run(space, run, tmp_path) for run in ("a", "b")], cwd=tmp_path)
    study, study_b = (json.loads(o)["study"] for o in outs)
    assert study == study_b
    a, b = tmp_path / "a", tmp_path / "b"
    ta, tb = _trials(f"sqlite:///{tmp_path / 'a.db'}", study), _trials(f"sqlite:///{tmp_path / 'b.db'}", study)
    assert len(ta) >= SEARCH_TRIALS
    assert ta == tb
    pd.testing.assert_frame_equal(_csv(a / "trials.csv"), _csv(b / "trials.csv"))
    assert (a / "best.yaml").is_file(), f"no feasible trial in {SEARCH_TRIALS} trials of {space.name}: pick another SEARCH_SEED"
    assert (a / "best.yaml").read_bytes() == (b / "best.yaml").read_bytes()
    _assert_same_outputs([a / "best", b / "best"])
