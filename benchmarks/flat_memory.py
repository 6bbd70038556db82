"""Peak memory stays flat while evaluating a large dataset.

    python benchmarks/flat_memory.py --images 50000

A ``LabeledImages`` whose loader synthesises image i from its index (no files), a tiny random
open_clip ViT (64 px), 5 resolutions. A thread samples the resident memory (VmRSS, main process
plus DataLoader workers, from /proc) every ``--every`` seconds and the script prints it against
the number of images done. After warm-up the curve should stay flat: images stream through
the DataLoader, and the only O(n) state is the [R, n, k] int32 top-k array (+ labels and ids),
5 x 50,000 x 5 x 4 B = 5 MB here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def synth_image(index: int) -> Image.Image:
    """A deterministic 96 x 80 image made from its index."""
    rng = np.random.default_rng(index)
    small = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((96, 80), Image.Resampling.BILINEAR)


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--out", default=None, help="results dir (default: a temporary one)")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lr0fm.datasets.base import DatasetSpec, LabeledImages
    from lr0fm.evaluation import EvalConfig, evaluate
    from lr0fm.models import create_model
    from lr0fm.store import ResultsStore

    tmp = Path(tempfile.mkdtemp(prefix="lr0fm-mem-"))
    cfg_path = tmp / "lr0fm-mem-tiny.json"
    cfg_path.write_text(json.dumps(TINY))
    model = create_model(f"open_clip:{cfg_path}:random")
    names = tuple(f"class {i}" for i in range(10))
    spec = DatasetSpec("synthetic", "all", names, ("a photo of a {}.",))
    data = LabeledImages(spec, [(i, i % 10) for i in range(args.images)], load=synth_image)

    done = [0]
    samples: list[tuple[float, int, int, int]] = []
    stop = threading.Event()

    def sample():
        t0, me = time.time(), os.getpid()
        while not stop.is_set():
            main_kib = rss_kib(me)
            workers_kib = sum(rss_kib(c) for c in children(me))
            samples.append((time.time() - t0, done[0], main_kib, workers_kib))
            print(f"{time.time() - t0:7.1f}s  images {done[0]:>6}  rss main {main_kib / 1024:7.1f} MiB  "
                  f"workers {workers_kib / 1024:7.1f} MiB", flush=True)
            stop.wait(args.every)

    from lr0fm.evaluation import passes  # count the images each forward batch scores
    real_score = passes._score

    def counting_score(share, views, rows, *a, **kw):
        done[0] += int((rows >= share.done).sum())
        return real_score(share, views, rows, *a, **kw)

    passes._score = counting_score
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t = time.time()
    cfg = EvalConfig(resolutions=(16, 32, 48, 56, "hr"), batch_size=args.batch_size, workers=args.workers,
                     progress=False)
    records = evaluate(model, data, cfg, ResultsStore(args.out or tmp / "results"))
    stop.set()
    thread.join()
    elapsed = time.time() - t

    warm = [s for s in samples if s[1] >= min(5_000, args.images // 10) and s[3] > 0 or
            (args.workers == 0 and s[1] >= min(5_000, args.images // 10))]
    peak = [s[2] + s[3] for s in warm] or [0]
    print(f"\n{args.images} images x 5 resolutions in {elapsed:.0f}s ({args.images / elapsed:.0f} img/s); "
          f"{len(records)} records")
    third = max(1, len(peak) // 3)
    trend = (sum(peak[-third:]) / third - sum(peak[:third]) / third) / 1024
    print(f"after warm-up (>= {min(5_000, args.images // 10)} images): total RSS (main + workers) "
          f"min {min(peak) / 1024:.1f} MiB, max {max(peak) / 1024:.1f} MiB; "
          f"trend (mean of last third - mean of first third of samples) {trend:+.1f} MiB")
    print(f"top-k array kept for predictions: {5 * args.images * 5 * 4 / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
