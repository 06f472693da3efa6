"""The command-line reference, docs/cli.md, made from the commands' own help.

    .venv/bin/python -m runstore._clidoc      # writes docs/cli.md again

A test compares docs/cli.md with what this makes, so the page never drifts from
`runstore --help`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli import all_commands, main

__all__ = ["reference"]

#: Help is wrapped at this width, whatever the terminal: the page is the same anywhere.
_WIDTH = 88


def _help(command: click.Command, name: str, parent: click.Context | None) -> str:
    context = click.Context(command, info_name=name, parent=parent, terminal_width=_WIDTH)
    context.max_content_width = _WIDTH
    return command.get_help(context)


def reference() -> str:
    """docs/cli.md as it should read."""
    root = click.Context(main, info_name="runstore", terminal_width=_WIDTH)
    parts = [
        "# Command-line reference",
        "",
        "Made from `runstore --help` by `python -m runstore._clidoc`; a test keeps it in",
        "step. `python -m runstore` runs the same commands.",
        "",
        "```",
        _help(main, "runstore", None),
        "```",
    ]
    assert isinstance(main, click.Group)
    commands = all_commands()
    for name in sorted(commands):
        parts += [
            "",
            f"## runstore {name}",
            "",
            "```",
            _help(commands[name], name, root),
            "```",
        ]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/cli.md")
    target.write_text(reference())
    print(f"wrote {target}")
