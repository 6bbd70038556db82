"""LR views made on the accelerator, in batch: the tensor twin of ``Protocol.views_uint8``.

A DataLoader worker decodes each image and makes only its HR view (the exact PIL chain: short
side -> S and centre crop, or squash to S x S), so every image travels as one fixed [S, S, 3]
uint8 tensor. On the device, each LR view is that HR view resized down to r x r and back up to
S x S with ``torch.nn.functional.interpolate(antialias=True)`` -- whose antialiased bicubic and
bilinear kernels are ports of PIL's -- and rounded to uint8 after each step, as PIL does.

This is *not* bit-identical to the CPU protocol, for two reasons: the down step starts from the
S-px HR view instead of the original image (a cascaded resize), and in ``shortest`` mode the
crop is taken before the down step (the r-px grid's phase differs by a fraction of a pixel for
non-square images). ``tests/test_distributed.py`` measures the difference against the PIL path
(see docs/performance.md). Because it is a different computation, results made this way carry
``variant["views"] = TENSOR_VIEWS`` and never mix with (or skip) PIL-made cells.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .protocol import HR, Protocol

TENSOR_VIEWS = "torch-antialias"  # recorded in the variant of results made here
# protocol interpolation -> interpolate() mode; others (lanczos, box, nearest) stay on PIL
_MODES = {"bicubic": "bicubic", "bilinear": "bilinear"}


def supports(protocol: Protocol) -> bool:
    return protocol.interpolation in _MODES


class HRCarrier:
    """image -> [1, S, S, 3] uint8: the HR view, the one tensor a worker sends per image.

    A class (not a lambda) so DataLoader workers can pickle it."""

    def __init__(self, protocol: Protocol):
        self.protocol = protocol

    def __call__(self, image: Image.Image) -> np.ndarray:
        return np.array(self.protocol.view(image, HR), dtype=np.uint8)[None]  # writable, for torch


def _resize(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """[N, 3, H, W] float in 0..255 -> [N, 3, size, size], rounded like a uint8 image."""
    y = F.interpolate(x, size=(size, size), mode=mode, antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255)


def make_views(protocol: Protocol, hr: torch.Tensor, resolutions: Sequence[int | str] | None = None) -> torch.Tensor:
    """[B, S, S, 3] uint8 HR views -> [B, R, S, S, 3] uint8 views at ``resolutions`` (on hr's device)."""
    if not supports(protocol):
        raise ValueError(f"tensor views support {sorted(_MODES)} interpolation, not {protocol.interpolation!r}")
    keys = protocol.resolutions if resolutions is None else resolutions
    mode, S = _MODES[protocol.interpolation], protocol.input_size
    x = hr.permute(0, 3, 1, 2).float()  # [B, 3, S, S]
    views = []
    for r in keys:
        if r == HR:
            views.append(hr)
            continue
        lr = _resize(_resize(x, int(r), mode), S, mode)
        views.append(lr.to(torch.uint8).permute(0, 2, 3, 1))
    return torch.stack(views, dim=1)
