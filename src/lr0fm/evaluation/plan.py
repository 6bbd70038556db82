"""What an evaluation will compute, decided before any image is decoded: its identity, cells,
where views are made and who decodes (``lr0fm sweep --dry-run`` and resume use it too)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import gpu_resize
from ..datasets.base import LabeledImages
from ..identity import Evaluation, evaluation
from ..models.base import ZeroShotModel
from ..options import EvalConfig
from ..protocol import Protocol, ProtocolError
from .loading import ViewFn


def views_and_decoder(cfg: EvalConfig, protocol: Protocol, view_fn) -> tuple[str, str]:
    """Where views are made and who decodes, for this run (see EvalConfig)."""
    cuda = torch.device(cfg.device).type == "cuda"
    views = cfg.views or ("device" if cuda else "pil")
    if views == "device" and (view_fn is not None or not gpu_resize.supports(protocol)):
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
    file contents are hashed once and remembered (lr0fm.filedigest)."""
    protocol = (protocol or model.protocol(cfg.resolutions)).check_bounds(cfg.resolutions)
    views, decoder = views_and_decoder(cfg, protocol, view_fn)
    if cfg.limit is not None:
        data = data.subset(range(min(cfg.limit, len(data))))
    ev = identify(model, data, protocol, cfg, decoder)
    return Plan(cfg, data, protocol, ev, {r: ev.cell(r) for r in cfg.resolutions}, views, decoder)
