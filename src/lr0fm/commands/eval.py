"""lr0fm eval: models x datasets at several resolutions."""
from __future__ import annotations

import argparse

from . import add_command, csv_list


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
                   help="ALBEF/BLIP .pth: unpickle beyond tensors and plain data (runs code from the file; "
                        "only for a file you trust)")


def cmd_eval(args) -> int:
    from ..datasets import get_dataset
    from ..protocol import parse_resolutions
    from ..report import text_report
    from ..store import ResultsStore

    from ..errors import InputError
    from ..evaluation import EvalConfig

    resolutions = parse_resolutions(args.resolutions)
    EvalConfig(resolutions=resolutions, batch_size=args.batch_size, limit=args.limit, workers=args.workers,
               checkpoint_every=args.checkpoint_every, amp=args.amp, views=args.views, decoder=args.decoder)
    store = ResultsStore(args.out)
    # Validate every dataset before any model is built or anything is written.
    options = {"download": args.download} if getattr(args, "download", None) else {}
    names = csv_list(args.dataset)
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
    from .. import distributed
    from ..runner import Group, run_groups
    from ..engines import engine_from_args
    engine = engine_from_args(args)
    device = distributed.init(args.device, amp=args.amp) if engine is None else engine.device(args.device)
    groups = [Group(name, data, args.lr_tokens, args.sr, args.trust_checkpoint)
              for name in csv_list(args.model) for data in datasets]
    try:
        protocol = {"protocol": args.protocol, "resize_mode": args.resize_mode, "input_size": args.input_size,
                    "interpolation": args.interpolation}
        records = run_groups(groups, resolutions, store, device=device, protocol=protocol, batch_size=args.batch_size,
                             workers=args.workers, amp=args.amp, limit=args.limit, progress=not args.no_progress,
                             checkpoint_every=args.checkpoint_every,
                             views=args.views, decoder=args.decoder, engine=engine)
    finally:
        distributed.shutdown()
    if distributed.is_main():
        print(text_report(records))
        print(f"results: {store.root}")
    return 0


def add_commands(sub) -> None:
    p = add_command(sub, "eval", help="evaluate models on datasets at several resolutions")
    add_eval_args(p)
    from ..engines import add_engine_args
    add_engine_args(p)
    p.set_defaults(func=cmd_eval)
