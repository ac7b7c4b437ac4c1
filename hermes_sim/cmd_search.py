"""`hermes-sim search` verbs."""
from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
