"""What an evaluation will compute, decided before any image is decoded: its identity, cells,
where views are made and who decodes (``lr0fm sweep --dry-run`` and resume use it too)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import tensor_views
from ..datasets.base import LabeledImages
from ..images import open_image_file
from ..identity import Evaluation, evaluation
from ..models.base import ZeroShotModel
from ..options import EvalConfig
from ..protocol import Protocol, ProtocolError
from .loading import JPEG_MAGIC, ViewFn


def views_and_decoder(cfg: EvalConfig, protocol: Protocol, view_fn) -> tuple[str, str]:
    """Where views are made and who decodes, for this run (see EvalConfig)."""
    cuda = torch.device(cfg.device).type == "cuda"
    views = cfg.views or ("device" if cuda else "pil")
    if views == "device" and (view_fn is not None or not tensor_views.supports(protocol)):
        if cfg.views == "device":
            raise ProtocolError("--views device makes the protocol's own views only (not with --sr or "
                                f"{protocol.interpolation!r} resizes); use --views pil")
        views = "pil"
    decoder = cfg.decoder or ("device" if views == "device" and cuda else "pil")
    if decoder == "device" and (views != "device" or protocol.rgb_last):
        if cfg.decoder == "device":
            raise ProtocolError("--decoder device needs --views device and a protocol that converts to RGB first")
        decoder = "pil"
    return views, decoder


JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")


def holds_jpeg(data: LabeledImages) -> bool:
    """Whether any image of ``data`` is a JPEG, the one format the device decoder decodes (the
    rest go to PIL): image files by their first bytes, those named like JPEGs first; samples held
    as encoded bytes (hub copies) by their bytes; data that gives no bytes (arrays) never. Stops
    at the first JPEG, so JPEG data costs one read."""
    if data.load is open_image_file:
        paths = [str(ref) for ref, _ in data.samples]
        for path in sorted(paths, key=lambda p: not p.lower().endswith(JPEG_SUFFIXES)):
            try:
                with open(path, "rb") as f:
                    if f.read(len(JPEG_MAGIC)) == JPEG_MAGIC:
                        return True
            except OSError:
                continue  # unreadable: skipped and counted in the pass
        return False
    if getattr(data.load, "read", None) is None:
        return False
    for i in range(len(data)):
        try:
            encoded = data.encoded(i)
        except OSError:
            continue
        if encoded is not None and encoded[:len(JPEG_MAGIC)] == JPEG_MAGIC:
            return True
    return False


def decoder_name(decoder: str, device: str) -> str:
    """The decoder as recorded in the identity."""
    return "pil" if decoder == "pil" else f"torchvision-{torch.device(device).type}"


def identify(model: ZeroShotModel, data: LabeledImages, protocol: Protocol, cfg: EvalConfig,
             decoder: str = "pil") -> Evaluation:
    """The identity of this evaluation (lr0fm.identity decides what is in it)."""
    return evaluation(model, data, protocol, amp=cfg.amp, topk=cfg.topk, variant=cfg.variant, limit=cfg.limit,
                      decoder=decoder_name(decoder, cfg.device))


@dataclass(frozen=True)
class Plan:
    """One (model, dataset) evaluation before it runs."""

    cfg: EvalConfig
    data: LabeledImages          # after --limit
    protocol: Protocol
    evaluation: Evaluation
    cells: dict                  # resolution -> cell id
    views: str                   # where views are made: "pil" | "device"
    decoder: str                 # who decodes JPEGs: "pil" | "device"


def plan(model: ZeroShotModel, data: LabeledImages, cfg: EvalConfig, view_fn: ViewFn | None = None,
         protocol: Protocol | None = None) -> Plan:
    """What ``evaluate`` will compute. No image is decoded (``lr0fm sweep --dry-run`` uses it);
    file contents are hashed once and remembered (lr0fm.filedigest). The decoder recorded is
    the one that decodes the images: ``device`` only when the data holds a JPEG."""
    protocol = (protocol or model.protocol(cfg.resolutions)).check_bounds(cfg.resolutions)
    views, decoder = views_and_decoder(cfg, protocol, view_fn)
    if cfg.limit is not None:
        data = data.subset(range(min(cfg.limit, len(data))))
    if decoder == "device" and not holds_jpeg(data):
        decoder = "pil"  # the device decoder would decode nothing: PIL decodes them all, as in a pil run
    ev = identify(model, data, protocol, cfg, decoder)
    return Plan(cfg, data, protocol, ev, {r: ev.cell(r) for r in cfg.resolutions}, views, decoder)
