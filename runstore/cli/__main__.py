"""`python -m runstore.cli`: the command line."""

from . import main

main()
