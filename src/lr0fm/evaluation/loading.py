"""What the DataLoader workers do per image: decode it (or only read JPEG bytes for the device
decoder) and make the views of the view sets whose views are made in the workers."""
from __future__ import annotations

import os
import re
import sys
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..datasets.base import LabeledImages
from ..errors import ViewError
from ..images import composite_on_white


# Decoding errors that mean "this file is unreadable": skip, count, report.
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError)


# image -> [R, S, S, 3] uint8 views (normalised later, on the model's device)
ViewFn = Callable[[Image.Image], np.ndarray]


JPEG_MAGIC = b"\xff\xd8\xff"


class _Payload:
    """One image's worker output: the prepared RGB original for the device, and/or the PIL views
    of each view set made in the worker, or the JPEG bytes for the device decoder; None: unreadable."""

    __slots__ = ("original", "views", "jpeg")

    def __init__(self, original=None, views=None, jpeg=None):
        self.original, self.views, self.jpeg = original, views or {}, jpeg


class _Work:
    """What the workers do per image: decode (or only read JPEG bytes) and make the PIL-side views.
    ``pil_sets``: (index, view function, resolutions to pass it or None, resolutions it makes)
    of the view sets whose views workers make. ``rgb_last_sets``: (index, protocol, resolutions) of
    the device view sets whose protocol resizes before converting to RGB: the device makes their views
    from the RGB original, which equals the protocol's chain only for RGB and grey images, so for
    other modes (palette, RGBA, CMYK, ...) the worker makes those views with PIL."""

    def __init__(self, pil_sets, device_views: bool, device_decode: bool, rgb_last_sets=()):
        self.pil_sets, self.device_views, self.device_decode = pil_sets, device_views, device_decode
        self.rgb_last_sets = list(rgb_last_sets)

    def __call__(self, data: LabeledImages, index: int):
        if self.device_decode and not self.pil_sets:
            try:
                encoded = data.encoded(index)
            except OSError:
                return None
            if encoded is not None and encoded[:3] == JPEG_MAGIC:
                return _Payload(jpeg=np.frombuffer(encoded, dtype=np.uint8).copy())
        try:
            image = data.load_image(index)
        except UNREADABLE:
            return None  # an unreadable file: skipped and counted
        except MemoryError:
            raise ViewError(f"not enough memory to decode {data.sample_id(index)!r}; use fewer --workers "
                            "or a smaller --batch-size, or leave the image out") from None
        views = {}
        pil_side = list(self.pil_sets)
        if image.mode not in ("RGB", "L"):
            pil_side += [(g, protocol.views_uint8, res, res) for g, protocol, res in self.rgb_last_sets]
        for g, fn, res, made in pil_side:
            try:
                views[g] = fn(image) if res is None else fn(image, res)
            except MemoryError:
                raise ViewError(_out_of_memory(data.sample_id(index), image, made)) from None
            except Exception as e:  # a broken view maker (e.g. an SR model) is an error, never a skip
                raise ViewError(f"making the views of {data.sample_id(index)!r} failed: {type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200] if str(e) else ''}; fix or drop --sr / the view "
                                "function and rerun") from e
        try:
            original = np.array(composite_on_white(image), dtype=np.uint8) if self.device_views else None
        except MemoryError:
            raise ViewError(_out_of_memory(data.sample_id(index), image, None)) from None
        return _Payload(original=original, views=views)


def _out_of_memory(sample_id: str, image: Image.Image, resolutions) -> str:
    """The one line for a view this process had no memory for: the image, its size and the
    largest resolution asked of it (the view that needs the most)."""
    sizes = [r for r in resolutions or () if isinstance(r, int)]
    view = f" up to {max(sizes)} px" if sizes else ""
    return (f"not enough memory to make the views of {sample_id!r} ({image.width}x{image.height} px){view}; "
            "give smaller --resolutions, fewer --workers or a smaller --batch-size")


class _ImageDataset(Dataset):
    def __init__(self, data: LabeledImages, indices: Sequence[int], work: _Work):
        self.data, self.indices, self.work = data, list(indices), work

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.indices[i], self.work(self.data, self.indices[i])


def _collate(items):
    return [i for i, _ in items], [p for _, p in items]


PR_SET_PDEATHSIG = 1  # linux/prctl.h


class EndWithParent:
    """A DataLoader ``worker_init_fn``: the worker is killed (SIGKILL) when the process that
    started it dies, however it dies. PyTorch's own check runs only while a worker waits for
    work; a worker blocked writing a batch to a dead parent's pipe would otherwise live on.
    Linux only (prctl); elsewhere the worker keeps PyTorch's check alone."""

    def __init__(self, parent: int | None = None):
        self.parent = os.getpid() if parent is None else parent

    def __call__(self, _worker_id: int) -> None:
        if not sys.platform.startswith("linux"):
            return
        import ctypes
        import signal

        # not the main process's handler (lr0fm.cli); under SLURM the main process decides what a
        # SIGTERM (scancel, scontrol requeue: sent to every process of the job) means, and the
        # workers end with it
        signal.signal(signal.SIGTERM, signal.SIG_IGN if "SLURM_JOB_ID" in os.environ else signal.SIG_DFL)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != self.parent:  # the parent died before prctl took effect
            os._exit(1)


def default_workers(device: str = "cpu") -> int:
    """Decode workers per process: the cores this rank has, minus one for the main process.

    On CPU the model needs the cores too (capped at 8); on GPU decoding is the bottleneck."""
    cores = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    cap = 8 if torch.device(device).type == "cpu" else 32
    return max(0, min(cap, cores - 1))


def _decode_on_device(payloads: list, device: torch.device) -> list:
    """JPEG bytes -> prepared RGB originals decoded in one batch on ``device``; a JPEG the device
    decoder refuses is unreadable, as a file PIL refuses is."""
    from torchvision.io import ImageReadMode, decode_jpeg

    at = [i for i, p in enumerate(payloads) if p is not None and p.jpeg is not None]
    if not at:
        return payloads
    data = [torch.from_numpy(payloads[i].jpeg) for i in at]
    try:
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:  # one bad file fails the batch: decode one by one to find it
        images = []
        for d in data:
            try:
                images.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                images.append(None)
    out = list(payloads)
    for i, image in zip(at, images):
        out[i] = None if image is None else _Payload(original=image.permute(1, 2, 0).contiguous())
    return out


def _batches(loader):
    """The loader's batches; a ViewError raised in a worker comes back as its own one line."""
    try:
        yield from loader
    except ViewError as e:
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        raise ViewError(lines[-1].split("ViewError: ", 1)[-1] if lines else "making the views failed") from None


_WORKER_DIED = re.compile(r"DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\) (is killed by signal: ([^.]*)|exited unexpectedly)")


def worker_died(error: BaseException) -> ViewError | None:
    """PyTorch's error for a data worker that died (raised wherever the main process is when it
    notices) as one line, e.g. for the kernel's out-of-memory killer; None for any other error."""
    found = _WORKER_DIED.match(str(error)) if isinstance(error, RuntimeError) else None
    if found is None:
        return None
    how = f"was killed by signal {found.group(3).strip()}" if found.group(3) else "exited unexpectedly"
    # stopped by someone (a scheduler's SIGTERM), not out of memory
    if found.group(3) and ("Terminated" in found.group(3) or "SIGTERM" in found.group(3)):
        return ViewError(f"a data worker (pid {found.group(1)}) {how}: the run was asked to stop; rerun to resume")
    return ViewError(f"a data worker (pid {found.group(1)}) {how}; when memory ran out, give smaller "
                     "--resolutions, fewer --workers or a smaller --batch-size")
