"""The protocol's views made from tensors on any device, bit for bit: the twin of ``Protocol.views_uint8``.

Pillow resizes an 8-bit image (``Image.resize`` -> src/libImaging/Resample.c) in two separable
1-D passes, horizontal and vertical (in an order Pillow picks per size), each skipped when that
side keeps its size. A pass multiplies by fixed-point coefficients (22 fractional bits, computed per output pixel by
``precompute_coeffs`` and ``normalize_coeffs_8bpc``), adds one half and clips to 0..255. So each
pass is one matrix product of small integers, which float64 sums exactly in any order, followed
by the same rounding: the views made here from the decoded original equal the PIL chain to the
last bit, on CPU or GPU (tests/test_tensor_views.py). Nearest is the same product with one-hot rows
placed by Pillow's own index arithmetic (``ImagingScaleAffine``).

Workers send the decoded original (``OriginalCarrier``); ``make_views`` groups a batch by image
size, so same-sized images share coefficient matrices (cached per device) and large products.
"""
from __future__ import annotations

import math
from collections import defaultdict
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
import PIL
import torch
from PIL import Image

from .protocol import DESCRIBED_ALWAYS, HR, Protocol, _shortest_side_size

PRECISION_BITS = 22  # Resample.c: 32 bits - 8 for the pixel - 2 for the filters' negative lobes
_ONE = float(1 << PRECISION_BITS)
# Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many pixels
# as the width (ImagingResampleInner); earlier versions always start with the horizontal pass.
# Each pass rounds, so the order is part of the result.
_PILLOW_VERTICAL_FIRST = int(PIL.__version__.split(".")[0]) >= 13
_MAX_ELEMENTS = 1 << 27  # float64 elements per working array (1 GiB): bounds the images resized at once


# The filters of Resample.c, with the same operations in the same order (so the same doubles).
def _box(x: np.ndarray) -> np.ndarray:
    return np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0)


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


_sin = np.frompyfunc(math.sin, 1, 1)  # the C library's sin, as Pillow's; numpy's may differ by an ulp


def _sinc(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        px = x * math.pi
        return np.where(x == 0.0, 1.0, _sin(px).astype(np.float64) / px)


def _lanczos(x: np.ndarray) -> np.ndarray:
    return np.where((x >= -3.0) & (x < 3.0), _sinc(x) * _sinc(x / 3), 0.0)


# protocol interpolation -> (filter, support); nearest has no filter (index arithmetic)
_FILTERS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "box": (_box, 0.5), "bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0), "lanczos": (_lanczos, 3.0),
}


# the Protocol fields make_views makes; a knob added later stays on PIL (supports says no where it
# is set) until make_views makes it and its name is added here
MADE_HERE = frozenset(DESCRIBED_ALWAYS)


def supports(protocol: Protocol) -> bool:
    """Whether ``make_views`` reproduces this protocol's views exactly."""
    return (protocol.interpolation in _FILTERS or protocol.interpolation == "nearest") and \
        set(protocol.describe()) <= MADE_HERE


def coefficients(in_size: int, out_size: int, interpolation: str) -> np.ndarray:
    """Pillow's integer coefficients of one 1-D resize as a dense [out_size, in_size] float64 matrix
    (value v means v / 2**22; zero outside each output pixel's window)."""
    if interpolation == "nearest":
        return _nearest_coefficients(in_size, out_size)
    filt, support = _FILTERS[interpolation]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = support * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)  # C's (int) truncates
    length = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64) - xmin
    taps = np.arange(ksize)
    inside = taps < length[:, None]
    position = xmin[:, None] + taps
    w = np.where(inside, filt((position - center[:, None] + 0.5) * (1.0 / filterscale)), 0.0)
    total = np.zeros(out_size)
    for t in range(ksize):  # left to right, as the C loop sums (a pairwise sum may differ by an ulp)
        total += w[:, t]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(total[:, None] != 0.0, w / total[:, None], w)
    fixed = np.trunc(np.where(w < 0, -0.5 + w * _ONE, 0.5 + w * _ONE))
    dense = np.zeros((out_size, in_size))
    rows = np.broadcast_to(np.arange(out_size)[:, None], position.shape)
    dense[rows[inside], position[inside]] = fixed[inside]
    return dense


def _nearest_coefficients(in_size: int, out_size: int) -> np.ndarray:
    """One-hot rows at the source pixel ``ImagingScaleAffine`` picks (a running sum, truncated);
    a source outside the image leaves a zero row, as Pillow fills black."""
    dense = np.zeros((out_size, in_size))
    step = in_size / out_size
    position = step * 0.5
    for out in range(out_size):
        source = -1 if position < 0.0 else int(position)
        if 0 <= source < in_size:
            dense[out, source] = _ONE
        position += step
    return dense


@lru_cache(maxsize=512)
def _matrix(in_size: int, out_size: int, interpolation: str, start: int, stop: int,
            device: torch.device) -> torch.Tensor:
    """Output rows start:stop of the 1-D resize, scaled by 2**-22 (exact), on ``device``."""
    dense = coefficients(in_size, out_size, interpolation)[start:stop] / _ONE
    return torch.from_numpy(dense).to(device)


def _round_clip(x: torch.Tensor) -> torch.Tensor:
    """Resample.c's clip8: (acc + 2**21) >> 22, clamped to 0..255 (here on values already / 2**22)."""
    return x.add_(0.5).floor_().clamp_(0, 255)


def _resize(x: torch.Tensor, size: tuple[int, int], interpolation: str,
            crop: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """One ``Image.resize(size)`` of [G, H, 3, W] float64 pixels -> [G, h, 3, w], then the optional
    crop (left, top, width, height), computed only for the kept pixels."""
    G, H, C, W = x.shape
    w, h = size
    left, top, cw, ch = crop or (0, 0, w, h)

    def horizontal(x):  # a [G*rows*3, W] @ [W, w] product
        if w == W:
            return x[..., left:left + cw]
        m = _matrix(W, w, interpolation, left, left + cw, x.device)
        return _round_clip((x.reshape(-1, W) @ m.T).reshape(G, x.shape[1], C, cw))

    def vertical(x):  # [h, H] @ [G, H, 3*cols]
        if h == H:
            return x[:, top:top + ch]
        m = _matrix(H, h, interpolation, top, top + ch, x.device)
        return _round_clip(torch.matmul(m, x.reshape(G, H, -1)).reshape(G, ch, C, -1))

    if _PILLOW_VERTICAL_FIRST and H - h > 0 and H - h > (W - w) * 2:
        return horizontal(vertical(x))
    return vertical(horizontal(x))


def _view(protocol: Protocol, x: torch.Tensor, resolution: int | str) -> torch.Tensor:
    """``Protocol.view`` on [G, H, 3, W] float64 originals -> [G, S, 3, S]."""
    S, f = protocol.input_size, protocol.interpolation
    if resolution == HR and protocol.hr_via and protocol.hr_via != S:  # as Protocol.view: HR through hr_via px
        resolution = protocol.hr_via
    if protocol.mode == "squash":
        if resolution != HR:
            x = _resize(x, (int(resolution), int(resolution)), f)
        return _resize(x, (S, S), f)
    size = (x.shape[3], x.shape[1])
    if resolution != HR:
        size = _shortest_side_size(size, int(resolution))
        x = _resize(x, size, f)
    w, h = _shortest_side_size(size, S)
    left, top = int(round((w - S) / 2.0)), int(round((h - S) / 2.0))  # protocol._center_crop's offsets
    return _resize(x, (w, h), f, crop=(left, top, S, S))


def make_views(protocol: Protocol, images: torch.Tensor | Sequence[torch.Tensor],
               resolutions: Sequence[int | str] | None = None,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Decoded RGB originals -> [B, R, S, S, 3] uint8 views at ``resolutions`` (default: the
    protocol's), identical to ``Protocol.views_uint8``.

    ``images``: a [B, H, W, 3] uint8 tensor, or a list of [H, W, 3] uint8 tensors of any sizes
    (``OriginalCarrier``'s output; its [R, S, S, 3] finished views are passed through). Images of
    one size are resized together, moved to ``device`` (default: the first image's) one size group
    at a time; the views are returned there."""
    if not supports(protocol):
        raise ValueError(f"tensor views cannot make {protocol.interpolation!r} resizes exactly")
    keys = protocol.resolutions if resolutions is None else resolutions
    S = protocol.input_size
    batch = images if torch.is_tensor(images) else list(images)
    if len(batch) == 0:
        raise ValueError("make_views needs at least one image")
    finished = (len(keys), S, S, 3)
    for im in batch:
        if im.dtype != torch.uint8 or not (im.dim() == 3 and im.shape[2] == 3 or tuple(im.shape) == finished):
            raise ValueError(f"make_views needs uint8 RGB images shaped [H, W, 3] (or finished views shaped "
                             f"{list(finished)}), got {im.dtype} {list(im.shape)}; decode to RGB uint8 first")
    device = torch.device(device) if device is not None else batch[0].device
    out = torch.empty((len(batch),) + finished, dtype=torch.uint8, device=device)
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, im in enumerate(batch):
        if im.dim() == 4:
            out[i] = im.to(device)
        else:
            groups[tuple(im.shape)].append(i)
    for (H, W, _), members in groups.items():
        per_chunk = max(1, _MAX_ELEMENTS // (3 * (H + S) * (W + S)))  # the largest array of a chain, bounded
        for lo in range(0, len(members), per_chunk):
            chunk = members[lo:lo + per_chunk]
            if torch.is_tensor(batch):  # one size: the chunk is a slice
                originals = batch[chunk[0]:chunk[-1] + 1]
            else:
                originals = torch.stack([batch[i] for i in chunk])
            # [G, H, 3, W]: both passes are then plain products over the last or the second axis
            x = originals.to(device, non_blocking=True).permute(0, 1, 3, 2)
            x = x.to(torch.float64, memory_format=torch.contiguous_format)
            rows = torch.tensor(chunk, device=device)
            for j, r in enumerate(keys):
                out[rows, j] = _view(protocol, x, r).permute(0, 1, 3, 2).to(torch.uint8)
    return out


class OriginalCarrier:
    """image -> what a worker sends when the device makes the views: the decoded original as the
    protocol's resizes see it (``Protocol.prepare``), [H, W, 3] uint8 RGB. Sizes vary, so batches
    are lists. A class, so DataLoader workers can pickle it.

    The paper's protocol resizes in the image's own mode and converts to RGB after; that equals
    converting first only for RGB and L images, so for other modes (palette images resize with
    nearest, RGBA premultiplied, ...) the worker makes the [R, S, S, 3] views itself with PIL and
    ``make_views`` passes them through."""

    def __init__(self, protocol: Protocol):
        self.protocol = protocol

    def __call__(self, image: Image.Image) -> np.ndarray:
        if self.protocol.rgb_last and image.mode not in ("RGB", "L"):
            return self.protocol.views_uint8(image)
        image = self.protocol.prepare(image)
        return np.array(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)  # writable
