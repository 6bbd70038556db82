"""Model registry: a name -> a ZeroShotModel.

Names, in the order they are tried:
* the offline ConSE models (``conse-effnet-lite0`` ...);
* catalog names (catalog/models.yaml: the paper's 66 backbones) -> their backend + id;
* explicit backend specs: ``open_clip:ARCH:TAG|:/path/ckpt|:random``, ``hf-hub:ORG/NAME`` (open_clip),
  ``hf:ID_OR_DIR`` (transformers), ``BACKEND:ID`` for any registered backend.
"""
from __future__ import annotations

import difflib
from typing import Callable

from ..catalog import model_catalog
from .base import ModelError, ModelInfo, PreprocessCfg, TextCfg, ZeroShotModel

DEFAULT_MODEL = "conse-effnet-lite0"


def _conse(spec: str, **kw):
    from .conse import ConSEModel
    return ConSEModel(spec, **{k: v for k, v in kw.items() if k in ("top_t",)})


def _open_clip(spec: str, **kw):
    from .open_clip_backend import OpenCLIPModel
    return OpenCLIPModel(spec, **kw)


def _hf(spec: str, **kw):
    from .hf_backend import HFModel
    return HFModel(spec, **kw)


def _vit_bert(family: str) -> Callable[..., ZeroShotModel]:
    def build(spec: str, **kw):
        from .vit_bert import ViTBertModel
        return ViTBertModel(spec, family, **kw)
    return build


# backend name -> builder(spec, **kwargs). Other modules add theirs with register_backend.
BACKENDS: dict[str, Callable[..., ZeroShotModel]] = {
    "conse": _conse, "open_clip": _open_clip, "hf": _hf,
    "albef": _vit_bert("albef"), "blip": _vit_bert("blip"),  # official ALBEF / BLIP-pretraining .pth files
}
# backend name -> the importable packages it needs (lr0fm models --paper says which can run here).
BACKEND_REQUIRES: dict[str, tuple[str, ...]] = {
    "open_clip": ("open_clip",), "hf": ("transformers",), "albef": ("timm", "transformers"),
    "blip": ("timm", "transformers"),
}


def register_backend(name: str, builder: Callable[..., ZeroShotModel], requires: tuple[str, ...] = ()) -> None:
    BACKENDS[name] = builder
    BACKEND_REQUIRES[name] = tuple(requires)


def offline_models() -> list[str]:
    from .conse import VARIANTS
    return list(VARIANTS)


def model_names() -> list[str]:
    return offline_models() + sorted(model_catalog())


def resolve(name: str) -> tuple[str, str, dict]:
    """name -> (backend, backend spec, catalog entry or {})."""
    if name in offline_models():
        return "conse", name, {}
    entry = model_catalog().get(name)
    if entry is not None:
        if entry["backend"] == "unsupported":
            raise ModelError(f"{name} cannot run in lr0fm: {entry.get('notes', 'no backend')}")
        return entry["backend"], entry["backend_id"], entry
    if name.startswith("hf-hub:"):
        return "open_clip", name, {}
    backend, sep, spec = name.partition(":")
    if sep and backend in BACKENDS:
        return backend, spec, {}
    close = difflib.get_close_matches(name, model_names(), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ModelError(f"unknown model {name!r}.{hint} Run 'lr0fm models' to list them, or give "
                     "open_clip:ARCH:TAG, hf:MODEL_ID or a catalog name")


# kwargs that do not change a number (where the weights sit), left out of the identity
_NOT_IDENTITY = ("device",)


def create_model(name: str, device: str = "cpu", **kwargs) -> ZeroShotModel:
    backend, spec, entry = resolve(name)
    kwargs.update(entry.get("backend_kwargs", {}) or {})
    model = BACKENDS[backend](spec, **kwargs)
    model.info.kwargs = {k: v for k, v in kwargs.items() if k not in _NOT_IDENTITY}
    if entry:
        model.info.extra["catalog_name"] = name
    # every backend's weights are frozen here, once: evaluation, analyses and LR tokens need no grads on them
    return model.requires_grad_(False).to(device).eval()


__all__ = ["BACKENDS", "BACKEND_REQUIRES", "DEFAULT_MODEL", "ModelError", "ModelInfo", "PreprocessCfg", "TextCfg", "ZeroShotModel",
           "create_model", "model_names", "register_backend", "resolve"]
