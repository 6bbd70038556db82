"""The command line's entry point: ``lr0fm COMMAND ...`` (the commands are lr0fm.commands.*)."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .commands import MODULES, global_options
from .version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lr0fm", description="Low-resolution robustness of zero-shot foundation models",
                                     parents=[global_options(subcommand=False)])
    parser.add_argument("--version", action="version", version=f"lr0fm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in MODULES:
        importlib.import_module(f"lr0fm.commands.{name}").add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import USER_ERRORS

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="lr0fm: %(message)s")
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except USER_ERRORS as e:
        print(f"lr0fm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lr0fm: interrupted; finished cells are saved, rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`lr0fm models | head`): stop quietly. Point stdout at devnull so
        # the interpreter's final flush cannot fail again (the recipe in CPython's signal docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
