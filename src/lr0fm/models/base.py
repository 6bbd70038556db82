"""The one model interface the pipeline sees: ZeroShotModel.

Backends (open_clip, transformers, ConSE, ...) are thin adapters that build one. Family quirks
(resize mode, text lower-casing, padding) are fields of the configs here, filled from the
backend's own preprocessing config or the catalog, never branches in the pipeline.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import nn

from ..protocol import DEFAULT_RESOLUTIONS, Protocol
from ..errors import ModelError  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class TextCfg:
    """How class prompts are turned into text: per-family quirks as data."""

    lowercase: bool = False
    padding: str = "longest"  # or "max_length" (SigLIP was trained on padded text)
    max_length: int | None = None


@dataclass
class ModelInfo:
    """Provenance stored with every result."""

    model_id: str
    backend: str
    weights: str | None = None  # file, tag or hub id the weights came from
    # the weights' fingerprint, made by lr0fm.identity's weights_from_* constructors; None ->
    # lr0fm.identity.weights_digest digests the state dict
    weights_hash: str | None = None
    extra: dict = field(default_factory=dict)
    kwargs: dict = field(default_factory=dict)  # backend kwargs the model was built with (identity)

    def as_dict(self) -> dict:
        return asdict(self)


class ZeroShotModel(nn.Module):
    """Image and text encoders sharing one embedding space.

    ``encode_image`` takes a normalised [B, 3, S, S] batch and ``encode_text`` a list of
    strings; both return L2-normalised float32 embeddings. ``tower`` is the vision tower
    (the module LR tokens and layer hooks attach to).
    """

    def __init__(self, info: ModelInfo, preprocess: Protocol, text_cfg: TextCfg | None = None):
        super().__init__()
        self.info = info
        self.preprocess = preprocess
        self.text_cfg = text_cfg or TextCfg()

    # -- to implement per backend ---------------------------------------------------------
    def _image_features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    @property
    def tower(self) -> nn.Module:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        feats = self._image_features(images.to(self.device))
        return nn.functional.normalize(feats.float(), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        texts = [t.lower() for t in texts] if self.text_cfg.lowercase else list(texts)
        feats = self._text_features(texts)
        return nn.functional.normalize(feats.float(), dim=-1)

    def protocol(self, resolutions: Sequence[int | str] = DEFAULT_RESOLUTIONS) -> Protocol:
        return self.preprocess.with_resolutions(resolutions)

