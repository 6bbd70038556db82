"""One pass for many models against one pass per model, and the sum of their bare forwards.

    python benchmarks/many_models.py --device cuda --amp bf16 --images 2048 --batch-size 256 \\
        --models open_clip:ViT-B-32:random,open_clip:ViT-B-16:random,open_clip:RN50:random
    python benchmarks/many_models.py --images 64 --threads 1 --models open_clip:A.json:random,open_clip:B.json:random

``lr0fm eval -m M1,M2,M3`` (``lr0fm.runner.run_groups``) decodes each image once, makes its views
once per group of models with the same pixels, and runs every model on them; a model zoo should
cost about the sum of its forwards. Timed on one generated JPEG folder (500x375 like ImageNet),
classifiers cached beforehand, fresh results folders every time, in each round:

* one pass: ``run_groups`` with all models in one call;
* separate: one ``run_groups`` call per model;
* forwards: each model's bare image-tower forward on ready tensors (as benchmarks/throughput.py's (a)),
  for all image x resolution views, summed.

The parts alternate their order between rounds (the machine may be shared); medians and the spread
are printed, and the records of the one pass are checked to equal the separate runs' (all fields but
``run``, and the predictions).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import (RESULT, _sync, bench_forward, cache_classifier, generate_jpegs, jpeg_dataset,  # noqa: E402
                        random_classifier, spread)


def run_pass(models, data, resolutions, root: Path, classifiers, options: dict) -> tuple[float, list[dict]]:
    """(seconds, records) of one run_groups call over ``models`` into a fresh results folder."""
    from lr0fm.store import ResultsStore
    from lr0fm.runner import Group, run_groups

    for model in models:
        cache_classifier(root, model, classifiers[id(model)], data.spec.classnames, data.spec.templates)
    store = ResultsStore(root)
    device = options["device"]
    _sync(device)
    t = time.perf_counter()
    records = run_groups([Group(model, data) for model in models], resolutions, store, **options)
    _sync(device)
    return time.perf_counter() - t, records


def same_records(one: list[dict], separate: list[dict], one_root: Path, separate_roots: list[Path]) -> bool:
    """The one pass wrote what the separate passes wrote: every record field but ``run``, and the predictions."""
    from lr0fm.store import ResultsStore

    strip = lambda r: {k: v for k, v in r.items() if k != "run"}  # noqa: E731
    by_cell = {r["cell"]: r for r in separate}
    if sorted(by_cell) != sorted(r["cell"] for r in one):
        return False
    stores = [ResultsStore(one_root)] + [ResultsStore(root) for root in separate_roots]
    for record in one:
        if strip(record) != strip(by_cell[record["cell"]]):
            return False
        mine = stores[0].load_predictions(record["cell"])
        theirs = next(s.load_predictions(record["cell"]) for s in stores[1:] if s.get(record["cell"]))
        if any(not np.array_equal(mine[k], theirs[k]) for k in mine):
            return False
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="open_clip:ViT-B-32:random,open_clip:ViT-B-16:random,open_clip:RN50:random",
                    help="comma-separated model names (all kept in memory)")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--jpeg-dir", type=Path, default=None, help="folder for the generated JPEGs, kept and reused")
    ap.add_argument("--resolutions", default="16,32,64,128,hr")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: lr0fm's)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=["bf16", "fp16"], default=None)
    ap.add_argument("--views", choices=["auto", "device", "pil"], default="auto")
    ap.add_argument("--decoder", choices=["auto", "device", "pil"], default="auto")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lr0fm.datasets.base import packaged_text
    from lr0fm.filedigest import file_digests
    from lr0fm.models import create_model
    from lr0fm.protocol import parse_resolutions

    if args.threads:
        torch.set_num_threads(args.threads)
    resolutions = parse_resolutions(args.resolutions)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if len(names) < 2:
        raise SystemExit("many_models: give at least two models with --models M1,M2")
    started = time.perf_counter()
    models = [create_model(name, device=args.device) for name in names]
    built = time.perf_counter() - started
    n, R = args.images, len(resolutions)
    tmp = Path(tempfile.mkdtemp(prefix="lr0fm-many-"))
    paths = generate_jpegs(args.jpeg_dir or tmp / "images", n)
    classnames, templates = packaged_text("imagenet1k", "classnames"), packaged_text("imagenet1k", "templates")
    data = jpeg_dataset(paths, classnames, templates, name="many-models")
    classifiers = {id(m): random_classifier(m, len(classnames), seed=i) for i, m in enumerate(models)}
    file_digests(paths)  # hashed once per machine (cached): not a pass's cost
    options = dict(device=args.device, batch_size=args.batch_size, workers=args.workers, amp=args.amp,
                   views=None if args.views == "auto" else args.views,
                   decoder=None if args.decoder == "auto" else args.decoder, progress=False)
    print(f"{len(models)} models built in {built:.0f}s: {', '.join(names)}; {n} JPEGs x {R} resolutions; batch "
          f"{args.batch_size}; device {args.device} amp {args.amp}; torch threads {torch.get_num_threads()}; "
          f"cpus {os.cpu_count()}", flush=True)
    # untimed warm-up of every model's path (first worker start, CUDA kernels, nvjpeg, state digests)
    run_pass(models, data.subset(range(min(n, args.batch_size))), resolutions, tmp / "warm-up", classifiers, options)

    rows, identical = [], None
    for rnd in range(args.rounds):
        def one():
            return run_pass(models, data, resolutions, tmp / f"one{rnd}", classifiers, options)

        def separate():
            runs = [run_pass([m], data, resolutions, tmp / f"sep{rnd}-{i}", classifiers, options)
                    for i, m in enumerate(models)]
            return sum(t for t, _ in runs), [r for _, records in runs for r in records]

        def forwards():
            return sum(n * R / bench_forward(m, m.preprocess.input_size, args.batch_size, n * R, args.device, args.amp)
                       for m in models), None

        parts = {"one pass": one, "separate": separate, "forwards": forwards}
        order = list(parts) if rnd % 2 == 0 else list(parts)[::-1]
        got = {k: parts[k]() for k in order}
        (t_one, rec_one), (t_sep, rec_sep), (t_fwd, _) = got["one pass"], got["separate"], got["forwards"]
        if identical is None:
            identical = same_records(rec_one, rec_sep, tmp / f"one{rnd}",
                                     [tmp / f"sep{rnd}-{i}" for i in range(len(models))])
        views_path = {r["run"]["views"] for r in rec_one}
        rows.append((t_one, t_sep, t_fwd))
        print(f"round {rnd}: one pass {t_one:.2f}s   {len(models)} separate passes {t_sep:.2f}s   separate/one "
              f"{t_sep / t_one:.2f}   sum of bare forwards {t_fwd:.2f}s   one pass/forwards {t_one / t_fwd:.2f}   "
              f"(views {', '.join(sorted(views_path))}; models in pass {rec_one[0]['run']['models_in_pass']})",
              flush=True)

    t_one, t_sep, t_fwd = (statistics.median(col) for col in zip(*rows))
    speedups = [s / o for o, s, _ in rows]
    print(f"\nmedians over {args.rounds} round(s): one pass {t_one:.2f}s, separate {t_sep:.2f}s, "
          f"sum of bare forwards {t_fwd:.2f}s; records of the one pass identical to the separate runs': "
          f"{'yes' if identical else 'NO'}")
    print(f"{RESULT} many models ({len(models)}, {n} JPEGs x {R} res, {args.device} {args.amp or 'fp32'}): "
          f"separate/one pass {statistics.median(speedups):.2f} (spread {spread(speedups)})  one pass {t_one:.2f}s  "
          f"separate {t_sep:.2f}s  sum of bare forwards {t_fwd:.2f}s  one pass/forwards {t_one / t_fwd:.2f} "
          f"(target <= 1.2)  "
          f"records identical {'yes' if identical else 'NO'}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
