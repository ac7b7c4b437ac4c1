"""Entry point: one click group; each verb family lives in its own ``cmd_*`` module."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

import click

from profiling.errors import (HermesError, clear_interrupts, interrupt_behind, interrupt_pending,
                             record_interrupt)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hermes-sim")
def cli() -> None:
    """HERMES: trace-calibrated simulation and tokens-per-dollar search for multi-stage
    LLM inference pipelines."""


def _register() -> None:
    from . import cmd_export, cmd_profile, cmd_search, cmd_simulate, cmd_surrogate  # noqa: F401
    for mod in (cmd_profile, cmd_surrogate, cmd_simulate, cmd_search, cmd_export):
        for command in mod.COMMANDS:
            cli.add_command(command)


def one_line(msg: str) -> str:
    """A message's lines joined: an error is one line on stderr, whatever produced it."""
    return "; ".join(line.strip() for line in msg.splitlines() if line.strip()) or "(no message)"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup (atomic writes, MLflow runs ended as
    KILLED, Optuna trials failed) runs as it does for an interrupt."""


# A repeated Ctrl-C or SIGTERM while the first one's cleanup runs (ending MLflow runs, failing
# the Optuna trial, both waiting on a storage lock the interrupted write may hold for a few
# seconds) is ignored, so that the cleanup finishes; this many more force the exit at once.
FORCE_AFTER = 2
_ignored: list[int] = []


def _interrupt(exc: type[KeyboardInterrupt], code: int) -> None:
    if interrupt_pending():
        _ignored.append(code)
        if len(_ignored) > FORCE_AFTER:
            os._exit(code)
        sys.stderr.write("hermes-sim: stopping, finishing the cleanup (press again to force)\n")
        return
    raise record_interrupt(exc())


def _on_sigterm(signum, frame) -> None:
    _interrupt(Terminated, 143)


def _on_sigint(signum, frame) -> None:
    _interrupt(KeyboardInterrupt, 130)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a user mistake prints one line on stderr and exits with status 2."""
    _register()
    clear_interrupts()
    _ignored.clear()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm),
                    signal.SIGINT: signal.signal(signal.SIGINT, _on_sigint)}
    try:
        return _run(argv)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="hermes-sim", standalone_mode=False)
    except HermesError as e:
        click.echo(f"hermes-sim: error: {one_line(str(e))}", err=True)
        return 2
    except click.exceptions.Abort as e:
        # click turns a KeyboardInterrupt (and so a SIGTERM) inside a command into Abort
        if isinstance(e.__cause__, Terminated):
            click.echo("hermes-sim: terminated", err=True)
            return 143
        click.echo("hermes-sim: interrupted", err=True)
        return 130
    except click.ClickException as e:
        click.echo(f"hermes-sim: error: {one_line(e.format_message())}", err=True)
        return 2
    except Terminated:
        click.echo("hermes-sim: terminated", err=True)
        return 143
    except KeyboardInterrupt:
        click.echo("hermes-sim: interrupted", err=True)
        return 130
    except Exception as e:
        intr = interrupt_behind(e)
        if intr is None:
            raise                               # a bug: its traceback is the report
        terminated = isinstance(intr, Terminated)
        click.echo(f"hermes-sim: {'terminated' if terminated else 'interrupted'}", err=True)
        return 143 if terminated else 130
    return 0


# After an interrupt's cleanup, how long the exit waits for other threads to finish.
EXIT_JOIN_S = 5.0


def entry() -> None:
    """The command line's entry point: ``main``, then exit with its status. After an interrupt
    (130, 143) the cleanup has run inside ``main``; a library thread that is not a daemon and
    missed its own stop (such as Optuna's trial heartbeat, which nothing stops if the signal
    lands between its start and its context's entry) or an exit hook would keep the process
    alive (a CI run hung so after printing 'terminated'), so the process waits for such threads
    at most EXIT_JOIN_S, then exits without them or the exit hooks."""
    code = main()
    if code in (130, 143):
        deadline = time.monotonic() + EXIT_JOIN_S
        for t in threading.enumerate():
            if t is not threading.main_thread() and not t.daemon:
                t.join(max(0.0, deadline - time.monotonic()))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
