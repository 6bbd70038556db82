"""Throughput: (a) the image tower alone, (b) lr0fm's one-pass multi-resolution evaluate, (c) the paper's way.

    python benchmarks/throughput.py --model open_clip:ViT-B-32:random --images 64 --rounds 2
    python benchmarks/throughput.py --device cuda --amp bf16 --images 8192 --batch-size 256 \\
        --views device --decoder device --skip-paper          # the GPU check's b/a

(a) forward images/s on ready [B, 3, S, S] tensors; (b) ``evaluate`` on a generated JPEG folder
(read or decode, views, normalisation, forward, top-k) in image x resolution pairs/s, with the
classifier cached beforehand; (c) what the paper's code did: one independent run per resolution,
torchvision's PIL Resize(r) -> Resize(S) -> CenterCrop chain per image per run, and the text
classifier rebuilt every run. ``--views`` / ``--decoder`` choose (b)'s path (EvalConfig; default:
device views and device JPEG decoding on CUDA, PIL on CPU). ``--profile``: one more (b) pass after
the rounds, its stage times (lr0fm.evaluation.stages) printed as ``lr0fm eval --profile`` prints them.

a, b and c are measured interleaved in every round (the machine may be shared), their order
alternating between rounds; medians and the spread are printed. (b) can never beat the bare forward
it contains: a round with b/a > 1 saw the load change between its parts, and is flagged as a
measurement fault and left out of the ratio instead of being printed as a result. The 1000-class
x 80-template ImageNet classifier (80,000 prompts) is timed on a sample of prompts and
extrapolated unless --full-classifier (minutes to hours on a CPU).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from lr0fm.evaluation.calibrate import generate_jpegs, jpeg_dataset  # noqa: F401  (the scripts' JPEGs; re-exported)

RESULT = "RESULT"  # prefix of the lines benchmarks/gpu_check.sh collects into its summary


def model_label(spec: str) -> str:
    """A model spec's short name for RESULT lines: open_clip:ViT-B-32:random -> ViT-B-32, a config
    file's stem for open_clip:/path/cfg.json:random."""
    parts = spec.split(":")
    return Path(parts[1]).stem if len(parts) >= 3 else spec


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bench_forward(model, S: int, batch: int, n_views: int, device: str = "cpu", amp: str | None = None) -> float:
    """(a) images/s of encode_image on ready normalised tensors (n_views forwards in batches),
    laid out as evaluate lays them out (channels-last model and inputs on CUDA)."""
    from lr0fm.evaluation.passes import _autocast
    x = torch.randn(batch, 3, S, S, device=device)
    if torch.device(device).type == "cuda":
        model.to(memory_format=torch.channels_last)
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
                views=None, decoder=None, profile=False, records=None) -> float:
    """(b) seconds of evaluate() over all resolutions (the classifier should be cached: ``cache_classifier``);
    ``profile``: time the device stages too (run.stages); ``records``: a list the records are added to."""
    from lr0fm.evaluation import EvalConfig, evaluate
    from lr0fm.store import ResultsStore
    cfg = EvalConfig(resolutions=resolutions, batch_size=batch, workers=workers, progress=False, device=device,
                     amp=amp, views=views, decoder=decoder, profile=profile)
    store = ResultsStore(store_root)
    _sync(device)
    t = time.perf_counter()
    got = evaluate(model, data, cfg, store)
    _sync(device)
    if records is not None:
        records.extend(got)
    return time.perf_counter() - t


def cache_classifier(store_root: Path, model, classifier: torch.Tensor, classnames, templates) -> None:
    """Put ``classifier`` in a results folder's classifier cache, where evaluate looks for it."""
    from lr0fm.classifier import classifier_key
    from lr0fm.store import ResultsStore

    cache = ResultsStore(store_root).classifier_cache
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(classifier, cache / f"{classifier_key(model, classnames, templates)}.pt")


def random_classifier(model, num_classes: int, seed: int = 0) -> torch.Tensor:
    """A [D, C] unit-column classifier: the text side is not what is measured here."""
    with torch.no_grad():
        dim = model.encode_text(["x"]).shape[-1]
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(dim, num_classes, generator=g), dim=0)


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

    from lr0fm.evaluation.passes import _autocast
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
    _sync(device)
    return time.perf_counter() - t


def spread(values) -> str:
    return f"{min(values):.3f}-{max(values):.3f}" if values else "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="open_clip:ViT-B-32:random")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--jpeg-dir", type=Path, default=None,
                    help="folder for the generated JPEGs, kept and reused (default: a temporary folder)")
    ap.add_argument("--resolutions", default="16,32,64,128,hr")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers for b and c (default: lr0fm's)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=["bf16", "fp16"], default=None)
    ap.add_argument("--views", choices=["auto", "device", "pil"], default="auto",
                    help="(b) where views are made (default: device on CUDA, pil on CPU)")
    ap.add_argument("--decoder", choices=["auto", "device", "pil"], default="auto",
                    help="(b) who decodes the JPEGs (default: the device when views are made on CUDA)")
    ap.add_argument("--skip-paper", action="store_true", help="leave out (c) and the classifier timing")
    ap.add_argument("--prompt-sample", type=int, default=256, help="prompts timed to extrapolate the classifier")
    ap.add_argument("--full-classifier", action="store_true", help="build all 80,000 prompts (slow on CPU)")
    ap.add_argument("--target", type=float, default=0.90, help="the b/a the RESULT line names as the target")
    ap.add_argument("--profile", action="store_true",
                    help="after the rounds, one more (b) pass with --profile (device stages timed): its stage table")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lr0fm.datasets.base import fill_template, packaged_text
    from lr0fm.evaluation import EvalConfig, default_workers, plan
    from lr0fm.filedigest import file_digests
    from lr0fm.models import create_model
    from lr0fm.protocol import parse_resolutions

    if args.threads:
        torch.set_num_threads(args.threads)
    resolutions = parse_resolutions(args.resolutions)
    workers = default_workers(args.device) if args.workers is None else args.workers
    views = None if args.views == "auto" else args.views
    decoder = None if args.decoder == "auto" else args.decoder
    names, templates = packaged_text("imagenet1k", "classnames"), packaged_text("imagenet1k", "templates")
    model = create_model(args.model, device=args.device)
    S, R, n = model.preprocess.input_size, len(resolutions), args.images

    tmp = Path(tempfile.mkdtemp(prefix="lr0fm-bench-"))
    started = time.perf_counter()
    paths = generate_jpegs(args.jpeg_dir or tmp / "images", n)
    made = time.perf_counter() - started
    data = jpeg_dataset(paths, names, templates)
    classifier = random_classifier(model, len(names))
    prompts = [fill_template(t, c) for c in names for t in templates]
    file_digests(paths)  # the data identity hashes each file once per machine (cached): not a pass's cost
    how = plan(model, data, EvalConfig(resolutions=resolutions, device=args.device, views=views,
                                       decoder=decoder))
    print(f"model {args.model} S={S}  images {n} x {R} resolutions  batch {args.batch_size}  workers {workers}  "
          f"torch threads {torch.get_num_threads()}  cpus {os.cpu_count()}  classifier {len(names)} classes (cached)  "
          f"device {args.device} amp {args.amp}  (b): views {how.views}, decoder {how.decoder}  "
          f"({n} JPEGs ready in {made:.1f}s)", flush=True)
    # untimed warm-up of (b)'s path: first worker start, CUDA kernels, nvjpeg handles
    warm = tmp / "warm-up"
    cache_classifier(warm, model, classifier, names, templates)
    bench_lr0fm(model, data.subset(range(min(n, args.batch_size))), resolutions, args.batch_size, workers, warm,
                args.device, args.amp, views, decoder)

    rows = []
    for rnd in range(args.rounds):
        store_root = tmp / f"store{rnd}"
        cache_classifier(store_root, model, classifier, names, templates)
        parts = {
            "a": lambda: bench_forward(model, S, args.batch_size, n * R, args.device, args.amp),
            "b": lambda: bench_lr0fm(model, data, resolutions, args.batch_size, workers, store_root, args.device,
                                     args.amp, views, decoder),
        }
        if not args.skip_paper:
            parts["c"] = lambda: bench_paper_way(model, paths, classifier, resolutions, args.batch_size, workers,
                                                 args.device, args.amp)
        order = list(parts) if rnd % 2 == 0 else list(parts)[::-1]
        got = {k: parts[k]() for k in order}
        a, tb = got["a"], got["b"]
        tc = got.get("c", float("nan"))
        tcls = float("nan")
        if not args.skip_paper:
            sample = prompts if args.full_classifier else prompts[:: max(1, len(prompts) // args.prompt_sample)]
            tcls = len(prompts) / text_prompts_per_s(model, sample, device=args.device)
        ratio = n * R / tb / a
        rows.append((a, tb, tc, tcls, ratio))
        fault = "   MEASUREMENT FAULT (b/a > 1: the load changed within the round; left out)" if ratio > 1 else ""
        print(f"round {rnd} ({'/'.join(order)}): (a) {a:.1f} img/s   (b) {n * R / tb:.1f} pairs/s ({tb:.2f}s)   "
              f"b/a {ratio:.3f}" + ("" if args.skip_paper else f"   (c) images {tc:.1f}s   classifier {tcls:.0f}s")
              + fault, flush=True)

    if args.profile:  # not in the ratios: CUDA events are recorded in this pass
        from lr0fm.evaluation.stages import stage_table
        store_root = tmp / "profiled"
        cache_classifier(store_root, model, classifier, names, templates)
        profiled = []
        bench_lr0fm(model, data, resolutions, args.batch_size, workers, store_root, args.device, args.amp, views,
                    decoder, profile=True, records=profiled)
        print("\n(b) once more with --profile (not in the ratios):\n" + stage_table(profiled), flush=True)
    good = [row for row in rows if row[4] <= 1]
    a, tb, tc, tcls = (statistics.median(col) for col in list(zip(*rows))[:4])
    print(f"\nmedians over {args.rounds} rounds (parts interleaved, order alternating):")
    print(f"(a) forward            {a:8.1f} images/s   spread {spread([r[0] for r in rows])}")
    print(f"(b) lr0fm evaluate     {n * R / tb:8.1f} image x resolution pairs/s   ({tb:.2f}s)")
    if good:
        ratios = [r[4] for r in good]
        print(f"b/a                    {statistics.median(ratios):8.3f}   (median of {len(good)} valid rounds; "
              f"spread {spread(ratios)}; {len(rows) - len(good)} faulty)")
        print(f"{RESULT} b/a {model_label(args.model)} "
              f"{statistics.median(ratios):.3f} (spread {spread(ratios)}, {len(good)} rounds; "
              f"target >= {args.target:.2f})"
              f"  a {a:.0f} views/s  b {n * R / tb:.0f} pairs/s  {n} JPEGs x {R} res  views {how.views} "
              f"decoder {how.decoder}  {args.device} {args.amp or 'fp32'}")
    else:
        print("b/a                    no valid round: every round had b/a > 1 (a shared machine's load moved); rerun")
        print(f"{RESULT} b/a {model_label(args.model)} MEASUREMENT FAULT: no valid round")
    if not args.skip_paper:
        print(f"(c) paper way, images  {tc:8.1f}s   c/b images only: {tc / tb:.2f}")
        print(f"classifier build       {tcls:8.1f}s  "
              f"({'measured' if args.full_classifier else 'extrapolated from a sample'})")
        print(f"time(c)/time(b)        {(tc + R * tcls) / (tb + tcls):8.2f}   "
              f"(c: {R} classifier builds; b: one build, first run)")
        print(f"time(c)/time(b) rerun  {(tc + R * tcls) / tb:8.2f}   (b: classifier from lr0fm's cache)")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
