"""`python -m runstore`: the command line, as `runstore`."""

from .cli import main

main(prog_name="runstore")
