"""The command line: a thin layer over the library (`runstore --help`).

One module per group of commands, each imported when one of its commands is asked
for (`_base.COMMAND_MODULES`): `all_commands()` loads them all.
"""

from __future__ import annotations

import click

from ._base import COMMAND_MODULES, main, run

__all__ = ["COMMAND_MODULES", "all_commands", "main", "run"]


def all_commands() -> dict[str, click.Command]:
    """Every command by name, each module loaded (for docs and tests)."""
    context = click.Context(main)
    found = {name: main.get_command(context, name) for name in main.list_commands(context)}
    return {name: command for name, command in found.items() if command is not None}
