"""Entry point: one click group; each verb family lives in its own ``cmd_*`` module."""
from __future__ import annotations

import sys

import click

from profiling.errors import HermesError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hermes-sim")
def cli() -> None:
    """HERMES: trace-calibrated simulation and tokens-per-dollar search for multi-stage
    LLM inference pipelines."""


def _register() -> None:
    from . import cmd_profile, cmd_search, cmd_simulate, cmd_surrogate  # noqa: F401
    for mod in (cmd_profile, cmd_surrogate, cmd_simulate, cmd_search):
        for command in mod.COMMANDS:
            cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a user mistake prints one line on stderr and exits with status 2."""
    _register()
    try:
        cli.main(args=argv, prog_name="hermes-sim", standalone_mode=False)
    except HermesError as e:
        click.echo(f"hermes-sim: error: {e}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("hermes-sim: aborted", err=True)
        return 130
    except click.ClickException as e:
        click.echo(f"hermes-sim: error: {e.format_message()}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("hermes-sim: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
