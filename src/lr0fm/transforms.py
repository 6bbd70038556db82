"""The protocol's low-resolution view as an image transform (torchvision-style), for training
and inspection: ``lr0fm.LowResolution``."""
from __future__ import annotations

import numbers
import sys
from typing import TYPE_CHECKING, Union

from .protocol import Protocol, parse_resolutions

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .models.base import ZeroShotModel

Resolution = Union[int, str]  # pixels, or "hr" for the model's own input size


class LowResolution:
    """The protocol's low-resolution view as an image transform: down to ``resolution`` px, back
    up to ``size``, both with ``interpolation`` (antialiased, Pillow), exactly as ``lr0fm eval``
    makes it. ``resolution="hr"`` is the same chain without the down step (the HR view).

    mode: ``"shortest"`` (shorter side -> r -> S, centre crop S x S; CLIP-style) or ``"squash"``
        (r x r -> S x S; SigLIP-style).

    Takes a PIL image (returns an RGB PIL image, S x S) or a tensor: [C, H, W] or [N, C, H, W],
    uint8 or float in [0, 1], C = 1 (grey: 1 channel out), 3 (RGB) or 4 (RGBA: 3 channels out);
    the result keeps the input's dtype, device and tensor type (e.g. ``tv_tensors.Image``). The
    views are the PIL chain's pixels: a uint8 image is exact; a float image is read as
    ``v2.ToDtype(torch.uint8, scale=True)`` reads it and its view scaled back as
    ``v2.ToDtype(dtype, scale=True)``. Put it before ``Normalize``.

    rgb_order: when non-RGB images (grey, palette, alpha) become RGB, as ``--rgb-order``:
        ``"first"`` (lr0fm's native order: transparency on white, then the resizes) or ``"last"``
        (the LR0.FM authors' chain, e.g. ``--protocol paper:OpenCLIP``: resized in the file's own
        mode, converted after; palette images then resize with nearest-neighbour).
    hr_via: as ``--hr-via``, the HR view through a down step to this size (px) when it differs
        from ``size`` (the authors' route at 224 for larger models); None or 0: straight.
    """

    def __init__(self, resolution: Resolution, *, size: int, mode: str = "shortest", interpolation: str = "bicubic",
                 rgb_order: str = "first", hr_via: int | None = None):
        from .checks import check_kinds

        check_kinds("LowResolution", [
            ("resolution", resolution, (numbers.Integral, str), "pixels (an int) or 'hr'"),
            ("size", size, (numbers.Integral,), "the model's input size (a whole number of pixels)"),
            ("mode", mode, (str,), "'shortest' or 'squash'"), ("interpolation", interpolation, (str,), "a filter name"),
            ("rgb_order", rgb_order, (str,), "'first' or 'last'"),
            ("hr_via", hr_via, (numbers.Integral,), "a size in px (a whole number)")], optional=("hr_via",))
        self.resolution = parse_resolutions([resolution])[0]
        # mean/std are the model's business (Normalize after this transform); views ignore them.
        # rgb_order and hr_via apply as --rgb-order and --hr-via apply to a model's protocol.
        self._protocol = Protocol(input_size=int(size), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), mode=mode,
                                  interpolation=interpolation, resolutions=(self.resolution,)
                                  ).override(rgb_order=rgb_order, hr_via=hr_via)

    @classmethod
    def for_model(cls, model: ZeroShotModel | Protocol, resolution: Resolution) -> "LowResolution":
        """The view ``lr0fm eval`` feeds ``model`` (or makes with a protocol) at ``resolution``: S,
        mode, interpolation, RGB order and HR route from the model's preprocessing (so
        ``LowResolution(r, size=, mode=, interpolation=, rgb_order=, hr_via=)`` with the values
        its repr shows makes the same pixels); normalising stays with the model."""
        if not isinstance(model, Protocol) and not callable(getattr(model, "protocol", None)):
            raise TypeError(f"LowResolution.for_model() argument 'model' must be a model from lr0fm.create_model, "
                            f"not {type(model).__name__} {model!r:.60}")
        protocol = (model.with_resolutions([resolution]) if isinstance(model, Protocol)
                    else model.protocol([resolution]))
        transform = cls(resolution, size=protocol.input_size, mode=protocol.mode, interpolation=protocol.interpolation,
                        rgb_order=protocol.rgb_order, hr_via=protocol.hr_via)
        transform._protocol = protocol  # the model's own: the view it is fed, whatever field a protocol grows
        return transform

    @property
    def size(self) -> int:
        return self._protocol.input_size

    @property
    def mode(self) -> str:
        return self._protocol.mode

    @property
    def interpolation(self) -> str:
        return self._protocol.interpolation

    @property
    def rgb_order(self) -> str:
        return self._protocol.rgb_order

    @property
    def hr_via(self) -> int | None:
        return self._protocol.hr_via

    def __repr__(self) -> str:
        """The call that makes this transform (the defaults left out)."""
        quirks = (", rgb_order='last'" if self.rgb_order == "last" else "") + \
            (f", hr_via={self.hr_via}" if self.hr_via else "")
        return (f"{type(self).__name__}({self.resolution!r}, size={self.size}, mode={self.mode!r}, "
                f"interpolation={self.interpolation!r}{quirks})")

    def __call__(self, image):
        from PIL import Image

        if isinstance(image, Image.Image):
            return self._protocol.view(image, self.resolution)
        torch = sys.modules.get("torch")
        if torch is not None and torch.is_tensor(image):
            return self._tensor(image)
        raise TypeError(f"LowResolution takes a PIL image or a [C, H, W] / [N, C, H, W] tensor, "
                        f"got {type(image).__name__}")

    def _tensor(self, x: torch.Tensor) -> torch.Tensor:
        import torch
        from torchvision.transforms.v2.functional import to_dtype

        from .errors import InputError

        if x.dim() not in (3, 4) or x.shape[-3] not in (1, 3, 4):
            raise InputError(f"LowResolution takes [C, H, W] or [N, C, H, W] tensors with 1, 3 or 4 (RGBA) channels, "
                             f"got shape {tuple(x.shape)}")
        if x.is_floating_point():
            if x.numel() and (x.min() < 0 or x.max() > 1):
                raise InputError("LowResolution takes float images in [0, 1]; put it before Normalize")
            pixels = to_dtype(x.as_subclass(torch.Tensor), torch.uint8, scale=True)
        elif x.dtype == torch.uint8:
            pixels = x.as_subclass(torch.Tensor)
        else:
            raise InputError(f"LowResolution takes uint8 or float tensors, got {x.dtype}")
        channels, S = (1 if x.shape[-3] == 1 else 3), self.size
        batch = pixels.reshape(-1, *pixels.shape[-3:])
        if not len(batch):
            out = torch.empty((0, channels, S, S), dtype=torch.uint8, device=x.device)
        elif batch.device.type != "cpu" and batch.shape[1] != 4:
            out = self._device_views(batch)  # stays on the GPU
        else:
            out = torch.stack([self._view(image) for image in batch.cpu()]).to(x.device)
        out = out.reshape(*x.shape[:-3], channels, S, S)
        if x.is_floating_point():
            out = to_dtype(out, x.dtype, scale=True)
        return out if type(x) is torch.Tensor else out.as_subclass(type(x))  # e.g. a tv_tensors.Image

    def _device_views(self, batch: torch.Tensor) -> torch.Tensor:
        """[N, 1|3, H, W] uint8 -> [N, 1|3, S, S] views on the batch's device, the same pixels as
        the PIL chain (lr0fm.tensor_views; for grey and RGB images the protocol's RGB conversion
        commutes with its resizes)."""
        from . import tensor_views

        rgb = batch.expand(-1, 3, -1, -1).permute(0, 2, 3, 1)  # [N, H, W, 3]
        views = tensor_views.make_views(self._protocol, rgb, [self.resolution])[:, 0]  # [N, S, S, 3]
        return views.permute(0, 3, 1, 2)[:, : batch.shape[1]].contiguous()

    def _view(self, image: torch.Tensor) -> torch.Tensor:
        """One [C, H, W] uint8 image on the CPU -> its view through the PIL chain: [1, S, S] for a
        grey image, else [3, S, S] (the protocol makes RGB; RGBA loses its alpha as in lr0fm eval)."""
        import numpy as np
        import torch
        from PIL import Image

        array = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        pil = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)  # L, RGB or RGBA
        view = torch.from_numpy(np.array(self._protocol.view(pil, self.resolution), dtype=np.uint8))
        # a grey image is RGB with three equal channels in the protocol: keep one
        return view.permute(2, 0, 1)[:1 if image.shape[0] == 1 else 3]
