"""Super-resolution baselines: LR image -> SR model -> the protocol's resize to the model input.

``lr0fm eval --sr NAME_OR_WEIGHTS`` puts an upsampler between the LR image and the classifier:

* ``bicubic`` -- the trivial baseline: the LR image upsampled straight to the input size with
  bicubic interpolation (for the usual bicubic protocol this *is* the plain protocol);
* a weights file spandrel loads (ESRGAN / Real-ESRGAN, SwinIR, HAT, DAT, SPAN, ... ``.pth``,
  ``.safetensors``, ``.ckpt``): the LR image goes through the SR network at its native scale and
  the result is resized to the input size by the protocol (``Protocol.finish``).

The HR view is never touched. The view function runs inside DataLoader worker processes, so it is
a small picklable object that loads the network lazily, once per process. Speed trade-off: in a
worker the network runs on the CPU (one thread per worker; a CUDA context cannot be shared with
forked workers); with ``--workers 0`` it runs in the main process on ``--device``, i.e. on the GPU
when there is one, which is the faster choice for heavy transformers (SwinIR, HAT) on a GPU
machine. On CPU-only machines keep the workers: they run SR for several images in parallel.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from .digests import DIGEST_CHARS
from .errors import InputError
from .extras import require
from .filedigest import file_digest
from .options import check_sr
from .protocol import HR, Protocol

BICUBIC = "bicubic"


class BicubicUpsampler:
    """LR -> input size with bicubic interpolation (the protocol's own up step, forced to bicubic)."""

    sr_id = BICUBIC

    def __init__(self, protocol: Protocol):
        self._up = replace(protocol, interpolation="bicubic")

    def __call__(self, lr: Image.Image) -> Image.Image:
        return self._up.finish(lr)


class SpandrelUpsampler:
    """LR -> SR network (any image-to-image architecture spandrel detects) at its native scale.

    Picklable: the network is (re)loaded lazily in each process and never pickled.
    """

    def __init__(self, path: str | Path, device: str = "cpu"):
        self.path, self.device = Path(path), device
        self.sha256 = file_digest(self.path)
        self._loaded: dict[str, object] = {}  # device -> spandrel ImageModelDescriptor
        descriptor = self._descriptor("cpu")  # validates the file up front, in the main process
        self.architecture, self.scale = descriptor.architecture.name, int(descriptor.scale)

    @property
    def sr_id(self) -> str:
        return f"spandrel:{self.architecture}:{self.sha256[:DIGEST_CHARS]}"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_loaded": {}}

    def _descriptor(self, device: str):
        # One copy per device, never moved: a forked worker may inherit the main process's
        # CUDA copy but only ever touches its CPU one.
        if device not in self._loaded:
            self._loaded[device] = load_sr_model(self.path, device)
        return self._loaded[device]

    def __call__(self, lr: Image.Image) -> Image.Image:
        import torch
        from torch.utils.data import get_worker_info

        descriptor = self._descriptor("cpu" if get_worker_info() is not None else self.device)
        x = torch.from_numpy(np.asarray(lr, dtype=np.uint8).copy()).permute(2, 0, 1)[None]
        x = x.to(device=descriptor.device, dtype=descriptor.dtype) / 255.0
        with torch.inference_mode():
            y = descriptor(x)  # spandrel pads to the model's size requirements and crops back
        y = (y[0].float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(np.ascontiguousarray(y))


def load_sr_model(path: str | Path, device: str = "cpu"):
    """A spandrel ImageModelDescriptor (eval mode, on ``device``) for an RGB image-to-image model,
    or InputError saying why the file cannot be used."""
    path = Path(path)
    spandrel = require("spandrel", f"--sr {path}")
    try:
        descriptor = spandrel.ModelLoader(device=device).load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise InputError(f"--sr {path}: spandrel does not recognise this network's architecture; give 'bicubic' "
                         "or an ESRGAN/Real-ESRGAN, SwinIR, HAT, ... weights file") from None
    except Exception as e:  # unknown extension, corrupt or truncated file, unpickling refused, ...
        raise InputError(f"--sr {path}: cannot be read as SR weights ({str(e).splitlines()[0][:160]})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise InputError(f"--sr {path}: {descriptor.architecture.name} is a {descriptor.purpose} model, "
                         "not an image-to-image (super-resolution) one")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise InputError(f"--sr {path}: {descriptor.architecture.name} maps {descriptor.input_channels} -> "
                         f"{descriptor.output_channels} channels; an RGB -> RGB model is needed")
    return descriptor.eval()


def make_upsampler(spec: str, protocol: Protocol, device: str = "cpu"):
    """'bicubic' or a weights file -> an upsampler (PIL LR image -> PIL image) with an ``sr_id``."""
    if spec.strip().lower() == BICUBIC:
        return BicubicUpsampler(protocol)
    return SpandrelUpsampler(Path(check_sr(spec)).expanduser(), device=device)


class SRViews:
    """image -> [R, S, S, 3] uint8: the HR view as usual; each LR view = finish(upsample(LR image))."""

    def __init__(self, protocol: Protocol, upsampler):
        self.protocol, self.upsampler = protocol, upsampler

    def with_resolutions(self, resolutions) -> "SRViews":
        """The same SR views for a subset of resolutions (evaluate makes only the pending cells)."""
        return SRViews(self.protocol.with_resolutions(resolutions), self.upsampler)

    def __call__(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB") if image.mode != "RGB" else image
        views = [self.protocol.view(image, HR) if r == HR else
                 self.protocol.finish(self.upsampler(self.protocol.lr_pil(image, int(r))))
                 for r in self.protocol.resolutions]
        return np.stack([np.asarray(v, dtype=np.uint8) for v in views])


def sr_view_fn(protocol: Protocol, spec: str, device: str = "cpu") -> tuple[SRViews, str]:
    """(view function for ``evaluate``, SR model id for the record's variant)."""
    upsampler = make_upsampler(spec, protocol, device=device)
    return SRViews(protocol, upsampler), upsampler.sr_id
