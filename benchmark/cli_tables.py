"""`zsbench` subcommands that turn records into tables and pictures."""

from __future__ import annotations

import argparse


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Registers the table commands on the `zsbench` parser."""
