"""The command line: a thin layer over the library (`runstore --help`).

One module per group of commands; importing this package registers them all on
`main`.
"""

from __future__ import annotations

from . import carry, compact, live, runs, sql
from ._base import main, run

__all__ = ["main", "run"]

_COMMANDS = (carry, compact, live, runs, sql)  # imported for their commands
