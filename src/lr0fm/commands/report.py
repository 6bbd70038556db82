"""lr0fm report and lr0fm metrics: stored results and accuracy tables as gamma, Gamma, SAR, WAR."""
from __future__ import annotations

from ..metrics import AGGREGATE_NAMES, RANK_BY
from . import add_command, csv_list


def cmd_report(args) -> int:
    from ..report import json_records, plot_accuracy, text_report
    from ..store import ResultsStore

    store = ResultsStore(args.out)
    if args.paper:
        from ..report.paper import paper_leaderboard
        print(paper_leaderboard(rank_by=args.rank_by, json_out=args.json))
        return 0
    from ..records import parse_where, select
    where = parse_where(args.where)  # the options before the store is read
    records = select(store.records(), where)
    if args.model:  # a model name keeps all its rows; "NAME+variant" (as report prints it) only those
        from ..records import model_name
        wanted = set(csv_list(args.model))
        records = [r for r in records if r["model"] in wanted or model_name(r) in wanted]
    if args.dataset:
        records = [r for r in records if r["dataset"] in csv_list(args.dataset)]
    store.warn_incomplete(records)
    if args.html:
        from ..report.html import write_html
        print(f"html: {write_html(records, args.html, store=store)}")
        return 0
    if args.json:
        print(json_records(records))
        return 0
    text = text_report(records)
    written = []  # files first, then the report: a file that cannot be written stops before any output
    if records and args.csv:
        written.append(f"csv: {store.export_csv(args.csv, records)}")
    if records and args.plot:
        written.append(f"plot: {plot_accuracy(records, args.plot)}")
    print("\n".join([text, *written]))
    return 0


def cmd_metrics(args) -> int:
    from ..accuracy_table import read_accuracies, read_weights
    from ..catalog import class_counts, war_weights
    from ..metrics import robustness_table
    from ..report import ranked_table, robustness_json

    rows = read_accuracies(args.accuracies, percent=args.percent)
    weights = war_weights()
    if args.weights:
        weights.update(read_weights(args.weights))
    try:
        rob = robustness_table(rows, weights, class_counts())
    except KeyError as e:
        from ..errors import InputError
        raise InputError(e.args[0]) from None
    print(robustness_json(rob) if args.json else ranked_table(rob, args.rank_by))
    return 0


def add_commands(sub) -> None:
    p = add_command(sub, "report", help="print stored results with gamma, Gamma, SAR, WAR; export, plot")
    p.add_argument("--model", default=None,
                   help="only these models, comma-separated: a name (all its variants) or NAME+variant as printed")
    p.add_argument("--dataset", default=None, help="only these datasets, comma-separated")
    p.add_argument("--json", action="store_true", help="print the records as a JSON list")
    p.add_argument("--csv", default=None, metavar="PATH", help="also export a tidy CSV here")
    p.add_argument("--plot", default=None, metavar="PATH", help="also draw accuracy vs resolution into this PNG")
    p.add_argument("--paper", action="store_true", help="the paper's published SAR/WAR leaderboard per resolution")
    p.add_argument("--rank-by", choices=AGGREGATE_NAMES, default=RANK_BY)
    p.add_argument("--html", default=None, metavar="DIR", help="write a self-contained HTML report into DIR")
    p.add_argument("--where", action="append", metavar="COLUMN=VALUE",
                   help="keep records whose column has this value, e.g. limit=none, amp=bf16, evaluation=1a2b "
                        "(repeatable; columns: lr0fm report --json keys)")
    p.set_defaults(func=cmd_report)

    p = add_command(sub, "metrics", help="SAR/WAR/gamma/Gamma from an accuracy table")
    p.add_argument("--accuracies", required=True, help="CSV: model,dataset,resolution,top1[,num_classes]")
    p.add_argument("--percent", action="store_true", help="top1 is in percent")
    p.add_argument("--weights", default=None, help="JSON object dataset -> WAR weight (overrides the published ones)")
    p.add_argument("--rank-by", choices=AGGREGATE_NAMES, default=RANK_BY)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_metrics)
