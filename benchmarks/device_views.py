"""Time per image of the protocol's views: PIL (``Protocol.views_uint8``) vs tensors (``tensor_views.make_views``).

    python benchmarks/device_views.py --images 64 --rounds 3            # CPU, and CUDA when present
    python benchmarks/device_views.py --sizes mixed --devices cpu,cuda

Every image gets all its views (default: S = 224, resolutions 16/32/64/128/hr, shortest side,
bicubic) from its decoded original. ``--sizes photo`` uses ImageNet-like 500x375 and 375x500
images (two size groups, so the tensor path batches them); ``--sizes mixed`` gives every image its
own size (aspect 0.5-2), the tensor path's worst case (one group per image). The parts are timed
interleaved in every round (the machine may be shared); medians and the spread are printed.
Before timing, the tensor views are checked to equal the PIL views bit for bit.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image

from lr0fm import tensor_views
from lr0fm.protocol import Protocol, parse_resolutions


def make_images(n: int, sizes: str, seed: int = 0) -> list[np.ndarray]:
    """Smooth colour fields with a hard edge (closer to photo statistics than pixel noise)."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        if sizes == "photo":
            w, h = (500, 375) if i % 3 else (375, 500)
        else:
            h = int(rng.integers(250, 500))
            w = int(h * np.exp(rng.uniform(np.log(0.5), np.log(2))))
        small = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        a = np.array(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))
        a[h // 3: h // 2, :, i % 3] = 255
        images.append(a)
    return images


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pil(protocol: Protocol, pil_images: list[Image.Image]) -> float:
    start = time.perf_counter()
    for im in pil_images:
        protocol.views_uint8(im)
    return time.perf_counter() - start


def time_tensor(protocol: Protocol, originals: list[torch.Tensor], batch: int, device: torch.device) -> float:
    """Seconds for all views of ``originals`` (already on ``device``), in batches as a loader gives them."""
    _sync(device)
    start = time.perf_counter()
    for lo in range(0, len(originals), batch):
        tensor_views.make_views(protocol, originals[lo:lo + batch])
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--sizes", choices=("photo", "mixed"), default="photo")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--resolutions", default="16,32,64,128,hr")
    ap.add_argument("--mode", choices=("shortest", "squash"), default="shortest")
    ap.add_argument("--interpolation", default="bicubic")
    ap.add_argument("--batch", type=int, default=64, help="images per make_views call")
    ap.add_argument("--devices", default="cpu,cuda", help="tensor devices to time (cuda skipped when absent)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    protocol = Protocol(args.input_size, (0.5,) * 3, (0.5,) * 3, mode=args.mode, interpolation=args.interpolation,
                        resolutions=parse_resolutions(args.resolutions))
    arrays = make_images(args.images, args.sizes)
    pil_images = [Image.fromarray(a) for a in arrays]
    devices = [torch.device(d) for d in args.devices.split(",")
               if d and (torch.device(d).type != "cuda" or torch.cuda.is_available())]
    originals = {d: [torch.from_numpy(a).to(d) for a in arrays] for d in devices}

    # exactness first (also warms the coefficient caches and the device)
    check = slice(0, min(8, len(arrays)))
    reference = torch.from_numpy(np.stack([protocol.views_uint8(im) for im in pil_images[check]]))
    for d in devices:
        made = tensor_views.make_views(protocol, originals[d][check]).cpu()
        diff = (made.int() - reference.int()).abs().max().item()
        print(f"{d.type}: tensor views vs PIL views, max |diff| = {diff}/255")
        if diff:
            raise SystemExit(f"{d.type} tensor views differ from the PIL chain; the timings would not be comparable")
        time_tensor(protocol, originals[d], args.batch, d)

    times: dict[str, list[float]] = {"pil": [], **{d.type: [] for d in devices}}
    for _ in range(args.rounds):
        times["pil"].append(time_pil(protocol, pil_images))
        for d in devices:
            times[d.type].append(time_tensor(protocol, originals[d], args.batch, d))

    n, R = len(arrays), len(protocol.resolutions)
    print(f"\n{n} images ({args.sizes} sizes), {R} views each at S={args.input_size}, {args.mode}, "
          f"{args.interpolation}; torch threads {torch.get_num_threads()}; {args.rounds} rounds")
    print(f"{'path':6s} {'ms/image median':>16s} {'spread (min-max)':>18s} {'images/s':>9s} {'vs PIL':>7s}")
    pil_median = statistics.median(times["pil"])
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:6s} {1e3 * m / n:16.2f} {1e3 * min(ts) / n:8.2f}-{1e3 * max(ts) / n:<9.2f} {n / m:9.0f} "
              f"{pil_median / m:6.2f}x")


if __name__ == "__main__":
    main()
