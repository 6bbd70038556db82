"""How far the device JPEG decoder is from PIL's: per pixel, per view, and in per-image top-1.

    python benchmarks/decoder_diff.py --device cuda --amp bf16     # nvjpeg vs PIL's libjpeg-turbo
    python benchmarks/decoder_diff.py --device cpu                 # torchvision's CPU decoder vs PIL
    python benchmarks/decoder_diff.py --export-tuxpaint DIR        # TuxPaint photos as JPEGs, to carry

``EvalConfig(decoder="device")`` decodes JPEG bytes in batches with ``torchvision.io.decode_jpeg``
(nvjpeg on CUDA, torchvision's libjpeg-turbo on CPU); ``decoder="pil"`` decodes with Pillow.
Decoders may differ by a few levels (IDCT and chroma upsampling are implementation choices), which
is why the decoder is part of a result's identity. This script measures by how much:

* pixels: |device - PIL| of the decoded originals (max, mean, share of pixels with any channel
  differing, images with any difference), and of the protocol's views made from each (exact
  device views, so any view difference comes from the decode);
* predictions: ``lr0fm.evaluate`` twice with device views, ``decoder="pil"`` and ``"device"``
  (a random-weight model by default, and a random 1000-class classifier cached beforehand:
  a strict test, since top-1 among 1000 near-equal scores flips easily), and the share of images
  whose top-1 agrees at every resolution.

Images: JPEG files under ``--images DIR``; else TuxPaint's photo stamps (``--tuxpaint-root``,
default ``$TUX`` or /usr/share/tuxpaint/stamps; a folder of JPEGs written by --export-tuxpaint
is used as it is) composited on white and re-encoded as JPEG (quality 90); else ``--generated N``
photo-like JPEGs of benchmarks/throughput.py.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import RESULT, cache_classifier, generate_jpegs, jpeg_dataset, random_classifier  # noqa: E402

JPEG_SUFFIXES = (".jpg", ".jpeg", ".JPG", ".JPEG")


def jpegs_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in JPEG_SUFFIXES and p.is_file())


def export_tuxpaint(stamps: Path, out: Path, quality: int = 90) -> list[Path]:
    """TuxPaint's photo stamps (lr0fm's tuxpaint dataset) composited on white, as JPEGs in ``out``."""
    from lr0fm.datasets.offline import build_tuxpaint
    from lr0fm.images import composite_on_white

    data = build_tuxpaint(stamps)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(len(data)):
        path = out / (data.sample_id(i).replace("/", "__").rsplit(".", 1)[0] + ".jpg")
        composite_on_white(data.load_image(i)).save(path, quality=quality)
        paths.append(path)
    return paths


def choose_images(args, tmp: Path) -> tuple[list[Path], str]:
    """(JPEG paths, where they come from)."""
    if args.images:
        paths = jpegs_under(args.images)
        if not paths:
            raise SystemExit(f"decoder_diff: no .jpg/.jpeg files under {args.images}; give a folder of JPEGs")
        return paths, f"JPEGs under {args.images}"
    root = args.tuxpaint_root
    if root and root.is_dir():
        carried = jpegs_under(root)
        if carried:
            return carried, f"TuxPaint photos as JPEGs from {root}"
        paths = export_tuxpaint(root, tmp / "tuxpaint", args.quality)
        return paths, f"TuxPaint photos re-encoded as JPEG q{args.quality}"
    return generate_jpegs(tmp / "generated", args.generated), "generated photo-like JPEGs 500x375 q90"


class _Stats:
    """Running |a - b| statistics over uint8 arrays whose last axis is the colour."""

    def __init__(self):
        self.max, self.sum, self.values, self.pixels, self.differing, self.images, self.images_differing = (0,) * 7

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        d = (a.int() - b.int()).abs()
        self.max = max(self.max, int(d.max()))
        self.sum += int(d.sum())
        self.values += d.numel()
        self.pixels += d.numel() // d.shape[-1]
        self.differing += int((d.amax(-1) > 0).sum())
        self.images += 1
        self.images_differing += int(d.max() > 0)

    def line(self) -> str:
        return (f"max {self.max}/255  mean {self.sum / max(self.values, 1):.4f}/255  "
                f"{100 * self.differing / max(self.pixels, 1):.2f}% of pixels differ  "
                f"{self.images_differing} of {self.images} images differ")


def compare_pixels(data, protocol, device: torch.device, batch: int) -> tuple[_Stats, dict]:
    """Originals and views of every image decoded both ways (as the evaluator decodes them)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    from lr0fm import tensor_views
    from lr0fm.images import composite_on_white

    originals, views = _Stats(), {r: _Stats() for r in protocol.resolutions}
    for lo in range(0, len(data), batch):
        idx = range(lo, min(lo + batch, len(data)))
        pil = [torch.from_numpy(np.array(composite_on_white(data.load_image(i)), dtype=np.uint8)) for i in idx]
        encoded = [torch.frombuffer(bytearray(data.encoded(i)), dtype=torch.uint8) for i in idx]
        decoded = [im.permute(1, 2, 0).cpu() for im in decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)]
        for a, b in zip(decoded, pil):
            originals.add(a, b)
        made = [tensor_views.make_views(protocol, ims, device=device).cpu() for ims in (decoded, pil)]
        for j, r in enumerate(protocol.resolutions):
            for a, b in zip(made[0][:, j], made[1][:, j]):
                views[r].add(a, b)
    return originals, views


def top1_by_decoder(model, data, resolutions, args, tmp: Path, classifier, classnames, templates) -> dict:
    """{decoder: ([R, n] top-1, [n] valid)} from lr0fm.evaluate with device views."""
    from lr0fm.evaluation import EvalConfig, evaluate
    from lr0fm.store import ResultsStore

    out = {}
    for decoder in ("pil", "device"):
        root = tmp / f"results-{decoder}"
        cache_classifier(root, model, classifier, classnames, templates)
        store = ResultsStore(root)
        cfg = EvalConfig(resolutions=resolutions, device=args.device, amp=args.amp, batch_size=args.batch_size,
                         workers=args.workers, views="device", decoder=decoder, progress=False)
        records = evaluate(model, data, cfg, store)
        got = [store.load_predictions(r["cell"]) for r in records]
        out[decoder] = (np.stack([g["topk"][:, 0] for g in got]), got[0]["valid"],
                        records[0]["identity"]["protocol"]["decoder"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="open_clip:ViT-B-32:random")
    ap.add_argument("--amp", choices=["bf16", "fp16"], default=None)
    ap.add_argument("--resolutions", default="16,32,64,128,hr")
    ap.add_argument("--images", type=Path, default=None, help="a folder of JPEG files (searched recursively)")
    ap.add_argument("--tuxpaint-root", type=Path,
                    default=Path(os.environ.get("TUX") or "/usr/share/tuxpaint/stamps"),
                    help="TuxPaint stamps, or a folder written by --export-tuxpaint (default: $TUX or the Debian path)")
    ap.add_argument("--generated", type=int, default=256, help="generated JPEGs when there is no TuxPaint")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality of the re-encoded TuxPaint photos")
    ap.add_argument("--limit", type=int, default=None, help="the first N images only")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--pixels-only", action="store_true", help="compare pixels and views, no model")
    ap.add_argument("--export-tuxpaint", type=Path, default=None, metavar="DIR",
                    help="only write TuxPaint's photos as JPEGs to DIR (a few MB, to carry to a GPU machine)")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.export_tuxpaint:
        paths = export_tuxpaint(args.tuxpaint_root, args.export_tuxpaint, args.quality)
        print(f"{len(paths)} JPEGs in {args.export_tuxpaint} "
              f"({sum(p.stat().st_size for p in paths) / 1e6:.1f} MB); use them with TUX={args.export_tuxpaint}")
        return 0

    from lr0fm.datasets.base import packaged_text
    from lr0fm.evaluation import decoder_name
    from lr0fm.protocol import parse_resolutions

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    resolutions = parse_resolutions(args.resolutions)
    tmp = Path(tempfile.mkdtemp(prefix="lr0fm-decoder-diff-"))
    paths, source = choose_images(args, tmp)
    paths = paths[: args.limit] if args.limit else paths
    names, templates = packaged_text("imagenet1k", "classnames"), packaged_text("imagenet1k", "templates")
    data = jpeg_dataset(paths, names, templates, name="decoder-diff")
    name = decoder_name("device", args.device)

    model = None
    if args.pixels_only:
        from lr0fm.protocol import Protocol  # a CLIP ViT-B/32's: S 224, shortest side, bicubic
        protocol = Protocol(224, (0.5,) * 3, (0.5,) * 3, resolutions=resolutions)
    else:
        from lr0fm.models import create_model
        model = create_model(args.model, device=args.device)
        protocol = model.protocol(resolutions)
    print(f"{len(paths)} images: {source}; {name} vs pil; views S={protocol.input_size} {protocol.mode} "
          f"{protocol.interpolation}", flush=True)

    originals, views = compare_pixels(data, protocol, device, args.batch_size)
    print(f"decoded originals  {originals.line()}")
    for r, stats in views.items():
        print(f"views r={r!s:<5s}     {stats.line()}")
    print(f"{RESULT} decoder pixels {name} vs pil on {len(paths)} {source}: {originals.line()}", flush=True)

    if model is not None:
        classifier = random_classifier(model, len(names))
        top1 = top1_by_decoder(model, data, resolutions, args, tmp, classifier, names, templates)
        (pil, valid_pil, recorded_pil), (dev, valid_dev, recorded) = top1["pil"], top1["device"]
        both = valid_pil & valid_dev
        parts = []
        for j, r in enumerate(resolutions):
            same = int((pil[j, both] == dev[j, both]).sum())
            parts.append(f"{r}: {100 * same / max(int(both.sum()), 1):.1f}% ({int(both.sum()) - same} flips)")
        print(f"recorded decoders: {recorded_pil}, {recorded}; images scored by both {int(both.sum())} of {len(paths)}")
        print(f"{RESULT} decoder top-1 agreement {name} vs pil ({args.model}, {args.amp or 'fp32'}, "
              f"1000 random classes): " + "  ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
