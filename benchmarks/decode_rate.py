"""JPEG decoding rates on a device, and how the decoders' pixels compare: whether decoding bounds a
pass that decodes on the GPU, and whether nvImageCodec would decode faster than torchvision's nvjpeg
(issue 27: "the field's GPU data-loading library where it measures faster"; GPU check step 8).

    python benchmarks/decode_rate.py --device cuda --images 4096 --batch-sizes 64,256,1024
    python benchmarks/decode_rate.py --device cpu --images 64 --batch-sizes 16     # every path but the GPU's

Decoders, each over the same JPEG bytes held in memory (files are not what is timed):

* ``pil``: lr0fm's ``--decoder pil`` (``lr0fm.images.bytes_loader``), as RGB, in this one process;
  the DataLoader's workers give about its rate times their number;
* ``torchvision-<device>``: lr0fm's ``--decoder device``, the pass's own batch decode
  (``torchvision.io.decode_jpeg`` on a list; nvjpeg on CUDA);
* ``nvimgcodec``: nvImageCodec's ``Decoder.decode`` in batches (the codec library DALI decodes
  through), on CUDA when ``from nvidia import nvimgcodec`` imports (PyPI
  ``nvidia-nvimgcodec-cu13`` and ``nvidia-nvjpeg``; ``make gpu-check-prep`` fetches both); EXIF
  orientation off, as in lr0fm's other decoders.

Prints images/s per decoder and batch size (best of ``--rounds``, after an untimed warm-up), then
each decoder's pixels against PIL's and against torchvision's: max |diff| and how many images
differ. A decoder whose pixels differ from ``torchvision-cuda`` would be a new decoder in a result's
identity, not a faster way to the same numbers.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from throughput import RESULT, _sync  # this folder's scripts share their timing helpers


def pil_decoder():
    """lr0fm's ``--decoder pil`` (lr0fm.images.bytes_loader), as RGB arrays to compare pixels."""
    from lr0fm.images import bytes_loader

    def decode(batch: list[bytes]) -> list[np.ndarray]:
        return [np.asarray(bytes_loader(b).convert("RGB")) for b in batch]
    return decode


def torchvision_decoder(device: torch.device):
    """lr0fm's ``--decoder device``: the pass's own batch decode (nvjpeg on CUDA), its copy included."""
    from lr0fm.evaluation.loading import _decode_on_device, _Payload

    def decode(batch: list[bytes]) -> list[torch.Tensor]:
        payloads = [_Payload(jpeg=np.frombuffer(bytearray(b), dtype=np.uint8)) for b in batch]
        return [p.original for p in _decode_on_device(payloads, device)]
    return decode


def nvimgcodec_decoder(device: torch.device):
    """nvImageCodec on ``device`` (CUDA only), or the reason it cannot run here."""
    if device.type != "cuda":
        return None, "CUDA only here (its CPU backend also needs a CUDA driver)"
    try:
        from nvidia import nvimgcodec
    except ImportError as e:
        return None, f"not importable ({e}); pip install nvidia-nvimgcodec-cu13 nvidia-nvjpeg"
    decoder = nvimgcodec.Decoder(device_id=device.index or 0)
    params = nvimgcodec.DecodeParams(apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.SRGB)

    def decode(batch: list[bytes]) -> list:
        stream = torch.cuda.current_stream(device).cuda_stream
        images = decoder.decode([nvimgcodec.CodeStream(b) for b in batch], params=params, cuda_stream=stream)
        if not hasattr(decode, "buffer"):  # where it decoded: a host buffer means no GPU backend loaded
            decode.buffer = str(images[0].buffer_kind)
            print(f"nvimgcodec: decodes into {decode.buffer}", flush=True)
        return [torch.as_tensor(im, device=device) for im in images]  # [H, W, 3] uint8, zero-copy on the device
    return decode, ""


def rate(decode, data: list[bytes], batch: int, device: torch.device, rounds: int) -> float:
    """Images/s of ``decode`` over ``data`` in batches of ``batch``: the best of ``rounds``."""
    decode(data[:batch])  # warm-up: the decoder's state, kernels, buffers
    _sync(device)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for i in range(0, len(data), batch):
            decode(data[i:i + batch])
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return len(data) / best


def as_numpy(images) -> list[np.ndarray]:
    return [im.cpu().numpy() if torch.is_tensor(im) else np.asarray(im) for im in images]


def compare(name: str, mine: list[np.ndarray], ref_name: str, ref: list[np.ndarray]) -> str:
    diffs = [int(np.abs(a.astype(np.int16) - b).max()) if a.shape == b.shape else 256 for a, b in zip(mine, ref)]
    differ = sum(d > 0 for d in diffs)
    return (f"{name} vs {ref_name}: max |diff| {max(diffs)}/255"
            f"{' (shapes differ)' if 256 in diffs else ''}, {differ} of {len(diffs)} images differ")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=1024, help="generated photo-sized JPEGs (lr0fm calibrate's)")
    ap.add_argument("--jpeg-dir", type=Path, default=None, help="folder for the generated JPEGs, kept and reused")
    ap.add_argument("--batch-sizes", default="64,256,1024", help="decode batch sizes (the device decoders)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pil-images", type=int, default=256, help="images PIL decodes per round (it is slow)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: torch sees no CUDA device")
    batches = [int(b) for b in args.batch_sizes.split(",")]
    on_device = f"torchvision-{device.type}"  # lr0fm's name of its device decoder

    from lr0fm.evaluation.calibrate import generate_jpegs
    from lr0fm.speeds import device_name
    folder = args.jpeg_dir or Path(tempfile.mkdtemp(prefix="lr0fm-decode-rate-"))
    data = [p.read_bytes() for p in generate_jpegs(folder, args.images)]
    print(f"{len(data)} generated JPEGs (500x375 / 375x500, q90, {sum(map(len, data)) / len(data) / 1024:.0f} KiB "
          f"each on average) on {args.device} ({device_name(args.device)}); best of {args.rounds} rounds", flush=True)

    decoders = {"pil": pil_decoder(), on_device: torchvision_decoder(device)}
    nvimg, why = nvimgcodec_decoder(device)
    if nvimg is not None:
        decoders["nvimgcodec"] = nvimg
    else:
        print(f"nvimgcodec: skipped, {why}")
    rates: dict[str, dict[int, float]] = {}
    for name, decode in decoders.items():
        sizes = [1] if name == "pil" else batches
        sample = data[:args.pil_images] if name == "pil" else data
        try:
            rates[name] = {b: rate(decode, sample, b, device, args.rounds) for b in sizes}
        except Exception as e:  # a decoder that cannot run here is a finding, not the end of the others
            print(f"{name}: failed: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
            continue
        print(f"{name:18s} " + "  ".join(f"batch {b}: {r:,.0f} img/s" for b, r in rates[name].items()), flush=True)

    check = data[:min(len(data), 64)]
    outputs = {name: as_numpy(decoders[name](check)) for name in rates}
    for name in outputs:
        if name != "pil":
            print("  " + compare(name, outputs[name], "pil", outputs["pil"]))
    if "nvimgcodec" in outputs and on_device in outputs:
        print("  " + compare("nvimgcodec", outputs["nvimgcodec"], on_device, outputs[on_device]))
    best = {name: max(r.values()) for name, r in rates.items()}
    print(f"{RESULT} decode rate on {args.device}: " + ", ".join(
        f"{name} {r:,.0f} img/s (batch {max(rates[name], key=rates[name].get)})" for name, r in best.items())
        + f"; pil is one process ({len(data)} JPEGs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
