"""A Ctrl-C or SIGTERM decides the exit even where a library's cleanup loses it: Optuna keeps a
trial's exception aside while it records the trial, and when that write meets a locked SQLite
storage it raises its own error instead (the CI failure this guards against)."""
from __future__ import annotations

import sqlite3

import optuna
import pytest

from hermes_sim import cli
from profiling.errors import clear_interrupts, interrupt_behind, interrupt_pending, record_interrupt


@pytest.fixture(autouse=True)
def _clean():
    clear_interrupts()
    cli._ignored.clear()
    yield
    clear_interrupts()
    cli._ignored.clear()


def test_an_interrupt_behind_a_chained_storage_error_is_found():
    """The interrupt is the __context__ of an error raised ``from`` another: both links are
    followed (following __cause__ first alone misses it)."""
    try:
        try:
            raise cli.Terminated()
        except KeyboardInterrupt:
            try:
                raise sqlite3.OperationalError("database is locked")
            except sqlite3.OperationalError as db:
                raise RuntimeError("commit failed") from db
    except RuntimeError as e:
        found = interrupt_behind(e)
    assert isinstance(found, cli.Terminated)


def test_an_interrupt_optuna_loses_at_a_locked_storage_still_decides_the_exit(tmp_path):
    """A real SQLite study: the objective is interrupted while another connection holds the
    database, so Optuna's recording of the failed trial times out and it raises an error of its
    own with no interrupt in its chain; the interrupt the signal handler recorded is found."""
    db = tmp_path / "s.db"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name="x")
    blocker = sqlite3.connect(db, timeout=0, isolation_level=None)

    def objective(trial):
        blocker.execute("BEGIN EXCLUSIVE")          # another writer holds the database
        raise record_interrupt(KeyboardInterrupt())

    try:
        with pytest.raises(BaseException) as e:
            study.optimize(objective, n_trials=1)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert not isinstance(e.value, KeyboardInterrupt)          # Optuna replaced it
    assert interrupt_behind(e.value) is not None


def test_without_a_recorded_interrupt_an_error_is_an_error():
    assert interrupt_behind(RuntimeError("a bug")) is None and not interrupt_pending()


def test_a_second_signal_during_the_cleanup_is_ignored():
    """The first Ctrl-C raises (and is recorded); the next one lets the cleanup finish."""
    with pytest.raises(KeyboardInterrupt):
        cli._on_sigint(2, None)
    assert interrupt_pending()
    assert cli._on_sigint(2, None) is None and cli._ignored == [130]


def test_an_interrupted_run_exits_even_when_a_library_thread_would_keep_it_alive():
    """The command line's entry point after an interrupt (status 143): a non-daemon thread that
    never stops (as Optuna's trial heartbeat does when the signal lands while it starts) is
    waited for EXIT_JOIN_S at most, and the process exits 143 instead of hanging."""
    import subprocess
    import sys
    import time
    code = ("import threading, hermes_sim.cli as c\n"
            "c.EXIT_JOIN_S = 0.5\n"
            "threading.Thread(target=threading.Event().wait).start()\n"
            "c.main = lambda: 143\n"
            "c.entry()\n")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 143, r.stderr
    assert time.monotonic() - t0 < 30
