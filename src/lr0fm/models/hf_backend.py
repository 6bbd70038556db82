"""Hugging Face transformers backend: CLIPModel, SiglipModel and any model exposing
``get_image_features`` / ``get_text_features`` (a hub id or a local ``save_pretrained`` folder).

Preprocessing comes from the model's own image processor: ``size={"shortest_edge": S}`` plus a
crop means ``shortest``; ``size={"height": S, "width": S}`` means ``squash``. Text quirks per
``model_type`` are data (``catalog/hf_text.yaml``): SigLIP pads to max length and lower-cases.
"""
from __future__ import annotations

from pathlib import Path

import torch
import yaml
from torch import nn

from .. import resources
from . import hub
from .base import ModelError, ModelInfo, PreprocessCfg, TextCfg, ZeroShotModel

_PIL_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def text_cfg_for(model_type: str) -> TextCfg:
    table = yaml.safe_load(resources.read_text("catalog/hf_text.yaml"))["model_types"]
    return TextCfg(**table.get(model_type, {}))


def preprocess_from_processor(proc) -> PreprocessCfg:
    size = proc.size if isinstance(proc.size, dict) else {"shortest_edge": proc.size}
    crop = getattr(proc, "crop_size", None) or {}
    if "shortest_edge" in size:
        mode, s = "shortest", crop.get("height", size["shortest_edge"]) if getattr(proc, "do_center_crop", True) else size["shortest_edge"]
    else:
        mode, s = "squash", size["height"]
    resample = getattr(proc, "resample", 3)
    interp = _PIL_NAMES.get(int(resample), "bicubic") if not isinstance(resample, str) else resample
    if interp not in ("nearest", "lanczos", "bilinear", "bicubic", "box"):
        interp = "bicubic"
    return PreprocessCfg(int(s), tuple(proc.image_mean), tuple(proc.image_std), mode, interp)


def _features(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    return pooled if pooled is not None else out[0]


class HFModel(ZeroShotModel):
    def __init__(self, model_id: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 trust_remote_code: bool = False, **kwargs):
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        local = Path(model_id).is_dir()
        if not local:
            hub.go_offline_if_unreachable()
        try:
            model = AutoModel.from_pretrained(model_id, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs)
            proc = AutoImageProcessor.from_pretrained(model_id, trust_remote_code=trust_remote_code)
            tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=trust_remote_code)
        except OSError as e:
            raise ModelError(f"weights for {model_id} are not available here ({str(e).splitlines()[0][:160]}); download "
                             "them where there is network or pass a local save_pretrained folder") from None
        for need in ("get_image_features", "get_text_features"):
            if not hasattr(model, need):
                raise ModelError(f"{model_id} ({type(model).__name__}) has no {need}(); use a CLIP-style dual encoder")
        model.eval().to(device)
        weights_hash = None
        if local:
            files = sorted(Path(model_id).glob("*.safetensors")) or sorted(Path(model_id).glob("*.bin"))
            if files:
                weights_hash = hub.cached_file_hash(files[0]) if len(files) == 1 else None
        info = ModelInfo(model_id=f"hf:{model_id}", backend="hf", weights=model_id, weights_hash=weights_hash,
                         extra={"class": type(model).__name__, "model_type": model.config.model_type})
        super().__init__(info, preprocess_from_processor(proc), text_cfg_for(model.config.model_type))
        self.model, self.tokenizer = model, tokenizer
        for p in self.model.parameters():
            p.requires_grad_(False)

    @property
    def tower(self) -> nn.Module:
        return getattr(self.model, "vision_model", None) or self.model

    def _image_features(self, images: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        return _features(self.model.get_image_features(pixel_values=images.to(dtype)))

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        cfg = self.text_cfg
        max_len = cfg.max_length or getattr(getattr(self.model.config, "text_config", None), "max_position_embeddings", 77)
        tok = self.tokenizer(texts, padding=cfg.padding, truncation=True, max_length=max_len, return_tensors="pt")
        tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        if cfg.padding == "max_length":  # SigLIP was trained without an attention mask
            tok.pop("attention_mask", None)
        return _features(self.model.get_text_features(**tok))
