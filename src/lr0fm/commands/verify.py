"""lr0fm verify: every stored record checked against what it was made of (lr0fm.verify)."""
from __future__ import annotations

from . import add_command


def cmd_verify(args) -> int:
    from ..store import ResultsStore
    from ..verify import quarantine, verify_store

    store = ResultsStore(args.out)
    if not store.root.is_dir():
        from ..errors import InputError
        raise InputError(f"results folder {store.root} does not exist; give --out the folder 'lr0fm eval' wrote to")
    found = verify_store(store)
    lines = [str(m) for m in found.mismatches]
    if found.mismatches and args.fix:
        lines.append(f"moved {len(found.bad)} record(s) and their predictions to {quarantine(store, found)}; "
                     "'lr0fm eval' recomputes their cells")
    else:
        lines.append(found.summary())
    print("\n".join(lines))
    return 1 if found.mismatches else 0


def add_commands(sub) -> None:
    p = add_command(sub, "verify", help="derive every stored number and id again from its predictions and identity; "
                                        "list what differs (exit 1)")
    p.add_argument("--fix", action="store_true",
                   help="move records that differ (and their predictions) to RESULTS/quarantine/<time>/, so that "
                        "'lr0fm eval' recomputes their cells")
    p.set_defaults(func=cmd_verify)
