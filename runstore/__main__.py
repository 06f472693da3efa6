"""`python -m runstore`: the command line, as `runstore`."""

from .cli import run

run()
