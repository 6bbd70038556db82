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


# backends whose weights may be a pickle: they take ``trust_checkpoint`` (unpickle without
# restrictions; otherwise tensors and plain data only, lr0fm.models.hub.tensors_only)
PICKLE_BACKENDS: set[str] = {"open_clip", "albef", "blip"}


def register_backend(name: str, builder: Callable[..., ZeroShotModel], requires: tuple[str, ...] = (),
                     reads_pickles: bool = False) -> None:
    BACKENDS[name] = builder
    BACKEND_REQUIRES[name] = tuple(requires)
    if reads_pickles:
        PICKLE_BACKENDS.add(name)


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
_NOT_IDENTITY = ("device", "trust_checkpoint")


def create_model(name: str, device: str = "cpu", trust_checkpoint: bool = False, **kwargs) -> ZeroShotModel:
    """The model ``name`` names (see the module docstring), in eval mode, on ``device``;
    ``kwargs`` go to its backend and are part of the results' identity. ``trust_checkpoint``:
    unpickle pickled weights without restrictions (runs code from the file; only for a file you
    trust); backends whose weights are never a pickle ignore it."""
    backend, spec, entry = resolve(name)
    kwargs.update(entry.get("backend_kwargs", {}) or {})
    if trust_checkpoint and backend in PICKLE_BACKENDS:
        kwargs["trust_checkpoint"] = True
    model = BACKENDS[backend](spec, **kwargs)
    model.info.kwargs = {k: v for k, v in kwargs.items() if k not in _NOT_IDENTITY}
    if entry:
        model.info.extra["catalog_name"] = name
    # Weights keep requires_grad as the backend made them, as open_clip and transformers hand them
    # to everyone else: freezing them changes numbers. torch's matmul folds a 3-D input times a
    # weight that requires grad into one mm and batches it otherwise, even under no_grad, and
    # open_clip's masked text attention takes that path (its classifier moved by 2.3e-7 when
    # frozen). lr0fm runs every forward under torch.no_grad; train-tokens freezes the base model.
    return model.to(device).eval()


PROTOCOLS = ("native", "paper")
# paper quirks lr0fm reproduces, as PreprocessCfg fields; the others are named in the protocol's source
_QUIRK_FIELDS = {"resize_before_rgb": ("rgb_last", True), "hr_via_224": ("hr_via", 224)}


def paper_entry(model: ZeroShotModel) -> tuple[str, dict] | None:
    """(catalog name, paper protocol) of the paper backbone this model is, by name or backend id."""
    from ..catalog import paper_protocol

    table = paper_protocol()
    name = model.info.extra.get("catalog_name")
    if name is None:  # e.g. open_clip:ViT-B-32:openai given by its backend spec
        name = next((n for n, e in model_catalog().items()
                     if f"{e['backend']}:{e.get('backend_id')}" == model.info.model_id), None)
    return (name, table[name]) if name in table else None


def choose_protocol(model: ZeroShotModel, protocol: str = "native", resize_mode: str | None = None,
                    input_size: int | None = None, interpolation: str | None = None) -> ZeroShotModel:
    """Set how ``model``'s views are made: ``native`` (its own preprocessing) or ``paper`` (what
    the LR0.FM authors ran for this backbone, catalog/paper_protocol.yaml), then timm-style
    overrides. The choice is recorded in the protocol (``source``) and so in every cell's identity."""
    from dataclasses import replace

    from ..protocol import RESIZE_MODES, ProtocolError, _PIL_FILTERS

    if protocol not in PROTOCOLS:
        raise ProtocolError(f"--protocol {protocol!r} unknown; use one of {', '.join(PROTOCOLS)}")
    cfg = model.preprocess
    if protocol == "paper":
        found = paper_entry(model)
        if found is None:
            raise ProtocolError(f"{model.info.model_id} is not one of the paper's backbones, so it has no paper "
                                "protocol; use --protocol native, or set --resize-mode/--interpolation yourself")
        name, entry = found
        fields = {k: v for q in entry["paper_quirks"] if q in _QUIRK_FIELDS for k, v in [_QUIRK_FIELDS[q]]}
        source = "paper"
        if int(entry["paper_input_size"]) != cfg.input_size:  # needs the model rebuilt (position embeddings)
            source += f" (input size {cfg.input_size}, the paper's {entry['paper_input_size']} not applied)"
        cfg = replace(cfg, resize_mode=entry["paper_resize_mode"], interpolation=entry["paper_interpolation"],
                      mean=tuple(entry["paper_mean"]), std=tuple(entry["paper_std"]), source=source, **fields)
    overrides = {k: v for k, v in (("resize_mode", resize_mode), ("input_size", input_size),
                                   ("interpolation", interpolation)) if v is not None}
    if resize_mode is not None and resize_mode not in RESIZE_MODES:
        raise ProtocolError(f"--resize-mode {resize_mode!r} unknown; use one of {', '.join(RESIZE_MODES)}")
    if interpolation is not None and interpolation not in _PIL_FILTERS:
        raise ProtocolError(f"--interpolation {interpolation!r} unknown; use one of {', '.join(sorted(_PIL_FILTERS))}")
    if input_size is not None and input_size < 1:
        raise ProtocolError(f"--input-size {input_size} must be a positive number of pixels")
    if overrides:
        cfg = replace(cfg, source=cfg.source + "+override", **overrides)
    model.preprocess = cfg
    return model


__all__ = ["PROTOCOLS", "choose_protocol", "paper_entry", "BACKENDS", "BACKEND_REQUIRES", "DEFAULT_MODEL", "PICKLE_BACKENDS", "ModelError", "ModelInfo", "PreprocessCfg", "TextCfg", "ZeroShotModel",
           "create_model", "model_names", "register_backend", "resolve"]
