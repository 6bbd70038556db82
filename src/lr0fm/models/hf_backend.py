"""Hugging Face transformers backend: CLIPModel, SiglipModel and any model exposing
``get_image_features`` / ``get_text_features`` (a hub id or a local ``save_pretrained`` folder),
plus the model classes in ``FEATURES`` whose dual-encoder embeddings are reached another way
(BLIP's image-text contrastive heads, EVA-CLIP-8B's remote-code ``encode_image``/``encode_text``).

Preprocessing comes from the model's own image processor: ``size={"shortest_edge": S}`` plus a
crop means ``shortest``; ``size={"height": S, "width": S}`` means ``squash``. Text quirks per
``model_type`` are data (``catalog/hf_text.yaml``): SigLIP pads to max length and lower-cases.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml
from torch import nn

from .. import resources
from ..identity import weights_from_hub_commit
from . import hub
from ..protocol import Protocol
from .base import ModelError, ModelInfo, TextCfg, ZeroShotModel

_PIL_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def text_cfg_for(model_type: str) -> TextCfg:
    table = yaml.safe_load(resources.read_text("catalog/hf_text.yaml"))["model_types"]
    return TextCfg(**table.get(model_type, {}))


def preprocess_from_processor(proc) -> Protocol:
    # sizes are dicts, ints, or (transformers 5) SizeDicts, whose dict() keeps the fields set
    size = {"shortest_edge": proc.size} if isinstance(proc.size, int) else dict(proc.size)
    crop = dict(getattr(proc, "crop_size", None) or {})
    if "shortest_edge" in size:
        mode, s = "shortest", crop.get("height", size["shortest_edge"]) if getattr(proc, "do_center_crop", True) else size["shortest_edge"]
    else:
        mode, s = "squash", size["height"]
    resample = getattr(proc, "resample", 3)
    interp = _PIL_NAMES.get(int(resample), "bicubic") if not isinstance(resample, str) else resample
    if interp not in ("nearest", "lanczos", "bilinear", "bicubic", "box"):
        interp = "bicubic"
    return Protocol(int(s), tuple(proc.image_mean), tuple(proc.image_std), mode, interp)


@dataclass(frozen=True)
class Route:
    """How one side (image or text) of a model class yields its embedding.

    ``method``: call ``model.method(**inputs)``; or ``tower`` + ``proj``: the projection of the
    tower's first ([CLS]) token, as BLIP's image-text contrastive (ITC) embeddings.
    ``inputs``: which tokenizer outputs the text side takes.
    """

    method: str | None = None
    tower: str | None = None
    proj: str | None = None
    inputs: tuple[str, ...] = ("input_ids", "attention_mask")


DEFAULT_FEATURES = {"image": Route(method="get_image_features"), "text": Route(method="get_text_features")}
# model class (config.architectures[0]) -> its routes; classes here are built as that class,
# not as AutoModel (which maps a BLIP config to BlipModel, whose projections the ITM checkpoints lack).
FEATURES: dict[str, dict[str, Route]] = {
    "BlipForImageTextRetrieval": {"image": Route(tower="vision_model", proj="vision_proj"),
                                  "text": Route(tower="text_encoder", proj="text_proj")},
    "EvaCLIPModel": {"image": Route(method="encode_image"),
                     "text": Route(method="encode_text", inputs=("input_ids",))},
}


def _features(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    return pooled if pooled is not None else out[0]


class HFModel(ZeroShotModel):
    def __init__(self, model_id: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 trust_remote_code: bool = False, image_processor: str | None = None, revision: str | None = None,
                 **kwargs):
        """``image_processor``: where to load the image processor from when the model repo has
        none (EVA-CLIP-8B uses openai/clip-vit-large-patch14's). ``revision``: the hub repo's
        commit; ``trust_remote_code`` runs the repo's Python code, so it needs one pinned."""
        import transformers
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

        local = Path(model_id).is_dir()
        if trust_remote_code and not local and not re.fullmatch(r"[0-9a-f]{40}", revision or ""):
            raise ModelError(f"{model_id} runs the repo's own code (trust_remote_code); pin the code you trust with "
                             f"revision=<40-hex commit sha of the hub repo> in its backend_kwargs (got {revision!r})")
        if not local:
            hub.go_offline_if_unreachable()
        try:
            pinned = {"trust_remote_code": trust_remote_code, "revision": revision}
            config = AutoConfig.from_pretrained(model_id, **pinned)
            arch = (getattr(config, "architectures", None) or [""])[0]
            model_cls = getattr(transformers, arch, None) if arch in FEATURES else None
            # transformers reads .bin weights with torch's weights-only unpickler in every load step
            # (no opt-in reaches all of them): a pickle beyond tensors is refused for good
            pickles = sorted(Path(model_id).glob("*.bin")) if local else []
            with hub.tensors_only(pickles[0] if len(pickles) == 1 else f"the .bin weights of {model_id}", opt_in=False):
                model = (model_cls or AutoModel).from_pretrained(model_id, dtype=dtype, **pinned, **kwargs)
            # another repo's processor: neither its code nor this revision applies to it
            proc = AutoImageProcessor.from_pretrained(image_processor or model_id, **({} if image_processor else pinned))
            tokenizer = AutoTokenizer.from_pretrained(model_id, **pinned)
        except OSError as e:
            raise ModelError(f"weights for {model_id} are not available here ({str(e).splitlines()[0][:160]}); download "
                             "them where there is network or pass a local save_pretrained folder") from None
        routes = FEATURES.get(type(model).__name__, DEFAULT_FEATURES)
        for route in routes.values():
            for need in filter(None, (route.method, route.tower, route.proj)):
                if not hasattr(model, need):
                    raise ModelError(f"{model_id} ({type(model).__name__}) has no {need}; use a CLIP-style dual "
                                     "encoder or a class listed in lr0fm.models.hf_backend.FEATURES")
        model.eval().to(device)
        if local:  # every shard, the config and the tokenizer: a re-saved fine-tune is a new model
            weights_hash = hub.save_pretrained_hash(model_id)
        else:  # the commit the revision resolved to pins every file of the repo
            commit = hub.hub_commit(model_id, revision, cache_dir=kwargs.get("cache_dir"))
            weights_hash = weights_from_hub_commit(commit) if commit else None
        info = ModelInfo(model_id=f"hf:{model_id}", backend="hf", weights=model_id, weights_hash=weights_hash,
                         extra={"class": type(model).__name__, "model_type": model.config.model_type})
        text_cfg = text_cfg_for(model.config.model_type)
        if text_cfg.max_length is None:  # the text tower's length, recorded (identity) instead of looked up per call
            text_config = getattr(model.config, "text_config", None)
            text_cfg = replace(text_cfg, max_length=getattr(text_config, "max_position_embeddings", 77))
        super().__init__(info, preprocess_from_processor(proc), text_cfg)
        self.routes, self.model, self.tokenizer = routes, model, tokenizer

    @property
    def tower(self) -> nn.Module:
        return getattr(self.model, "vision_model", None) or self.model

    def _embed(self, route: Route, **inputs) -> torch.Tensor:
        if route.method:
            return _features(getattr(self.model, route.method)(**inputs))
        hidden = getattr(self.model, route.tower)(**inputs).last_hidden_state
        return getattr(self.model, route.proj)(hidden[:, 0, :])

    def _image_features(self, images: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        return self._embed(self.routes["image"], pixel_values=images.to(dtype))

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        cfg = self.text_cfg
        tok = self.tokenizer(texts, padding=cfg.padding, truncation=True, max_length=cfg.max_length, return_tensors="pt")
        route = self.routes["text"]
        tok = {k: v.to(self.device) for k, v in tok.items() if k in route.inputs}
        if cfg.padding == "max_length":  # SigLIP was trained without an attention mask
            tok.pop("attention_mask", None)
        return self._embed(route, **tok)
