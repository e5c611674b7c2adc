"""`python -m app ...`: the command-line entry point."""

from app.cli import cli

cli()
