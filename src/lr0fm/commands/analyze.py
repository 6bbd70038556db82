"""``lr0fm analyze layers|predictions|models``: thin commands over lr0fm.analysis."""
from __future__ import annotations

import argparse

from ..metrics import AGGREGATE_NAMES, RANK_BY
from ..protocol import HR
from . import DEFAULT_MODEL, add_command, number


def add_commands(subparsers) -> None:


    p = add_command(subparsers, "analyze", help="analyses: layer-wise LR damage, semantic LR errors, "
                                              "robustness vs model properties")
    sub = p.add_subparsers(dest="analysis", required=True)

    q = add_command(sub, "layers", help="HR-vs-LR feature similarity (cosine, linear CKA) after every block/stage")
    _dataset_args(q)
    q.add_argument("--resolutions", "-r", default="16,32,64,128", help="LR sizes in px (default: %(default)s)")
    q.add_argument("--limit", type=number(least=2), default=256, help="first N images (default: %(default)s)")
    q.add_argument("--batch-size", type=number(least=1), default=16, help="images per forward (each with all its views)")
    q.add_argument("--device", default="cpu")
    q.add_argument("--lr-tokens", default=None, help="LR-TK0 token checkpoint: analyse the model with tokens on")
    q.set_defaults(func=cmd_layers)

    q = add_command(sub, "predictions", help="how semantically close LR errors are (WordNet Wu-Palmer), with a "
                                           "gallery of images right at HR and wrong at LR")
    _dataset_args(q)
    q.add_argument("--threshold", type=number(float, least=0, most=1), default=0.5,
                   help="an error is close when WuP >= this (default: %(default)s)")
    q.add_argument("--gallery", type=number(least=0), default=6,
                   help="examples per resolution in the gallery (default: %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="seed of the random-wrong-class baseline and the gallery")
    q.add_argument("--lr-tokens", default=None, help="use the predictions stored for this token checkpoint")
    q.add_argument("--wordnet", default=None, help="WordNet 3.0 dict directory (default: $LR0FM_WORDNET or "
                                                  "/usr/share/wordnet)")
    q.add_argument("--where", action="append", metavar="COLUMN=VALUE",
                   help="when several evaluations match (another --limit, --amp, templates...), use the one whose "
                        "column has this value, e.g. limit=60 or evaluation=1a2b (columns: lr0fm report --json keys)")
    q.set_defaults(func=cmd_predictions)

    q = add_command(sub, "models", help="Spearman correlation of SAR/WAR with model size, GFLOPs, data, resolution")
    q.add_argument("--source", choices=["user", "paper", "both"], default="both",
                   help="your stored results, the paper's published ones, or both (default: %(default)s)")
    q.add_argument("--metric", choices=AGGREGATE_NAMES, default=RANK_BY, help="what the scatter plots show")
    q.set_defaults(func=cmd_models)


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model name (lr0fm models)")
    p.add_argument("--dataset", "-d", default="tuxpaint", help="dataset key (lr0fm datasets)")
    p.add_argument("--data-root", default=None, help="dataset folder/file (default: $LR0FM_DATA/<key>)")
    p.add_argument("--split", default=None)
    p.add_argument("--classnames", default=None, help="file with one class name per line")


def _dataset(args):
    from ..datasets import get_dataset
    return get_dataset(args.dataset, root=args.data_root, split=args.split, classnames=args.classnames)


def _print_paths(paths: dict) -> None:
    for kind, path in paths.items():
        print(f"{kind}: {path}")


def cmd_layers(args) -> int:
    from ..errors import InputError
    from ..models import create_model
    from ..protocol import parse_resolutions
    from ..analysis import analysis_dir
    from ..analysis.layers import layer_similarity

    resolutions = [r for r in parse_resolutions(args.resolutions) if r != HR]  # HR is the reference
    if not resolutions:
        raise InputError("--resolutions needs at least one LR size in px, e.g. 16,32,64,128")
    if args.lr_tokens:
        from ..options import check_lr_tokens
        check_lr_tokens(args.lr_tokens)  # before any model is built
    from ..distributed import check_device
    device = check_device(args.device)
    data = _dataset(args)
    model = create_model(args.model, device=device)
    variant = {}
    if args.lr_tokens:
        from ..tokens import attach_checkpoint
        variant["lr_tokens"] = attach_checkpoint(model, args.lr_tokens)
    result = layer_similarity(model, data, resolutions, limit=args.limit, batch_size=args.batch_size, variant=variant)
    print(result.table())
    _print_paths(result.save(analysis_dir(args.out)))
    return 0


def cmd_predictions(args) -> int:
    from ..records import parse_where
    from ..store import ResultsStore
    from ..analysis import analysis_dir
    from ..analysis.predictions import semantic_errors

    where = parse_where(args.where)
    data = _dataset(args)
    store = ResultsStore(args.out)
    variant = {}
    if args.lr_tokens:  # results of a tokens run are recorded under the checkpoint's digest
        from pathlib import Path

        from ..errors import InputError
        from ..tokens.checkpoint import checkpoint_digest
        if not Path(args.lr_tokens).is_file():
            raise InputError(f"--lr-tokens {args.lr_tokens} does not exist; give the checkpoint used with 'lr0fm eval'")
        variant["lr_tokens"] = checkpoint_digest(args.lr_tokens)
    result = semantic_errors(store, args.model, data, threshold=args.threshold, seed=args.seed, gallery=args.gallery,
                             variant=variant, wordnet_root=args.wordnet, where=where)
    print(result.table())
    _print_paths(result.save(analysis_dir(args.out), data))
    return 0


def cmd_models(args) -> int:
    from ..store import ResultsStore
    from ..analysis import analysis_dir
    from ..analysis.models import robustness_vs_properties

    records = ResultsStore(args.out).records() if args.source in ("user", "both") else []
    result = robustness_vs_properties(records, args.source)
    print(result.table())
    _print_paths(result.save(analysis_dir(args.out), args.metric, stem=f"models_{args.source}"))
    return 0
