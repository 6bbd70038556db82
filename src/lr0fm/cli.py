"""The command line's entry point: ``lr0fm COMMAND ...`` (the commands are lr0fm.commands.*)."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading

from .commands import MODULES, Parser, global_options
from .version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lr0fm", description="Low-resolution robustness of zero-shot foundation models",
                                     parents=[global_options(subcommand=False)])
    parser.add_argument("--version", action="version", version=f"lr0fm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in MODULES:
        importlib.import_module(f"lr0fm.commands.{name}").add_commands(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM: ends a command as Ctrl-C does (finished cells and the resume point are kept)."""


def _raise_terminated(_signum, _frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_ends_like_sigint():
    """SIGTERM raises Terminated in the main thread while a command runs (restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    from .errors import USER_ERRORS

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="lr0fm: %(message)s")
    try:
        with _sigterm_ends_like_sigint():
            code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except USER_ERRORS as e:
        print(f"lr0fm: error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("lr0fm: terminated; finished cells are saved, rerun the same command to resume", file=sys.stderr)
        return 128 + signal.SIGTERM
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
