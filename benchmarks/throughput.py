"""Throughput: (a) the image tower alone, (b) lr0fm's one-pass multi-resolution evaluate, (c) the paper's way.

    python benchmarks/throughput.py --model open_clip:ViT-B-32:random --images 64 --rounds 2

(a) forward images/s on ready [B, 3, S, S] tensors; (b) ``evaluate`` on a generated JPEG folder
(decode, PIL views, normalisation, forward, top-k) in image x resolution pairs/s; (c) what the
paper's code did: one independent run per resolution, torchvision's PIL Resize(r) -> Resize(S) ->
CenterCrop chain per image per run, and the text classifier rebuilt every run.

a, b and c are measured interleaved in every round (the machine may be shared), and the medians
are printed. The 1000-class x 80-template ImageNet classifier (80,000 prompts) is timed on a
sample of prompts and extrapolated unless --full-classifier (minutes to hours on a CPU).
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
from PIL import Image


def generate_jpegs(root: Path, n: int, seed: int = 0) -> list[Path]:
    """Photo-sized JPEGs (smooth colour fields with edges, 500x375 and 375x500 like ImageNet)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = (500, 375) if i % 3 else (375, 500)
        small = rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8)
        a = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)).copy()
        a[h // 3: h // 2, :, i % 3] = 255
        path = root / f"{i:05d}.jpg"
        Image.fromarray(a).save(path, quality=90)
        paths.append(path)
    return paths


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bench_forward(model, S: int, batch: int, n_views: int, device: str = "cpu", amp: str | None = None) -> float:
    """(a) images/s of encode_image on ready normalised tensors (n_views forwards in batches)."""
    from lr0fm.evaluator import _autocast
    x = torch.randn(batch, 3, S, S, device=device)
    if torch.device(device).type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), _autocast(torch.device(device), amp):
        model.encode_image(x[:2])  # warm-up
        _sync(device)
        t = time.perf_counter()
        done = 0
        while done < n_views:
            model.encode_image(x[: min(batch, n_views - done)])
            done += min(batch, n_views - done)
        _sync(device)
    return n_views / (time.perf_counter() - t)


def text_prompts_per_s(model, prompts: list[str], batch: int = 256, device: str = "cpu") -> float:
    with torch.no_grad():
        model.encode_text(prompts[:4])
        _sync(device)
        t = time.perf_counter()
        for i in range(0, len(prompts), batch):
            model.encode_text(prompts[i:i + batch])
        _sync(device)
    return len(prompts) / (time.perf_counter() - t)


def bench_lr0fm(model, data, resolutions, batch, workers, store_root, device="cpu", amp=None,
                views=None) -> float:
    """(b) seconds of evaluate() over all resolutions, classifier already cached."""
    from lr0fm.evaluator import EvalConfig, evaluate
    from lr0fm.store import ResultsStore
    cfg = EvalConfig(resolutions=resolutions, batch_size=batch, workers=workers, progress=False, device=device,
                     amp=amp, views=views)
    store = ResultsStore(store_root)
    t = time.perf_counter()
    evaluate(model, data, cfg, store)
    return time.perf_counter() - t


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB"))


def bench_paper_way(model, paths, classifier, resolutions, batch, workers, device="cpu", amp=None) -> float:
    """(c) seconds of one independent run per resolution (images only; the classifier rebuilds are added
    by the caller): torchvision transforms as in the paper's code, decode every run."""
    from torchvision import transforms as T

    from lr0fm.evaluator import _autocast
    p = model.protocol(resolutions)
    S, bicubic = p.input_size, T.InterpolationMode.BICUBIC
    t = time.perf_counter()
    for r in resolutions:
        chain = [] if r == "hr" else [T.Resize(int(r), interpolation=bicubic)]
        tf = T.Compose(chain + [T.Resize(S, interpolation=bicubic), T.CenterCrop(S), T.ToTensor(),
                                T.Normalize(p.mean, p.std)])
        loader = torch.utils.data.DataLoader(_Files(paths, tf), batch_size=batch, num_workers=workers)
        preds = []
        with torch.no_grad(), _autocast(torch.device(device), amp):
            for x in loader:
                preds.append((model.encode_image(x.to(device)) @ classifier.to(device)).topk(5, dim=-1).indices)
        torch.cat(preds).cpu()
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="open_clip:ViT-B-32:random")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--resolutions", default="16,32,64,128,hr")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers for b and c (default: lr0fm's)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=["bf16", "fp16"], default=None)
    ap.add_argument("--views", choices=["auto", "device", "pil"], default="auto",
                    help="(b) LR views made on the device (default: on for CUDA)")
    ap.add_argument("--prompt-sample", type=int, default=256, help="prompts timed to extrapolate the classifier")
    ap.add_argument("--full-classifier", action="store_true", help="build all 80,000 prompts (slow on CPU)")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lr0fm.classifier import classifier_key
    from lr0fm.datasets.base import DatasetSpec, LabeledImages, fill_template, packaged_text
    from lr0fm.evaluator import default_workers
    from lr0fm.models import create_model
    from lr0fm.protocol import parse_resolutions

    if args.threads:
        torch.set_num_threads(args.threads)
    resolutions = parse_resolutions(args.resolutions)
    workers = default_workers(args.device) if args.workers is None else args.workers
    views = None if args.views == "auto" else args.views
    names, templates = packaged_text("imagenet1k", "classnames"), packaged_text("imagenet1k", "templates")
    model = create_model(args.model, device=args.device)
    S, R, n = model.preprocess.input_size, len(resolutions), args.images
    print(f"model {args.model} S={S}  images {n} x {R} resolutions  batch {args.batch_size}  workers {workers}  "
          f"torch threads {torch.get_num_threads()}  cpus {os.cpu_count()}  classifier {len(names)}x{len(templates)}  "
          f"device {args.device} amp {args.amp} views {args.views}")

    tmp = Path(tempfile.mkdtemp(prefix="lr0fm-bench-"))
    paths = generate_jpegs(tmp / "images", n)
    spec = DatasetSpec("bench", "all", tuple(names), tuple(templates))
    data = LabeledImages(spec, [(str(p), i % len(names)) for i, p in enumerate(paths)])
    # lr0fm caches the classifier: (b) is timed with it cached; its one build is accounted below
    with torch.no_grad():
        classifier = torch.nn.functional.normalize(torch.randn(model.encode_text(["x"]).shape[-1], len(names)), dim=0)
    key = classifier_key(model, names, templates)
    prompts = [fill_template(t, c) for c in names for t in templates]

    rows = []
    for rnd in range(args.rounds):
        store_root = tmp / f"store{rnd}"
        (store_root / "cache" / "classifiers").mkdir(parents=True)
        torch.save(classifier, store_root / "cache" / "classifiers" / f"{key}.pt")
        a = bench_forward(model, S, args.batch_size, n * R, args.device, args.amp)
        tb = bench_lr0fm(model, data, resolutions, args.batch_size, workers, store_root, args.device, args.amp,
                         views)
        tc = bench_paper_way(model, paths, classifier, resolutions, args.batch_size, workers, args.device, args.amp)
        sample = prompts if args.full_classifier else prompts[:: max(1, len(prompts) // args.prompt_sample)]
        tps = text_prompts_per_s(model, sample, device=args.device)
        rows.append((a, tb, tc, len(prompts) / tps))
        print(f"round {rnd}: (a) {a:.1f} img/s   (b) {n * R / tb:.1f} pairs/s ({tb:.1f}s)   b/a {n * R / tb / a:.3f}   "
              f"(c) images {tc:.1f}s   classifier {len(prompts) / tps:.0f}s ({tps:.1f} prompts/s)", flush=True)

    a, tb, tc, tcls = (statistics.median(col) for col in zip(*rows))
    b = n * R / tb
    print(f"\nmedians over {args.rounds} rounds (a, b, c interleaved):")
    print(f"(a) forward            {a:8.1f} images/s")
    print(f"(b) lr0fm evaluate     {b:8.1f} image x resolution pairs/s   ({tb:.1f}s)")
    ratio = statistics.median(n * R / row[1] / row[0] for row in rows)
    print(f"b/a                    {ratio:8.3f}   (median of the per-round ratios; ratio of medians {b / a:.3f})")
    print(f"(c) paper way, images  {tc:8.1f}s   c/b images only: {tc / tb:.2f}")
    print(f"classifier build       {tcls:8.1f}s  ({'measured' if args.full_classifier else 'extrapolated from a sample'})")
    print(f"time(c)/time(b)        {(tc + R * tcls) / (tb + tcls):8.2f}   "
          f"(c: {R} classifier builds; b: one build, first run)")
    print(f"time(c)/time(b) rerun  {(tc + R * tcls) / tb:8.2f}   (b: classifier from lr0fm's cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
