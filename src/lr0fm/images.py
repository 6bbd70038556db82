"""Image decoding: any file or bytes Pillow reads -> an 8-bit image, then RGB.

Decoders (``open_image_file``, ``bytes_loader``) fully load an image (a truncated file raises
and is counted as unreadable) and scale 16-bit and float modes to 8 bits; they keep the mode
otherwise. ``composite_on_white`` is the conversion to RGB that lr0fm's protocol applies first
(transparency composited on white); the paper's protocol resizes first and converts after.
"""
from __future__ import annotations

import io
import os

from PIL import Image, ImageFile

# Truncated files must raise, not silently decode half an image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def to_8bit(image: Image.Image) -> Image.Image:
    """An 8-bit "L" image from a wide single-band mode, scaled rather than clipped (Pillow's own
    convert clips, which turns a 16-bit photo almost all white).

    * I;16, I;16B, I;16L, I;16N and I (Pillow opens 16-bit PNG, TIFF and PGM/PPM samples as these,
      scaled to 0..65535): the high byte, ``value >> 8`` (what Pillow itself keeps of 16-bit RGB
      files); I values outside [0, 65535] are clipped first.
    * F (float): values all within [0, 1] are scaled by 255, otherwise clipped to [0, 255]; then
      rounded to the nearest level; NaN becomes 0.
    """
    import numpy as np

    values = np.asarray(image)
    if image.mode == "F":
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        out = np.rint(np.clip(values, 0.0, 255.0))
    else:
        out = np.clip(values.astype(np.int64), 0, 65535) >> 8
    return Image.fromarray(out.astype(np.uint8))


def composite_on_white(image: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode; transparency is composited on white (stamps and clip-art
    have alpha).

    Alpha bands (RGBA, LA, PA, RGBa, La) and colour-key transparency (P, L or RGB with a
    ``transparency`` entry, as PNG tRNS gives) are composited; 16-bit and float modes are scaled
    to 8 bits by ``to_8bit``; 1, L, P, CMYK and YCbCr go through Pillow's converters.
    """
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "F":
        image = to_8bit(image)
    has_alpha = any(band in ("A", "a") for band in image.getbands())
    if has_alpha or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def eight_bit(image: Image.Image) -> Image.Image:
    """The image in its own mode, with 16-bit and float modes scaled to 8 bits (``to_8bit``).
    Conversion to RGB is the protocol's first step (lr0fm.protocol.Protocol.prepare), because the
    paper's protocol converts after resizing."""
    return to_8bit(image) if image.mode in SIXTEEN_BIT_MODES or image.mode == "F" else image


def open_image_file(path: str | os.PathLike) -> Image.Image:
    """Decode one image file fully (raises on unreadable or truncated files)."""
    with Image.open(path) as im:
        im.load()
        return eight_bit(im)


def bytes_loader(data: bytes) -> Image.Image:
    """Decode one encoded image held in memory (same rules as ``open_image_file``)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return eight_bit(im)
