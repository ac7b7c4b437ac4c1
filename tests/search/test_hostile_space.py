"""Hostile search inputs through the real CLI: stale studies, bad spaces, alias bombs,
missing storage drivers, interrupts. Each is refused in one line (exit 2) or handled,
and no MLflow run is left RUNNING."""
from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from hermes_sim.cli import main
from profiling.errors import HermesError
from profiling.hardware import CATALOG_ENV, builtin_catalog
from search import parse_space
from search.storage import make_storage
from search.study import open_study, run_worker

from search_helpers import REPO, run_cli, run_cli_measured, small_space
from test_servers import postgres  # noqa: F401 - a real PostgreSQL server fixture

TWO_GPUS = {"deployments.0.hardware": {"choices": ["H100-SXM", "A100-80GB"]}}


def running_runs() -> list[str]:
    """Ids of the runs still RUNNING in this test's MLflow store (every experiment)."""
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, max_results=1000) if ids else []
    return [r.info.run_id for r in runs if r.info.status == "RUNNING"]


def one_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def price_catalog(path: Path, device: str, factor: float) -> Path:
    """A --catalog file redefining ``device`` with its price multiplied by ``factor``."""
    spec = builtin_catalog().get(device).model_dump(mode="json")
    spec["price_per_hour"] *= factor
    path.write_text(yaml.safe_dump({"devices": [spec]}, sort_keys=False))
    return path


def values_by_gpu(db: Path, study: str) -> dict[str, float]:
    """Objective of every simulated trial of ``study``, by the GPU it tried."""
    s = optuna.load_study(study_name=study, storage=f"sqlite:///{db}")
    return {t.params["deployments.0.hardware"]: t.values[0] for t in s.trials
            if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("simulated")}


# ---- item 6: the study's identity covers what the objective depends on -------------

def test_changed_catalog_price_never_reuses_stale_trials(tmp_path, space_file):
    """A100 is the best buy; its price x100 through --catalog: the rerun of the same command
    opens a study of its own (named in the log), re-simulates instead of reusing the old
    trials, and picks H100; the old study is untouched; naming the old study explicitly
    is refused in one line saying what changed; no MLflow run stays RUNNING."""
    space = space_file(small_space(requests=60, params=TWO_GPUS))
    db = tmp_path / "s.db"
    args = ["search", str(space), "--trials", "2", "--json", "--storage", f"sqlite:///{db}"]
    r1 = run_cli(args, cwd=tmp_path)
    assert r1.returncode == 0, r1.stderr
    first = json.loads(r1.stdout)
    assert first["study"] == "small" and first["best"]["params"]["deployments.0.hardware"] == "A100-80GB"
    old = values_by_gpu(db, "small")

    pricey = price_catalog(tmp_path / "pricey.yaml", "A100-80GB", 100.0)
    r2 = run_cli([*args, "--catalog", str(pricey)], cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr
    second = json.loads(r2.stdout)
    assert second["study"].startswith("small-") and second["study"] in r2.stderr
    assert "hardware catalog" in r2.stderr
    assert second["best"]["params"]["deployments.0.hardware"] == "H100-SXM"
    assert second["baseline"]["gain"] == pytest.approx(1.0)  # the base scenario is the H100 one
    new = values_by_gpu(db, second["study"])
    assert new, "the new study simulated its own trials"
    if "A100-80GB" in new:  # simulated at the new price, not copied from the old study
        assert new["A100-80GB"] == pytest.approx(old["A100-80GB"] / 100.0, rel=1e-6)
    assert values_by_gpu(db, "small") == old

    r3 = run_cli([*args, "--catalog", str(pricey), "--study", "small"], cwd=tmp_path)
    assert r3.returncode == 2
    line = one_line(r3.stderr)
    assert "study 'small'" in line and "hardware catalog" in line and f"--study {second['study']}" in line
    assert values_by_gpu(db, "small") == old
    assert running_runs() == []


def test_worker_with_other_inputs_is_refused(tmp_path, monkeypatch):
    """A worker whose catalog differs from the one the study was made with (another machine,
    another $HERMES_CATALOG) refuses to score trials for it, naming what differs."""
    sp = parse_space(small_space(params=TWO_GPUS))
    url = f"sqlite:///{tmp_path / 'w.db'}"
    open_study(sp, make_storage(url), "w", 0)
    monkeypatch.setenv(CATALOG_ENV, str(price_catalog(tmp_path / "c.yaml", "H100-SXM", 2.0)))
    with pytest.raises(HermesError, match="hardware catalog"):
        run_worker(url, "w", n_trials=2, seed=0)
    assert optuna.load_study(study_name="w", storage=url).trials == []


def test_a_named_file_is_part_of_the_identity(tmp_path):
    """A model config.json the scenario names is hashed into the identity: editing it makes
    the stored study stale (the refusal names the file), restoring it resumes."""
    from search.study import StudyChanged
    models = yaml.safe_load((REPO / "profiling" / "data" / "models.yaml").read_text())["models"]
    hf = next(m["hf_config"] for m in models if m["name"] == "Llama-3.1-8B")
    cfg = tmp_path / "llama" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps(hf))
    doc = small_space(params={"deployments.0.replicas": {"choices": [1, 2]}})
    doc["base"]["deployments"][0]["model"] = str(cfg)
    url = f"sqlite:///{tmp_path / 'f.db'}"
    open_study(parse_space(doc), make_storage(url), "f", 0)
    original = cfg.read_text()
    cfg.write_text(original.replace("{", '{"hermes_test_edit": 1, ', 1))
    with pytest.raises(StudyChanged, match=f"file {cfg}"):
        open_study(parse_space(doc), make_storage(url), "f", 0)
    cfg.write_text(original)
    open_study(parse_space(doc), make_storage(url), "f", 0)


# ---- item 7: the space is checked against the scenario schema before any trial -----

def _with_baseline(base: dict) -> dict:
    doc = small_space(params=TWO_GPUS)
    doc["baseline"] = base
    return doc


BAD_SPACES = {
    "path that does not exist": (small_space(params={"deployments.0.scheduler.polcy": {"choices": ["chunked"]}}),
                                 "params.deployments.0.scheduler.polcy"),
    "choices of the wrong type": (small_space(params={"deployments.0.replicas": {"choices": ["one", "two"]}}),
                                  "params.deployments.0.replicas"),
    "range outside the schema": (small_space(params={"deployments.0.replicas": {"low": 0, "high": 2}}),
                                 "params.deployments.0.replicas"),
    "low above high": (small_space(params={"deployments.0.replicas": {"low": 3, "high": 1}}),
                       "params.deployments.0.replicas"),
    "empty choices": (small_space(params={"deployments.0.replicas": {"choices": []}}),
                      "params.deployments.0.replicas"),
    "list index past the end": (small_space(params={"deployments.3.replicas": {"choices": [1, 2]}}),
                                "params.deployments.3.replicas"),
    "path through a number": (small_space(params={"deployments.0.replicas.n": {"choices": [1]}}),
                              "params.deployments.0.replicas.n"),
    "unknown model choice": (small_space(params={"deployments.0.model": {"choices": ["Llama-3.1-8B", "Nope-9B"]}}),
                             "params.deployments.0.model"),
    "baseline index past the end": (_with_baseline({"deployments.2.hardware": "H100-SXM"}),
                                    "baseline.deployments.2.hardware"),
    "baseline of the wrong type": (_with_baseline({"deployments.0.tp": "two"}), "baseline.deployments.0.tp"),
    "baseline unknown hardware": (_with_baseline({"deployments.0.hardware": "H999"}),
                                  "baseline.deployments.0.hardware"),
}


@pytest.mark.parametrize("case", list(BAD_SPACES))
def test_bad_space_is_refused_before_the_first_trial(case, tmp_path, space_file, capsys):
    """Exit 2 and one stderr line naming the space file and the parameter, before any study,
    trial or MLflow run exists (was: every trial invalid and exit 0, or a KeyError with the
    MLflow parent run left RUNNING)."""
    doc, field = BAD_SPACES[case]
    p = space_file(doc)
    db = tmp_path / "bad.db"
    code = main(["search", str(p), "--trials", "2", "--storage", f"sqlite:///{db}",
                 "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    line = one_line(err)
    assert line.startswith(f"hermes-sim: error: {p}: {field}:"), line
    assert not db.exists() and not (tmp_path / "out").exists()
    assert running_runs() == []


@pytest.mark.parametrize("sig, code, last", [
    (signal.SIGINT, 130, ("hermes-sim: aborted", "hermes-sim: interrupted")),
    (signal.SIGTERM, 143, ("hermes-sim: terminated",)),
])
def test_interrupted_search_ends_its_mlflow_run_killed(sig, code, last, tmp_path, space_file):
    """Ctrl-C (SIGINT) or a SIGTERM (a scheduler stopping the job) in the middle of a tracked
    search: exit 130 / 143 and the study's MLflow parent run is ended KILLED, not left RUNNING."""
    # hundreds of configurations: the search cannot finish (or prove its optimum) first
    p = space_file(small_space(requests=200, params={
        **TWO_GPUS, "deployments.0.scheduler.max_batch_size": {"low": 16, "high": 512}}))
    log = tmp_path / "stderr.txt"
    with log.open("w") as err_file:  # a file, not a pipe: nobody reads it while the search runs
        proc = subprocess.Popen([sys.executable, "-m", "hermes_sim.cli", "search", str(p), "--trials", "200",
                                 "--storage", f"sqlite:///{tmp_path / 'i.db'}", "--study", "intr"],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err_file)
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    deadline, parent = time.time() + 120, None
    try:
        while parent is None and time.time() < deadline and proc.poll() is None:
            exp = client.get_experiment_by_name("hermes-search/intr")
            runs = client.search_runs([exp.experiment_id], "tags.`hermes.kind` = 'trial'") if exp else []
            if runs:  # trials are running: the parent exists and is RUNNING
                parent = client.search_runs([exp.experiment_id], "tags.`hermes.kind` = 'study'")[0]
            else:
                time.sleep(0.3)
        assert parent is not None and parent.info.status == "RUNNING"
        # A user presses Ctrl-C again if the first one went unseen; a scheduler sends SIGTERM once
        # and waits (a second one during a slow, loaded exit would find the default handler back).
        for _ in range(6 if sig == signal.SIGINT else 1):
            proc.send_signal(sig)
            try:
                proc.wait(timeout=20 if sig == signal.SIGINT else 120)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = log.read_text()
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] in last
    assert client.get_run(parent.info.run_id).info.status == "KILLED"
    assert running_runs() == []


# ---- item 10: alias bombs ------------------------------------------------------------

def _bomb(levels: int = 9) -> str:
    """A 'billion laughs' mapping: about 10**(levels + 1) values from a few hundred bytes of YAML."""
    lines = ["    l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"    l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [9, 4])
def test_alias_bomb_in_baseline_is_refused_quickly(levels, tmp_path):
    """A space whose baseline expands to 10**10 values (YAML aliases) is refused by the YAML
    reader; one that expands to 10**5 (more than any real space, less than the reader's
    limit) is refused by the space check naming `baseline`. Both in one line naming the file,
    in seconds and without growing memory."""
    p = tmp_path / "bomb.yaml"
    p.write_text(yaml.safe_dump(small_space(params=TWO_GPUS), sort_keys=False)
                 + "baseline:\n  deployments.0.replicas:\n" + _bomb(levels))
    t0 = time.monotonic()
    code, stderr, peak_kib = run_cli_measured(
        ["search", str(p), "--trials", "1", "--storage", f"sqlite:///{tmp_path / 'b.db'}"],
        cwd=tmp_path, timeout=120)
    assert code == 2, stderr
    line = one_line(stderr)
    assert line.startswith(f"hermes-sim: error: {p}: ") and "aliases" in line, line
    if levels == 4:
        assert line.startswith(f"hermes-sim: error: {p}: baseline: expands to more than 100,000 values"), line
    assert time.monotonic() - t0 < 60
    assert peak_kib < 2_000_000  # under 2 GB
    assert not (tmp_path / "b.db").exists()
    assert running_runs() == []


def test_alias_bomb_in_the_base_scenario_file_is_refused(tmp_path, capsys):
    """A 10**5-value bomb inside the scenario file a space names as its `base:` is refused in
    one line naming that scenario file and the field."""
    scen = tmp_path / "scen.yaml"
    base = small_space()["base"]
    scen.write_text(yaml.safe_dump(base, sort_keys=False) + "debug:\n" + _bomb(4))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**small_space(params=TWO_GPUS), "base": "scen.yaml"}, sort_keys=False))
    code = main(["search", str(space), "--trials", "1", "--storage", f"sqlite:///{tmp_path / 'b.db'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert one_line(err).startswith(f"hermes-sim: error: {scen}: debug:")
    assert running_runs() == []


# ---- Deliver 3: the PostgreSQL driver --------------------------------------------------

def test_missing_storage_driver_names_the_pip_package(tmp_path, space_file, capsys):
    """A storage URL whose driver is not installed: exit 2, one line naming the package to
    pip install (was: "Please install appropriate one")."""
    p = space_file(small_space(params=TWO_GPUS))
    code = main(["search", str(p), "--trials", "1", "--storage", "mysql+pymysql://u:secret@127.0.0.1:9/x"])
    err = capsys.readouterr().err
    assert code == 2
    line = one_line(err)
    assert "pip install PyMySQL" in line and "secret" not in line


def test_readme_postgresql_url_works_with_the_installed_driver(postgres, tmp_path, space_file):  # noqa: F811
    """`--storage postgresql://…` exactly as the README writes it runs a search on a real
    PostgreSQL server with only hermes-sim's own dependencies (psycopg2-binary is one)."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("psycopg2-binary") for d in deps)
    url = postgres.replace("postgresql+psycopg2://", "postgresql://")
    p = space_file(small_space(requests=60, params=TWO_GPUS))
    r = run_cli(["search", str(p), "--trials", "1", "--storage", url, "--study", "pg1", "--json"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["trials"] >= 1


# ---- issue 24: no import circle between feasibility and objective --------------------

def _imports(module: Path) -> set[str]:
    """Every module a file imports, at module level or inside functions (relative names
    resolved within `search`)."""
    out = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ("search." if node.level else "") + (node.module or "")
            out.add(base.rstrip("."))
            out.update(f"{base}.{a.name}".lstrip(".") for a in node.names if not node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_feasibility_and_objective_do_not_import_each_other():
    """objective uses feasibility; feasibility never imports objective, not even lazily,
    and both load on their own in a fresh interpreter."""
    feas = _imports(REPO / "search" / "feasibility.py")
    obj = _imports(REPO / "search" / "objective.py")
    assert "search.objective" not in feas
    assert "search.feasibility" in obj
    for mod in ("search.feasibility", "search.objective"):
        subprocess.run([sys.executable, "-c", f"import {mod}"], check=True, cwd=REPO, timeout=120)


def test_leftover_temporary_file_of_a_killed_save_is_not_a_new_surrogate(tmp_path):
    """A kill -9 during a surrogate save can leave a hidden '.NAME.xxxx.tmp' beside the model
    (profiling.atomicfile); the study identity still sees the same surrogate, while a real
    change to a model file is a different one."""
    from search.identity import surrogate_hash
    folder = tmp_path / "surr"
    folder.mkdir()
    (folder / "surrogate.joblib").write_bytes(b"model-bytes")
    before = surrogate_hash(str(folder))
    (folder / ".surrogate.joblib.abc123.tmp").write_bytes(b"half")
    assert surrogate_hash(str(folder)) == before
    (folder / "surrogate.joblib").write_bytes(b"other-model")
    assert surrogate_hash(str(folder)) != before
