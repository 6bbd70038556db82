"""lr0fm compare: rank evaluated models among the paper's backbones."""
from __future__ import annotations

import argparse
import json

from ..errors import InputError
from ..metrics import AGGREGATE_NAMES, RANK_BY
from ..records import parse_where, select
from ..report import labelled
from ..report.compare import (compare, format_comparison, format_own_variants,
                              variants_on_own_datasets)
from ..report.conformance import join_names
from ..report.paper import PAPER_RESOLUTIONS
from . import add_command, number


def cmd_compare(args) -> int:
    from ..protocol import parse_resolutions
    from ..store import ResultsStore

    resolutions, where = parse_resolutions(args.resolutions), parse_where(args.where)  # options first
    store = ResultsStore(args.out)
    records = store.records()
    if not records:
        raise InputError(f"no results in {store.root}: run 'lr0fm eval' first (or give --out DIR)")
    records = select(records, where)
    if not records:
        raise InputError(f"no results in {store.root} match --where {' '.join(args.where)}")
    records = labelled(records)  # labels over everything selected, as 'lr0fm report' shows them
    if args.model:
        names = [n.strip() for n in args.model.split(",") if n.strip()]
        picked = [r for r in records if r["model"] in names or r["model_label"] in names]
        if not picked:
            known = sorted({r["model_label"] for r in records})
            raise InputError(f"--model {args.model}: no results for it in {store.root}; stored: {join_names(known)}")
        records = picked
    try:
        cmp = compare(records, resolutions, rank_by=args.rank_by,
                      common_only=args.datasets_only_common)
    except InputError as e:
        # nothing to place beside the paper (e.g. only offline datasets): still show base vs variants
        own = variants_on_own_datasets(records, resolutions)
        if not own:
            raise
        print(json.dumps({"paper_comparison": str(e), "variants": own}, indent=1) if args.json
              else f"{format_own_variants(own)}\n\nNo ranking among the paper's backbones: {e}")
        return 0
    print(json.dumps(cmp.as_dict(), indent=1) if args.json else format_comparison(cmp, context=args.context))
    return 0


def add_commands(subparsers) -> None:
    p = add_command(subparsers, "compare", help="rank your evaluated models among the paper's 66 backbones")
    p.add_argument("--model", default=None, help="your model(s), comma-separated (name, or name+variant label)")
    p.add_argument("--resolutions", "-r", default=",".join(map(str, PAPER_RESOLUTIONS)),
                   help="LR sizes in px to compare (the paper has %(default)s)")
    p.add_argument("--rank-by", choices=AGGREGATE_NAMES, default=RANK_BY)
    p.add_argument("--json", action="store_true", help="print the comparison (all rows, differences) as JSON")
    p.add_argument("--datasets-only-common", action=argparse.BooleanOptionalAction, default=True,
                   help="score everyone on the datasets all compared models and the paper share (default); "
                        "--no-datasets-only-common ranks your SAR/WAR over your datasets against the paper's over 15")
    p.add_argument("--context", type=number(least=0), default=2, help="paper rows shown around each of yours (default: %(default)s)")
    p.add_argument("--where", action="append", metavar="COLUMN=VALUE",
                   help="compare only records whose column has this value, e.g. limit=none (as 'lr0fm report')")
    p.set_defaults(func=cmd_compare)
