"""The low-resolution (LR) test protocol: one decoded image -> the HR view and every LR view.

An LR view of resolution r is the original image downsampled to r px and upsampled back to the
model's input size S, both with the same (antialiased, PIL-semantics) interpolation, followed by
the model's own normalisation. Two resize modes, taken from the model's preprocessing config:

* ``shortest`` -- shorter side -> r, shorter side -> S, centre crop S x S (CLIP-style eval);
* ``squash``   -- r x r -> S x S (SigLIP-style eval).

The HR reference is the same chain without the down step. Everything in lr0fm that resizes
(evaluation, token training views, analyses, SR baselines) goes through this module.
"""
from __future__ import annotations

import numbers
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
from PIL import Image

from .errors import ProtocolError  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # for the annotations: importing lr0fm.protocol does not load torch
    import torch

HR = "hr"  # the resolution key of the high-resolution reference view
LR_RESOLUTIONS: tuple[int, ...] = (16, 32, 64, 128)  # the paper's LR sizes
DEFAULT_RESOLUTIONS: tuple[int | str, ...] = LR_RESOLUTIONS + (HR,)  # what an evaluation runs by default
RESIZE_MODES = ("shortest", "squash")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box")
# when an image becomes RGB: before the resizes (lr0fm: transparency on white) or after them (the
# LR0.FM authors' loaders; PIL then resizes palette images with nearest-neighbour)
RGB_ORDERS = ("first", "last")
# Bounds on the work one view may take: a view's intermediate image grows with the square of its
# resolution (99999 px is tens of GB per image in a data worker), so resolutions above
# MAX_UPSCALE x the input size, and input sizes above MAX_INPUT_SIZE, are refused up front.
MAX_INPUT_SIZE = 4096
MAX_UPSCALE = 4
MAX_RESOLUTION = MAX_UPSCALE * MAX_INPUT_SIZE

_PIL_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


def parse_resolutions(values: str | Iterable[int | str]) -> list[int | str]:
    """Parse '16,32,hr' or [16, 'hr'] into validated resolution keys (ints > 0 or 'hr')."""
    items = values.split(",") if isinstance(values, str) else list(values)
    out: list[int | str] = []
    for item in items:
        text = str(item).strip().lower()
        if not text:
            continue
        if text == HR:
            key: int | str = HR
        else:
            try:
                key = int(text)
            except ValueError:
                raise ProtocolError(f"resolution {item!r} is not an integer number of pixels or 'hr'; "
                                    "give e.g. --resolutions 16,32,64,128") from None
            if key <= 0:
                raise ProtocolError(f"resolution {key} must be a positive number of pixels; "
                                    "give e.g. --resolutions 16,32,64,128")
            if key > MAX_RESOLUTION:
                raise ProtocolError(f"resolution {key} px is above the largest lr0fm makes ({MAX_RESOLUTION} px, "
                                    f"{MAX_UPSCALE}x the largest input size {MAX_INPUT_SIZE}); give resolutions "
                                    "up to 4x the model's input size, e.g. --resolutions 16,32,64,128")
        if key not in out:
            out.append(key)
    if not out:
        raise ProtocolError("no resolutions given; give e.g. --resolutions 16,32,64,128")
    return out


def check_input_size(size: int) -> int:
    """An input size S in 1..MAX_INPUT_SIZE px (every view is S x S), else one ProtocolError line."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise ProtocolError(f"input size {size!r} must be a whole number of pixels")
    if size <= 0:
        raise ProtocolError(f"input size {size} must be a positive number of pixels")
    if size > MAX_INPUT_SIZE:
        raise ProtocolError(f"input size {size} px is above the largest lr0fm makes views at ({MAX_INPUT_SIZE} px); "
                            "give a smaller --input-size")
    return size


def check_hr_via(size: int | None) -> int | None:
    """An HR route (``--hr-via``): None, 0 (straight to the input size) or a size in px up to
    MAX_RESOLUTION, as resolutions are bounded (the HR view is resized to it); else one line."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise ProtocolError(f"--hr-via {size!r} must be a whole number of pixels (0: no HR down step)")
    if size < 0:
        raise ProtocolError(f"--hr-via {size} must be a size in px, or 0 for no HR down step")
    if size > MAX_RESOLUTION:
        raise ProtocolError(f"--hr-via {size} px is above the largest lr0fm makes ({MAX_RESOLUTION} px, "
                            f"{MAX_UPSCALE}x the largest input size {MAX_INPUT_SIZE}); give a size up to {MAX_UPSCALE}x "
                            "the model's input size, or 0 for no HR down step")
    return size


# The fields every stored record's protocol has (ids are digests of ``describe()``). A field added
# later is described only when it differs from its default: every stored id stays the same, a new
# knob left at its default adds nothing to an id, and a knob that is set makes a new one.
DESCRIBED_ALWAYS = ("input_size", "mean", "std", "mode", "interpolation", "antialias", "source", "rgb_last",
                    "hr_via")


@dataclass(frozen=True)
class Protocol:
    """How HR and LR views are made for one model. Hashed and stored with every result."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mode: str = "shortest"
    interpolation: str = "bicubic"
    antialias: bool = True
    resolutions: tuple[int | str, ...] = field(default=DEFAULT_RESOLUTIONS)
    # which preprocessing this is: "native" (the model's own), "paper" (what the LR0.FM authors
    # ran, lr0fm/catalog/paper_protocol.yaml), with "+override" when the user changed a setting
    source: str = "native"
    # the authors' quirks: convert to RGB after the resizes (palette images resize nearest), and
    # make the HR view through a down step to ``hr_via`` px when it differs from input_size
    rgb_last: bool = False
    hr_via: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in RESIZE_MODES:
            raise ProtocolError(f"resize mode {self.mode!r} unknown; use one of {RESIZE_MODES}")
        if self.interpolation not in _PIL_FILTERS:
            raise ProtocolError(f"interpolation {self.interpolation!r} unknown; use one of {sorted(_PIL_FILTERS)}")
        if not self.antialias:
            # PIL always antialiases when downsampling; a non-antialiased chain is only offered
            # by the tensor path (lr0fm.tensor_views) and is not the paper's protocol.
            raise ProtocolError("the PIL protocol is always antialiased; antialias=False is not supported")
        check_input_size(self.input_size)
        object.__setattr__(self, "resolutions", tuple(parse_resolutions(self.resolutions)))

    def check_bounds(self, resolutions: Sequence[int | str] | None = None) -> "Protocol":
        """Refuse (one ProtocolError line) resolutions (default: its own) above MAX_UPSCALE x the
        input size: such a view costs memory with the square of its size and shows nothing the HR
        view does not."""
        largest = MAX_UPSCALE * self.input_size
        over = [r for r in (self.resolutions if resolutions is None else resolutions) if r != HR and r > largest]
        if over:
            raise ProtocolError(f"resolution {over[0]} px is more than {MAX_UPSCALE}x the model's input size "
                                f"{self.input_size} px; give resolutions up to {largest} px (and 'hr')")
        if self.hr_via and self.hr_via > largest:
            raise ProtocolError(f"--hr-via {self.hr_via} px is more than {MAX_UPSCALE}x the model's input size "
                                f"{self.input_size} px; give a size up to {largest} px, or 0 for no HR down step")
        return self

    # -- identity ---------------------------------------------------------------------------
    def describe(self, resolution: int | str | None = None) -> dict:
        """The protocol as plain data (stored with every record): the DESCRIBED_ALWAYS fields, and
        each later field where it differs from its default (the rule beside DESCRIBED_ALWAYS)."""
        d = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in DESCRIBED_ALWAYS or (f.name != "resolutions" and value != _default(f)):
                d[f.name] = list(value) if isinstance(value, tuple) else value
        if resolution is not None:
            d["resolution"] = resolution
        return d

    @classmethod
    def from_description(cls, d: dict, resolutions: Sequence[int | str] = DEFAULT_RESOLUTIONS) -> "Protocol":
        """The protocol a ``describe()`` (a record's protocol) was made from: every field it stores,
        so views remade from a record are the pixels the model saw (RGB order and HR route too)."""
        names = {f.name for f in fields(cls)} - {"resolutions"}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names},
                   resolutions=tuple(resolutions))

    def with_resolutions(self, resolutions: Sequence[int | str]) -> "Protocol":
        return replace(self, resolutions=tuple(resolutions))

    def override(self, resize_mode: str | None = None, input_size: int | None = None,
                 interpolation: str | None = None, rgb_order: str | None = None,
                 hr_via: int | None = None) -> "Protocol":
        """This protocol with the settings given changed (None: kept), as ``--resize-mode``,
        ``--input-size``, ``--interpolation``, ``--rgb-order`` (first: RGB before the resizes,
        last: after, the paper's order) and ``--hr-via`` (0: the HR view straight to the input
        size) change it; its source says "+override"."""
        for name, value, allowed in (("--resize-mode", resize_mode, RESIZE_MODES),
                                     ("--interpolation", interpolation, INTERPOLATIONS),
                                     ("--rgb-order", rgb_order, RGB_ORDERS)):
            if value is not None and value not in allowed:
                raise ProtocolError(f"{name} {value!r} unknown; use one of {', '.join(allowed)}")
        if input_size is not None and input_size < 1:
            raise ProtocolError(f"--input-size {input_size} must be a positive number of pixels")
        if hr_via is not None and hr_via < 0:
            raise ProtocolError(f"--hr-via {hr_via} must be a size in px (0: no HR down step)")
        rgb_last = None if rgb_order is None else rgb_order == "last"
        overrides = {k: v for k, v in (("mode", resize_mode), ("input_size", input_size),
                                       ("interpolation", interpolation), ("rgb_last", rgb_last)) if v is not None}
        if hr_via is not None:
            overrides["hr_via"] = hr_via or None  # 0: the HR view goes straight to the input size
        return replace(self, source=self.source + "+override", **overrides) if overrides else self

    @property
    def rgb_order(self) -> str:
        """When images become RGB: "first" (before the resizes) or "last" (after them)."""
        return "last" if self.rgb_last else "first"

    # -- views ------------------------------------------------------------------------------
    @property
    def pil_filter(self):
        return _PIL_FILTERS[self.interpolation]

    def prepare(self, image: Image.Image) -> Image.Image:
        """The decoded image as the resizes see it: RGB with transparency on white (lr0fm's
        order), or untouched when the protocol converts after resizing (the paper's order)."""
        if self.rgb_last or image.mode == "RGB":
            return image
        from .images import composite_on_white
        return composite_on_white(image)

    def view(self, image: Image.Image, resolution: int | str) -> Image.Image:
        """The S x S RGB PIL view of ``image`` at ``resolution`` (an int px or 'hr')."""
        image = self.prepare(image)
        S, f = self.input_size, self.pil_filter
        if resolution == HR and self.hr_via and self.hr_via != S:
            resolution = self.hr_via
        if self.mode == "squash":
            if resolution != HR:
                image = image.resize((int(resolution), int(resolution)), f)
            image = image.resize((S, S), f)
        else:
            if resolution != HR:
                image = image.resize(_shortest_side_size(image.size, int(resolution)), f)
            image = _center_crop(image.resize(_shortest_side_size(image.size, S), f), S)
        return image.convert("RGB") if image.mode != "RGB" else image

    def normalize(self, view: Image.Image) -> np.ndarray:
        """float32 CHW array normalised with the model's mean/std."""
        arr = np.asarray(view, dtype=np.float32) / 255.0
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    def views(self, image: Image.Image, resolutions: Sequence[int | str] | None = None) -> np.ndarray:
        """All views of one decoded image, stacked as [R, 3, S, S] float32 (one decode, R views)."""
        return np.stack([self.normalize(v) for v in self._views(image, resolutions)])

    def views_uint8(self, image: Image.Image, resolutions: Sequence[int | str] | None = None) -> np.ndarray:
        """All views as [R, S, S, 3] uint8: 4x less to move between processes than float32;
        ``normalize_batch`` finishes them on the model's device."""
        return np.stack([np.asarray(v, dtype=np.uint8) for v in self._views(image, resolutions)])

    def _views(self, image: Image.Image, resolutions: Sequence[int | str] | None) -> list[Image.Image]:
        keys = self.resolutions if resolutions is None else resolutions
        image = self.prepare(image)
        return [self.view(image, r) for r in keys]

    def normalize_batch(self, views_uint8: "torch.Tensor") -> "torch.Tensor":
        """[..., S, S, 3] uint8 tensor -> [..., 3, S, S] float32 normalised (same math as ``normalize``).

        The three float32 operations of ``normalize`` run in place on one channels-first tensor: one
        allocation instead of five temporaries (it was the largest cost of the pass outside the forward)."""
        import torch
        *lead, h, w, c = views_uint8.shape
        x = torch.empty((*lead, c, h, w), dtype=torch.float32, device=views_uint8.device)
        x.copy_(views_uint8.movedim(-1, -3))
        # built on the host and copied without a wait: a blocking copy would make the host wait for the
        # device at every forward batch
        mean = torch.tensor(self.mean, dtype=torch.float32).view(c, 1, 1).to(x.device, non_blocking=True)
        std = torch.tensor(self.std, dtype=torch.float32).view(c, 1, 1).to(x.device, non_blocking=True)
        return x.div_(255.0).sub_(mean).div_(std)

    def lr_pil(self, image: Image.Image, resolution: int) -> Image.Image:
        """Only the down step (what an SR model receives): r px on the short side, or r x r."""
        from .images import composite_on_white
        image = composite_on_white(image) if image.mode != "RGB" else image
        if self.mode == "squash":
            return image.resize((resolution, resolution), self.pil_filter)
        return image.resize(_shortest_side_size(image.size, resolution), self.pil_filter)

    def finish(self, image: Image.Image) -> Image.Image:
        """The protocol's resize to S applied to an already-made (LR or SR) image."""
        return self.view(image, HR)


def _default(f):
    return f.default_factory() if f.default is MISSING else f.default


def _shortest_side_size(size: tuple[int, int], target: int) -> tuple[int, int]:
    """(w, h) with the shorter side == target and aspect kept (torchvision Resize(int) rounding)."""
    w, h = size
    if w <= h:
        return target, max(1, int(target * h / w))
    return max(1, int(target * w / h)), target


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    """Centre crop exactly like torchvision's CenterCrop (rounded offsets)."""
    w, h = image.size
    left = int(round((w - size) / 2.0))
    top = int(round((h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))
