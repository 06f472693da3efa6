"""`python -m runstore.cli`: the command line."""

from . import run

run()
