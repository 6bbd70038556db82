"""lr0fm against CLIP_benchmark on the same work: time(peer, 5 runs) / time(lr0fm, 1 pass).

    python benchmarks/vs_clip_benchmark.py              # 230 TuxPaint photos, 3 rounds (~20 min on 2 quiet cores)
    python benchmarks/vs_clip_benchmark.py --quick      # 32 photos, 2 rounds: a smoke run (~4 min)
    python benchmarks/vs_clip_benchmark.py --profile    # where lr0fm's pass spends its time, against the bare forward
    python benchmarks/vs_clip_benchmark.py --arch ViT-S-32 --workers 1   # a cheaper forward (~4x fewer FLOPs)

Same images, checkpoint and resolutions on both sides:

* images: the TuxPaint photo stamps (``lr0fm.datasets.get_dataset("tuxpaint")``), decoded the same way
  (``composite_on_white(data.load_image(i))``);
* model: one random-weight open_clip ViT-B-32 (``--arch``; ``torch.manual_seed(0)``), saved to a
  temporary checkpoint and loaded by both (lr0fm as ``open_clip:ViT-B-32:/tmp/.../ckpt.pt``); nothing is
  downloaded;
* text classifiers: built by each side before any timing (lr0fm's comes from its cache);
* peer: CLIP_benchmark 1.6.2 (PyPI ``clip-benchmark``) ``run_classification`` once per resolution
  (5 runs), 1 DataLoader worker, batch 32, fp32 (``amp=False``: its CLI default ``--amp`` is bf16
  autocast, which on a CPU without bf16 units is several times slower and not lr0fm's numerics).
  HR: open_clip's own eval preprocess; 16/32/64/128: the LR0.FM authors' chain Resize(r, bicubic)
  -> Resize(224, bicubic) -> CenterCrop(224) -> RGB -> ToTensor -> Normalize;
* lr0fm: ``lr0fm.evaluate`` (what ``lr0fm eval`` runs) with 16/32/64/128/hr in one pass, into a
  fresh results folder each time (nothing skipped), ``workers=1`` and ``workers=0``;
* bare: the model's ``encode_image`` over the same views made beforehand (batch 32, no loader):
  the floor both paths sit on.

The machine may be shared, so the parts alternate in short slices of the images (``--slice-images``,
a multiple of the batch size so every forward batch is the one of a whole run; rotating order) and
every part of a round sees about the same load. Per-round ratios are reported as median [min-max],
in wall seconds and in CPU seconds (this process and its DataLoader workers: far less sensitive to
other processes than wall time). A path faster than the bare forward of its own views (path/bare
below 1 by more than its spread plus a 3% timing tolerance) is a measurement fault, flagged instead
of printed as a result.
Slicing pays each part's per-call cost (worker start, set-up) once per slice: it is measured and
the ratio of whole runs is printed next to it.

On a GPU (``--device cuda``, benchmarks/gpu_check.sh step 7) the parts are whole runs over generated
photo-sized JPEGs (``--jpeg-dir``, ``--images``; ImageNet's 1000 class names and 80 templates, fewer with
``--classes`` / ``--templates``), with no bare forward (gpu_check.sh's step 3 measures lr0fm against it): each side
with its own defaults on that device, on the same checkpoint, batch size and worker count. The
peer (``run_classification``) decodes with PIL and makes its views in its DataLoader workers,
copies each batch's logits to the host, once per resolution; lr0fm runs one pass with its CUDA
defaults (JPEGs decoded on the device, views made there). ``--peer-amp`` is CLIP_benchmark's CLI
default (``torch.autocast(device)``: fp16 on CUDA); ``--amp fp16`` gives lr0fm the same. Top-1
agreement is printed, not required: nvjpeg and PIL decode a few levels apart (docs/performance.md).

``--profile`` runs lr0fm's pass under cProfile in rounds with the bare forward, split into forward /
prepare (normalisation, copies, top-k) / loader wait / other.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # run_classification's progress bar

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESOLUTIONS = [16, 32, 64, 128, "hr"]
TIMING_TOLERANCE = 0.03  # two timings of the same work on this 2-core VM differ by up to ~3% even when quiet
ARCH = "ViT-B-32"  # the headline; --arch for others (a cheaper forward makes the saved decodes count more)


# -- set-up -----------------------------------------------------------------------------------------
def make_checkpoint(folder: Path, arch: str) -> Path:
    """One random-weight open_clip checkpoint both sides load."""
    import logging

    import open_clip
    torch.manual_seed(0)
    logging.disable(logging.WARNING)  # open_clip's "no pretrained weights loaded": that is the point
    try:
        model = open_clip.create_model(arch, pretrained=None)
    finally:
        logging.disable(logging.NOTSET)
    path = folder / f"{arch}-random.pt"
    torch.save(model.state_dict(), path)
    return path


class PeerImages(torch.utils.data.Dataset):
    """What CLIP_benchmark's loader yields: (transformed image, label), decoded as lr0fm decodes."""

    def __init__(self, data, indices, transform):
        self.data, self.indices, self.transform = data, list(indices), transform

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        from lr0fm.images import composite_on_white
        index = self.indices[i]
        return self.transform(composite_on_white(self.data.load_image(index))), self.data.label(index)


def peer_transforms(preprocess, size: int, mean, std) -> dict:
    """resolution -> transform: open_clip's preprocess for HR, the authors' chain for LR."""
    from torchvision import transforms as T
    bicubic = T.InterpolationMode.BICUBIC
    out = {"hr": preprocess}
    for r in RESOLUTIONS:
        if r != "hr":
            out[r] = T.Compose([T.Resize(r, interpolation=bicubic), T.Resize(size, interpolation=bicubic),
                                T.CenterCrop(size), T.Lambda(lambda im: im.convert("RGB")), T.ToTensor(),
                                T.Normalize(mean, std)])
    return out


def tuxpaint_photos(n_images: int):
    import lr0fm
    data = lr0fm.get_dataset("tuxpaint")
    return data.subset(range(min(n_images, len(data))))


def generated_jpegs(folder: Path, n_images: int, n_classes: int, n_templates: int):
    """``n_images`` photo-sized JPEGs (lr0fm calibrate's), labelled over the first ``n_classes`` of
    ImageNet's 1000 classes, with the first ``n_templates`` of its 80 templates."""
    from lr0fm.datasets.base import packaged_text
    from lr0fm.evaluation.calibrate import generate_jpegs, jpeg_dataset
    return jpeg_dataset(generate_jpegs(folder, n_images), packaged_text("imagenet1k", "classnames")[:n_classes],
                        packaged_text("imagenet1k", "templates")[:n_templates], "generated")


class Bench:
    """Both sides set up on one checkpoint and one dataset; ``bare``: also every view made and
    normalised beforehand, for the bare forward (CPU sizes: [n, 5, 3, S, S] float32 in memory)."""

    def __init__(self, data, batch_size: int, tmp: Path, peer_amp: bool, arch: str = ARCH, device: str = "cpu",
                 amp: str | None = None, peer_workers: int = 1, bare: bool = True):
        import open_clip
        from clip_benchmark.metrics.zeroshot_classification import zero_shot_classifier

        import lr0fm
        from lr0fm.images import composite_on_white

        self.tmp, self.batch_size, self.peer_amp, self.device, self.amp = tmp, batch_size, peer_amp, device, amp
        self.peer_workers = peer_workers
        ckpt = make_checkpoint(tmp, arch)
        self.data = data
        self.model = lr0fm.create_model(f"open_clip:{arch}:{ckpt}", device=device)
        self.peer, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=str(ckpt), device=device)
        self.peer.eval()  # as clip_benchmark's CLI does
        protocol = self.model.protocol(RESOLUTIONS)
        self.transforms = peer_transforms(preprocess, protocol.input_size, protocol.mean, protocol.std)
        classnames, templates = list(self.data.spec.classnames), list(self.data.spec.templates)
        self.peer_classifier = zero_shot_classifier(self.peer, open_clip.get_tokenizer(arch), classnames,
                                                    [t.replace("{}", "{c}") for t in templates], device,
                                                    amp=peer_amp)
        # lr0fm builds and caches its classifier on a first call; each timed call copies that cache
        self.seed_store = tmp / "seed-store"
        lr0fm.evaluate(self.model, self.data.subset([0]), ["hr"], self.seed_store, workers=0, progress=False,
                       device=device, amp=amp)
        self.views = None
        if bare:  # the bare forward's input: every view of every image, made and normalised beforehand
            views = np.stack([protocol.views_uint8(composite_on_white(self.data.load_image(i)))
                              for i in range(len(self.data))])  # [n, R, S, S, 3]
            self.views = protocol.normalize_batch(torch.from_numpy(views))  # [n, R, 3, S, S]
        self.calls = 0

    # -- the measured parts (each over a slice of the images) ------------------------------------
    def peer_part(self, rows: list[int]) -> dict:
        from clip_benchmark.metrics.zeroshot_classification import run_classification
        top1 = {}
        for r in RESOLUTIONS:
            loader = torch.utils.data.DataLoader(PeerImages(self.data, rows, self.transforms[r]),
                                                 batch_size=self.batch_size, num_workers=self.peer_workers)
            logits, _ = run_classification(self.peer, self.peer_classifier, loader, self.device, amp=self.peer_amp)
            top1[r] = logits.argmax(-1).numpy()
        return top1

    def lr0fm_part(self, rows: list[int], workers: int) -> dict:
        import lr0fm
        from lr0fm.store import ResultsStore
        self.calls += 1
        out = self.tmp / f"results-{self.calls}"
        shutil.copytree(self.seed_store / "cache", out / "cache")  # the classifier, nothing else
        records = lr0fm.evaluate(self.model, self.data.subset(rows), RESOLUTIONS, out, workers=workers,
                                 batch_size=self.batch_size, progress=False, device=self.device, amp=self.amp)
        store = ResultsStore(out)
        top1 = {rec["resolution"]: np.load(store.predictions_path(rec["cell"]))["topk"][:, 0] for rec in records}
        shutil.rmtree(out)
        return top1

    @torch.no_grad()
    def bare_part(self, rows: list[int]) -> None:
        flat = self.views[rows].flatten(0, 1)  # the same views lr0fm's pass forwards, same order
        for i in range(0, flat.shape[0], self.batch_size):
            self.model.encode_image(flat[i:i + self.batch_size])


def per_call_costs(bench: "Bench", parts: dict) -> dict:
    """Seconds each part spends per call beyond its forwards (worker start, set-up, records): slicing
    pays them once per slice, whole runs once. One image: the peer forwards 5 batches of 1 view,
    lr0fm 1 batch of 5 views."""
    one = bench.views[0]  # [R, 3, S, S]

    @torch.no_grad()
    def forward(batches):
        t = time.perf_counter()
        for x in batches:
            bench.model.encode_image(x)
        return time.perf_counter() - t

    def best(name):
        return min(timed(parts[name]) for _ in range(3))

    def timed(fn):
        t = time.perf_counter()
        fn([0])
        return time.perf_counter() - t

    out = {"peer": max(0.0, best("peer") - min(forward([v[None] for v in one]) for _ in range(3)))}
    lr0fm_forward = min(forward([one]) for _ in range(3))
    for name in parts:
        if name.startswith("lr0fm"):
            out[name] = max(0.0, best(name) - lr0fm_forward)
    return out


def slices(n: int, size: int) -> list[list[int]]:
    """Consecutive slices of the images; a multiple of the batch size keeps every forward batch
    of every part the same as in whole runs."""
    size = size or n
    return [list(range(lo, min(n, lo + size))) for lo in range(0, n, size)]


def spread(values: list[float], digits: int = 3) -> str:
    """median [min-max]"""
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def run_benchmark(args) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="lr0fm-vs-cb-"))
    try:
        bench = Bench(tuxpaint_photos(args.images), args.batch_size, tmp, args.peer_amp, args.arch,
                      amp=args.amp, peer_workers=args.peer_workers)
        n = len(bench.data)
        parts = {"peer": bench.peer_part, "bare": bench.bare_part}
        for w in args.workers:
            parts[f"lr0fm-w{w}"] = (lambda rows, w=w: bench.lr0fm_part(rows, w))
        names = list(parts)
        cuts = slices(n, args.slice_images)
        print(f"{n} TuxPaint photos x {len(RESOLUTIONS)} resolutions = {n * len(RESOLUTIONS)} views; open_clip "
              f"{args.arch} random weights; batch {args.batch_size}; torch threads {torch.get_num_threads()}, "
              f"cpus {os.cpu_count()}; peer amp {args.peer_amp}; {len(cuts)} slices of <= {len(cuts[0])} images; "
              f"load {', '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
        for name in names:  # warm-up: first forward, first worker start, lazy imports
            parts[name]([0])
        fixed = per_call_costs(bench, parts)
        print("cost per call beyond its forwards (one image, best of 3): "
              + "  ".join(f"{k} {v:.2f}s" for k, v in fixed.items()), flush=True)
        agree: dict = {}
        rounds = []
        for rnd in range(args.rounds):
            load0 = os.getloadavg()[0]
            wall, cpu = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
            top1: dict = {name: {r: [] for r in RESOLUTIONS} for name in names if name != "bare"}
            for s, rows in enumerate(cuts):
                k = (rnd + s) % len(names)  # rotate who goes first, so no part always follows another
                for name in names[k:] + names[:k]:
                    t, c = time.perf_counter(), cpu_seconds()
                    got = parts[name](rows)
                    wall[name] += time.perf_counter() - t
                    cpu[name] += cpu_seconds() - c
                    for r, v in (got or {}).items():
                        top1[name][r].append(v)
            for name in top1:
                if name != "peer":
                    for r in RESOLUTIONS:
                        same = np.concatenate(top1[name][r]) == np.concatenate(top1["peer"][r])
                        agree.setdefault((name, r), []).append(float(same.mean()))
            rounds.append({"wall": wall, "cpu": cpu})
            head = f"lr0fm-w{args.workers[0]}"
            print(f"round {rnd}: " + "  ".join(f"{k} {wall[k]:.1f}s/{cpu[k]:.0f}cpu-s" for k in names)
                  + f"  peer/{head} {wall['peer'] / wall[head]:.3f}  load {load0:.1f}->{os.getloadavg()[0]:.1f}",
                  flush=True)
        report(rounds, names, args, n, agree, fixed, len(cuts))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(rounds: list[dict], names: list[str], args, n: int, agree: dict, fixed: dict, n_slices: int) -> None:
    print(f"\n{n} images, {len(rounds)} rounds of {n_slices} slices; median [min-max] over the rounds:")
    for name in names:
        print(f"  {name:10s} wall {spread([r['wall'][name] for r in rounds], 1)} s   "
              f"cpu {spread([r['cpu'][name] for r in rounds], 1)} s")
    faults = set()
    for name in names:
        if name == "bare":
            continue
        line = f"  {name}/bare {' ' * (10 - len(name))}"
        for clock in ("wall", "cpu"):
            per_bare = [r[clock][name] / r[clock]["bare"] for r in rounds]
            fault = statistics.median(per_bare) + (max(per_bare) - min(per_bare)) / 2 < 1.0 - TIMING_TOLERANCE
            if fault:
                faults.add(name)
            line += f"{clock} {spread(per_bare)}" + (" FAULT " if fault else "") + "   "
        print(line)
    if faults:
        print(f"  MEASUREMENT FAULT: {', '.join(sorted(faults))} faster than the bare forward of its own views "
              "by more than the spread; the load changed within the rounds -- rerun on a quieter machine")
    for lr in (name for name in names if name.startswith("lr0fm")):
        title = f"  time(peer, 5 runs) / time(lr0fm, 1 pass, {lr}):"
        if faults & {"peer", lr}:
            print(f"{title} not reported (measurement fault above)")
            continue
        wall = [r["wall"]["peer"] / r["wall"][lr] for r in rounds]
        cpu = [r["cpu"]["peer"] / r["cpu"][lr] for r in rounds]
        # what whole runs would take: slicing paid each part's per-call cost once per slice
        whole = [(r["wall"]["peer"] - (n_slices - 1) * fixed["peer"]) / (r["wall"][lr] - (n_slices - 1) * fixed[lr])
                 for r in rounds]
        print(f"{title} wall {spread(wall)}   cpu {spread(cpu)}"
              + (f"   whole runs (per-call costs once) {spread(whole)}" if n_slices > 1 else ""))
    worst = {name: min(v) for name, v in agree.items()}
    print("  top-1 equal to the peer's: " + ("100% at every resolution" if min(worst.values()) == 1.0 else
          ", ".join(f"{k[0]} {k[1]}: {100 * v:.1f}%" for k, v in worst.items())))
    print(f"  load average now {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cpus")


# -- profile: lr0fm's pass against the bare forward of the same views ------------------------------
def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the DataLoader workers)."""
    import resource
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def components(prof: cProfile.Profile) -> dict:
    """Seconds of the pass in the model's forward, in preparing its input (normalisation, copies,
    top-k: _score minus forward), waiting for the prefetch thread's next batch (lr0fm.evaluation.passes._Prefetch;
    cProfile sees this thread only), and the rest (set-up, records)."""
    stats = pstats.Stats(prof).stats
    def cum(func: str, file: str) -> float:
        return sum(v[3] for (f, _, fn), v in stats.items() if fn == func and f.endswith(file))
    total = max(v[3] for v in stats.values())
    forward = cum("encode_image", os.path.join("models", "base.py"))
    score = cum("_score", "passes.py")
    loader = cum("__iter__", "passes.py")
    return {"forward": forward, "prepare": score - forward, "loader": loader, "other": total - score - loader}


def run_profile(args) -> int:
    """Rounds of the bare forward and lr0fm's pass (alternating which goes first), the pass under
    cProfile and split into forward / prepare / loader / other, with wall and CPU seconds."""
    tmp = Path(tempfile.mkdtemp(prefix="lr0fm-vs-cb-"))
    try:
        bench = Bench(tuxpaint_photos(args.images), args.batch_size, tmp, False, args.arch, amp=args.amp,
                      peer_workers=args.peer_workers)
        rows = list(range(len(bench.data)))
        w = args.workers[0]
        bench.bare_part([0])
        bench.lr0fm_part(rows[:8], w)  # warm-up
        table: dict = {"bare": [], "lr0fm": []}
        last = None
        for rnd in range(args.rounds):
            line = []
            for name in (["bare", "lr0fm"] if rnd % 2 == 0 else ["lr0fm", "bare"]):
                prof, t, c = cProfile.Profile(), time.perf_counter(), cpu_seconds()
                if name == "bare":
                    bench.bare_part(rows)
                else:
                    with prof_enabled(prof):
                        bench.lr0fm_part(rows, w)
                    last = prof
                wall, cpu = time.perf_counter() - t, cpu_seconds() - c
                table[name].append({"wall": wall, "cpu": cpu, **(components(prof) if name != "bare" else {})})
                line.append(f"{name} {wall:.1f}s/{cpu:.1f}cpu-s")
            print(f"round {rnd} (workers={w}): " + "  ".join(line) + f"  load {os.getloadavg()[0]:.1f}", flush=True)
        bare, rs = table["bare"], table["lr0fm"]
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"\nmedians over {args.rounds} rounds, seconds (ratio to the bare forward of the same views in its round):")
        print(f"  lr0fm  wall {med['wall']:6.1f} ({spread([r['wall'] / b['wall'] for r, b in zip(rs, bare)])})  "
              f"cpu {med['cpu']:6.1f} ({spread([r['cpu'] / b['cpu'] for r, b in zip(rs, bare)])})  "
              f"forward {med['forward']:.1f}  prepare {med['prepare']:.2f}  loader {med['loader']:.2f}  "
              f"other {med['other']:.2f}")
        print(f"  bare   wall {statistics.median(b['wall'] for b in bare):6.1f}  "
              f"cpu {statistics.median(b['cpu'] for b in bare):6.1f}")
        print(f"\ncProfile of the last pass, top {args.top} by own time:")
        pstats.Stats(last, stream=sys.stdout).sort_stats("tottime").print_stats(args.top)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


@contextlib.contextmanager
def prof_enabled(prof: cProfile.Profile):
    prof.enable()
    try:
        yield
    finally:
        prof.disable()


def run_device(args) -> int:
    """Whole runs on a device: CLIP_benchmark's five ``run_classification`` calls against one lr0fm
    pass, alternating which goes first, over generated JPEGs (or TuxPaint's photos without
    ``--jpeg-dir``); no bare forward and no slices."""
    from throughput import _sync  # this folder's scripts share their timing helpers

    from lr0fm.speeds import device_name
    tmp = Path(tempfile.mkdtemp(prefix="lr0fm-vs-cb-"))
    try:
        data = (generated_jpegs(args.jpeg_dir, args.images, args.classes, args.templates) if args.jpeg_dir
                else tuxpaint_photos(args.images))
        bench = Bench(data, args.batch_size, tmp, args.peer_amp, args.arch, device=args.device, amp=args.amp,
                      peer_workers=args.peer_workers, bare=False)
        n, w = len(bench.data), args.workers[0]
        print(f"{n} {data.spec.label} images x {len(RESOLUTIONS)} resolutions = {n * len(RESOLUTIONS)} views on "
              f"{args.device} ({device_name(args.device)}); open_clip {args.arch} random weights; "
              f"{len(data.spec.classnames)} classes x "
              f"{len(data.spec.templates)} templates; batch {args.batch_size}; peer: CLIP_benchmark "
              f"run_classification x 5, amp {args.peer_amp}, {args.peer_workers} workers; lr0fm: one pass, amp "
              f"{args.amp}, {'default' if w < 0 else w} workers", flush=True)
        workers = None if w < 0 else w  # lr0fm's default for the device
        parts = {"peer": bench.peer_part, "lr0fm": lambda rows: bench.lr0fm_part(rows, workers)}
        rows = list(range(n))
        warm = rows[:2 * args.batch_size]
        for part in parts.values():  # warm-up: first workers, kernels, the device decoder, lazy imports
            part(warm)
        walls: dict = {name: [] for name in parts}
        agree: dict = {}
        for rnd in range(args.rounds):
            order = list(parts) if rnd % 2 == 0 else list(parts)[::-1]
            top1 = {}
            for part in order:
                _sync(args.device)
                t = time.perf_counter()
                top1[part] = parts[part](rows)
                _sync(args.device)
                walls[part].append(time.perf_counter() - t)
            for r in RESOLUTIONS:
                agree.setdefault(r, []).append(float((top1["lr0fm"][r] == top1["peer"][r]).mean()))
            print(f"round {rnd}: peer {walls['peer'][-1]:.2f} s  lr0fm {walls['lr0fm'][-1]:.2f} s  "
                  f"peer/lr0fm {walls['peer'][-1] / walls['lr0fm'][-1]:.2f}", flush=True)
        ratio = [p / l for p, l in zip(walls["peer"], walls["lr0fm"])]
        print(f"\n{n} images, {args.rounds} rounds; median [min-max]:")
        for part in parts:
            print(f"  {part:6s} {spread(walls[part], 2)} s   {n * len(RESOLUTIONS) / statistics.median(walls[part]):,.0f} "
                  "image-resolution pairs/s")
        print("  top-1 equal to the peer's: " + ", ".join(f"{r}: {100 * min(v):.1f}%" for r, v in agree.items()))
        print(f"RESULT peer/lr0fm {args.arch} on {args.device}: {spread(ratio, 2)} (time(CLIP_benchmark, 5 runs) / "
              f"time(lr0fm, 1 pass); {n} images x 5 resolutions, batch {args.batch_size})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=230, help="first N TuxPaint photos (230: all), or N generated JPEGs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slice-images", type=int, default=64,
                    help="images per slice, a multiple of the batch size; the parts alternate slice by "
                         "slice (0: whole runs)")
    ap.add_argument("--workers", default="1,0", help="lr0fm DataLoader workers to measure (the first is the headline; "
                    "-1: lr0fm's default for the device, --device only)")
    ap.add_argument("--peer-workers", type=int, default=1, help="CLIP_benchmark's DataLoader workers")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--arch", default=ARCH, help="open_clip architecture (random weights), e.g. ViT-S-32")
    ap.add_argument("--peer-amp", action="store_true",
                    help="CLIP_benchmark's CLI default: autocast (bf16 on CPU, fp16 on CUDA)")
    ap.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="lr0fm's --amp")
    ap.add_argument("--device", default=None, help="whole runs on this device (e.g. cuda), as the module says")
    ap.add_argument("--jpeg-dir", type=Path, default=None,
                    help="--device: generated JPEGs in this folder (kept, reused) instead of TuxPaint's photos")
    ap.add_argument("--classes", type=int, default=1000, help="--jpeg-dir: the first N of ImageNet's 1000 classes")
    ap.add_argument("--templates", type=int, default=80, help="--jpeg-dir: the first N of ImageNet's 80 templates")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="32 images, 2 rounds, whole runs: a smoke run")
    ap.add_argument("--profile", action="store_true", help="cProfile lr0fm's pass against the bare forward")
    ap.add_argument("--top", type=int, default=25, help="--profile: rows of the profile table")
    args = ap.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.images, args.rounds, args.slice_images = 32, 2, 32
    if args.jpeg_dir and not args.device:
        ap.error("--jpeg-dir goes with --device (the CPU comparison runs on TuxPaint's photos)")
    if any(w < 0 for w in args.workers) and not args.device:
        ap.error("--workers -1 (lr0fm's default) goes with --device")
    if args.device:
        return run_device(args)
    if args.slice_images % args.batch_size:
        ap.error(f"--slice-images must be a multiple of --batch-size ({args.batch_size}), or 0 for whole runs")
    return run_profile(args) if args.profile else run_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
