"""Allows `python -m wtrec`."""

from wtrec.cli import main

main()
