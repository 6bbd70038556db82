"""LR tokens on real weights, offline: train on clip-art, measure before/after on tuxpaint and
Fashion-MNIST with a paired (McNemar) test per resolution.

The offline default model ``conse-effnet-lite0`` (EfficientNet-Lite0, a CNN tower) gets additive
maps at each stage input. Training images are the drawings of Debian ``openclipart-png``
(alpha composited on white), disjoint from every evaluation set; model selection uses a held-out
part of them. Results go to OUT/results.json and OUT/results.md.

    python benchmarks/train_tokens_offline.py --out runs/lr_tokens_offline
    python benchmarks/train_tokens_offline.py --out runs/eval --eval-only CKPT --device cuda   # re-evaluate

The defaults are the variant documented in docs/lr_tk0.md; a killed run resumes when rerun.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lr0fm.classifier import build_zero_shot_classifier
from lr0fm.datasets import get_dataset
from lr0fm.datasets.base import composite_on_white
from lr0fm.evaluation import EvalConfig, predict
from lr0fm.models import create_model
from lr0fm.tokens import attach_checkpoint
from lr0fm.tokens.data import folder_images
from lr0fm.tokens.trainer import TrainConfig, train_tokens

RESOLUTIONS = (16, 32, 64, 128, "hr")
CLIPART = "/usr/share/openclipart/png"


def load_clipart(path: str, max_side: int = 448) -> Image.Image:
    """Decode, shrink very large drawings (the protocol resizes to 224 anyway), composite on white."""
    with Image.open(path) as im:
        im.draft("RGB", (max_side, max_side))
        im.load()
        if min(im.size) > max_side:
            im.thumbnail((max_side * im.size[0] // min(im.size), max_side * im.size[1] // min(im.size)),
                         Image.Resampling.BICUBIC)
        return composite_on_white(im)


def correct_matrix(model, data, classifier, n_workers: int) -> np.ndarray:
    """[R, n] bool: top-1 correct per resolution and image."""
    protocol = model.protocol(list(RESOLUTIONS))
    cfg = EvalConfig(resolutions=list(RESOLUTIONS), batch_size=32, workers=n_workers, topk=1, progress=True,
                     device=str(model.device))
    topk, valid = predict(model, data, list(range(len(data))), classifier, protocol.views_uint8, protocol,
                          len(RESOLUTIONS), cfg)
    labels = np.asarray([data.label(i) for i in range(len(data))])
    return (topk[:, :, 0] == labels[None]) & valid[None]


def mcnemar_p(before: np.ndarray, after: np.ndarray) -> tuple[int, int, float]:
    from scipy.stats import binomtest
    gained = int((~before & after).sum())
    lost = int((before & ~after).sum())
    p = binomtest(gained, gained + lost, 0.5).pvalue if gained + lost else 1.0
    return gained, lost, float(p)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="lr_tokens_offline")
    ap.add_argument("--model", default="conse-effnet-lite0")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--captions", type=int, default=12, help="images per step (a folder: one per 'caption')")
    ap.add_argument("--lr", type=float, default=3e-2)
    ap.add_argument("--grid", type=int, default=4, help="token map size per stage (0 = full HxW, 1 = per channel)")
    ap.add_argument("--buckets", default="16-24,24-32", help="LR size buckets lo-hi (hi exclusive)")
    ap.add_argument("--target", default="pooled", choices=["embedding", "pooled", "logits"],
                    help="distilled features: pooled = the 1280-d CNN features")
    ap.add_argument("--aux", default="cosine", choices=["none", "cosine", "kl"],
                    help="non-saturating term beside InfoNCE")
    ap.add_argument("--micro-batch", type=int, default=0, help="views per forward; 0 = one forward with graph")
    ap.add_argument("--val-fraction", type=float, default=0.005)
    ap.add_argument("--fashion-limit", type=int, default=None, help="first N Fashion-MNIST test images (default: all)")
    ap.add_argument("--tuxpaint-limit", type=int, default=None)
    ap.add_argument("--datasets", default="tuxpaint,fashion_mnist", help="comma-separated evaluation datasets")
    ap.add_argument("--eval-only", metavar="CKPT", help="skip training; evaluate this token checkpoint")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    unknown = set(args.datasets.split(",")) - {"tuxpaint", "fashion_mnist"}
    if unknown:
        ap.error(f"--datasets: unknown {sorted(unknown)}; use tuxpaint and/or fashion_mnist")
    if args.eval_only and not Path(args.eval_only).is_file():
        ap.error(f"--eval-only: no checkpoint at {args.eval_only}; give a .safetensors file written by train-tokens")
    torch.manual_seed(args.seed)
    out = Path(args.out)

    model = create_model(args.model, device=args.device)
    if args.eval_only:
        return evaluate(model, Path(args.eval_only), None, 0, args, argv, out)
    out.mkdir(parents=True, exist_ok=True)
    data = folder_images(CLIPART)
    data.load = load_clipart
    buckets = tuple(tuple(int(v) for v in b.split("-")) for b in args.buckets.split(","))
    cfg = TrainConfig(steps=args.steps, captions=args.captions, per_caption=1, lr=args.lr, warmup=max(1, args.steps // 20),
                      buckets=buckets, target=args.target, aux=args.aux, micro_batch=args.micro_batch or None,
                      val_fraction=args.val_fraction, val_every=max(1, args.steps // 3), save_every=20,
                      seed=args.seed, tokens={"grid": args.grid})
    started = time.time()
    best = train_tokens(model, data, cfg, out / "ckpt")
    train_minutes = (time.time() - started) / 60
    for p in model.parameters():  # training must leave the base model frozen
        assert not p.requires_grad
    return evaluate(model, best, round(train_minutes, 1), len(data), args, argv, out)


def evaluate(model, best: Path, train_minutes, train_images: int, args, argv, out: Path) -> int:
    """Top-1 before/after per resolution with McNemar tests -> OUT/results.json, OUT/results.md."""
    digest = attach_checkpoint(model, best)  # a checkpoint of another model fails here, before any work
    tokens = model._lr_tokens
    out.mkdir(parents=True, exist_ok=True)
    results = {"command": " ".join(["python", "benchmarks/train_tokens_offline.py"] + (argv or sys.argv[1:])),
               "train_minutes": train_minutes, "train_images": train_images, "config": vars(args),
               "device": str(model.device), "checkpoint_digest": digest, "datasets": {}}
    limits = {"tuxpaint": args.tuxpaint_limit, "fashion_mnist": args.fashion_limit}
    for key in args.datasets.split(","):
        limit = limits[key]
        ds = get_dataset(key)
        if limit is not None:
            ds = ds.subset(range(min(limit, len(ds))))
        classifier = build_zero_shot_classifier(model, ds.spec.classnames, ds.spec.templates)
        base_file = out / f"base_{key}_{len(ds)}.npy"
        if base_file.is_file():
            before = np.load(base_file)
        else:
            with tokens.disabled():  # exactly the base model
                before = correct_matrix(model, ds, classifier, args.workers)
            np.save(base_file, before)
        after = correct_matrix(model, ds, classifier, args.workers)
        np.save(out / f"after_{key}_{len(ds)}.npy", after)  # per-image outcomes, for audits
        rows = []
        for j, r in enumerate(RESOLUTIONS):
            g, l, p = mcnemar_p(before[j], after[j])
            rows.append({"resolution": r, "before": float(before[j].mean()), "after": float(after[j].mean()),
                         "gained": g, "lost": l, "p_mcnemar": p})
        results["datasets"][key] = {"n": len(ds), "rows": rows}
        (out / "results.json").write_text(json.dumps(results, indent=1))
    lines = []
    for key, res in results["datasets"].items():
        lines += [f"### {key} (n = {res['n']})", "", "| res | before | after | Δ (pts) | gained/lost | McNemar p |",
                  "|---|---|---|---|---|---|"]
        for row in res["rows"]:
            lines.append(f"| {row['resolution']} | {100 * row['before']:.1f} | {100 * row['after']:.1f} | "
                         f"{100 * (row['after'] - row['before']):+.1f} | {row['gained']}/{row['lost']} | "
                         f"{row['p_mcnemar']:.3g} |")
        lines.append("")
    (out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"training: {train_minutes} min; checkpoint {best} (digest {digest})")
    return 0


if __name__ == "__main__":
    from lr0fm.errors import USER_ERRORS
    try:
        sys.exit(main())
    except USER_ERRORS as e:  # one line, like the lr0fm CLI
        print(f"train_tokens_offline: error: {e}", file=sys.stderr)
        sys.exit(2)
