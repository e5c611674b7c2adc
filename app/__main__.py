"""`python -m app ...`: the command-line entry point."""

from app.cli import cli

cli(prog_name="python -m app")
