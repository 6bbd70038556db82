"""lr0fm eval: models x datasets at several resolutions."""
from __future__ import annotations

import argparse
import time

from ..options import RunOptions, add_arguments
from . import DEFAULT_MODEL, add_command, csv_list


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model name(s), comma-separated (lr0fm models)")
    p.add_argument("--dataset", "-d", default="tuxpaint", help="dataset key(s), comma-separated (lr0fm datasets)")
    p.add_argument("--data-root", default=None, help="dataset folder/file (default: $LR0FM_DATA/<key>)")
    p.add_argument("--split", default=None)
    p.add_argument("--download", nargs="?", const="hub", choices=["hub", "torchvision"], default=None,
                   help="a paper dataset whose files are not under --data-root: read its hub copy (default; "
                        "its dataset card under catalog/datasets/, the record says whether it is the paper's split) or fetch "
                        "the original files there with torchvision where it can (needs network)")
    p.add_argument("--classnames", default=None, help="file with one class name per line")
    p.add_argument("--templates", default=None, help="file with one prompt template per line ({} = class name)")
    p.add_argument("--name", default=None,
                   help="what reports call the dataset (default: its key; your own data: the folder or file stem)")
    p.add_argument("--image-column", default=None, help="hfds: the image column (default: the one Image feature)")
    p.add_argument("--label-column", default=None, help="hfds: the label column (default: the one ClassLabel feature)")
    add_arguments(p)


def cmd_eval(args) -> int:
    from ..datasets import get_dataset
    from ..errors import InputError
    from ..report import text_report
    from ..store import ResultsStore

    from ..engines import engine_from_args

    options = RunOptions.from_args(args)  # every option's checks, before anything is built or written
    engine = engine_from_args(args)  # the engine options' checks too
    store = ResultsStore(args.out)
    # Validate every dataset before any model is built or anything is written.
    download = {"download": args.download} if getattr(args, "download", None) else {}
    names = csv_list(args.dataset)
    if args.name and len(names) > 1:
        raise InputError("--name names one dataset; give one --dataset with it")
    columns = {k: v for k, v in (("image_column", getattr(args, "image_column", None)),
                                 ("label_column", getattr(args, "label_column", None))) if v}
    if columns and not all(d.partition(":")[0] == "hfds" for d in names):
        raise InputError("--image-column / --label-column apply to hfds: datasets only; drop them for the others")
    datasets = [get_dataset(d, root=args.data_root, split=args.split, classnames=args.classnames,
                            templates=args.templates, name=args.name, **download, **columns) for d in names]
    # One group per (model, dataset); under torchrun the groups or their images are split over
    # the ranks (lr0fm.distributed) and rank 0 prints.
    from .. import distributed
    from ..runner import Group, run_groups
    device = distributed.init(options.device, amp=options.amp) if engine is None else engine.device(options.device)
    groups = [Group(name, data, options.lr_tokens, options.sr, options.trust_checkpoint)
              for name in csv_list(args.model) for data in datasets]
    started = time.time()
    try:
        records = run_groups(groups, options.resolutions, store, device=device, protocol=options.protocol_options(),
                             engine=engine, **options.pass_options())
    finally:
        distributed.shutdown()
    if distributed.is_main():
        print(text_report(records))
        if options.profile:
            from ..evaluation.stages import stage_table
            print(stage_table(records, since=started))
        print(f"results: {store.root}")
    return 0


def add_commands(sub) -> None:
    p = add_command(sub, "eval", help="evaluate models on datasets at several resolutions")
    add_eval_args(p)
    from ..engines import add_engine_args
    add_engine_args(p)
    p.set_defaults(func=cmd_eval)
