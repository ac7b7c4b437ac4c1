"""Entry point: one click group; each verb family lives in its own ``cmd_*`` module."""
from __future__ import annotations

import signal
import sys
import threading

import click

from profiling.errors import HermesError, interrupt_behind


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


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a user mistake prints one line on stderr and exits with status 2."""
    _register()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


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


if __name__ == "__main__":
    sys.exit(main())
