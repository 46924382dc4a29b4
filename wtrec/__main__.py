"""Allows `python -m wtrec`."""

from wtrec.cli.app import main

main()
