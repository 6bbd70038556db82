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

from typing import TYPE_CHECKING

from ..catalog import model_catalog, paper_families
from ..checks import check_kinds
from ..errors import ProtocolError
from .base import ModelError, ModelInfo, TextCfg, ZeroShotModel

if TYPE_CHECKING:  # pragma: no cover
    from ..options import ProtocolChoice

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

def hub_revisions(name: str) -> dict[str, str | None]:
    """The Hugging Face repositories model ``name`` loads from, each with the commit the local hub
    cache holds (None: not cached), read without building the model -- how a rerun notices that a
    repository changed under the same name. Empty for local files and non-hub sources."""
    import os

    from .hub import cached_revision

    try:
        backend, spec, entry = resolve(name)
    except ModelError:
        return {}
    repo = None
    if backend == "open_clip":
        from .open_clip_backend import hub_repo
        repo = hub_repo(spec)
    elif backend == "hf" and not os.path.exists(spec):
        repo = spec
    revision = (entry.get("backend_kwargs") or {}).get("revision")
    return {repo: cached_revision(repo, revision)} if repo else {}


# kwargs that do not change a number (where the weights sit), left out of the identity
_NOT_IDENTITY = ("device", "trust_checkpoint")


def create_model(name: str, device: str = "cpu", trust_checkpoint: bool = False, **kwargs) -> ZeroShotModel:
    """The model ``name`` names (see the module docstring), in eval mode, on ``device``;
    ``kwargs`` go to its backend and are part of the results' identity. ``trust_checkpoint``:
    unpickle pickled weights without restrictions (runs code from the file; only for a file you
    trust); backends whose weights are never a pickle ignore it."""
    import torch

    check_kinds("create_model", [
        ("name", name, (str,), "a model name (lr0fm.list_models) or a backend spec such as 'open_clip:ARCH:TAG'"),
        ("device", device, (str, torch.device), "a device such as 'cpu' or 'cuda:0'"),
        ("trust_checkpoint", trust_checkpoint, (bool,), "True or False")])
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

PROTOCOLS = ("native", "paper", "paper:FAMILY")
# paper quirks lr0fm reproduces, as Protocol fields; the others are named in the protocol's source
_QUIRK_FIELDS = {"resize_before_rgb": ("rgb_last", True), "hr_via_224": ("hr_via", 224)}

def paper_entry(model: ZeroShotModel) -> tuple[str, dict] | None:
    """(catalog name, paper protocol) of the paper backbone this model is, by name or backend id."""
    return _paper_backbone(model.info.extra.get("catalog_name"), model.info.model_id)

def _paper_backbone(catalog_name: str | None, model_id: str) -> tuple[str, dict] | None:
    from ..catalog import paper_protocol

    table = paper_protocol()
    name = catalog_name
    if name is None:  # e.g. open_clip:ViT-B-32:openai given by its backend spec
        name = next((n for n, e in model_catalog().items() if f"{e['backend']}:{e.get('backend_id')}" == model_id),
                    None)
    return (name, table[name]) if name in table else None

def _not_a_paper_backbone(model_id: str) -> ProtocolError:
    return ProtocolError(f"{model_id} is not one of the paper's backbones, so it has no paper protocol of its own; use "
                         "--protocol paper:FAMILY for its family's (e.g. paper:OpenCLIP; lr0fm models --paper lists "
                         "the families), or --protocol native")

def _fixed_input_size(size: int, model: str, own: int) -> ProtocolError:
    return ProtocolError(f"--input-size {size}: {model} takes {own} px only (its positional embedding is fixed); "
                         "drop --input-size")

def check_model_options(name: str, choice: ProtocolChoice) -> None:
    """The protocol options against the model ``name`` names, without building it (one line each):
    the name is known, ``paper`` needs a paper backbone, and an input size other than the one
    the model is fixed to (where its config says so: open_clip architectures) is refused.
    choose_protocol checks a built model's input size."""
    backend, spec, entry = resolve(name)
    if choice.protocol == "paper" and _paper_backbone(name if entry else None, f"{backend}:{spec}") is None:
        raise _not_a_paper_backbone(f"{backend}:{spec}")
    if choice.input_size is not None and backend == "open_clip":
        from .open_clip_backend import fixed_input_size
        fixed = fixed_input_size(spec)
        if fixed is not None and fixed[1] != choice.input_size:
            raise _fixed_input_size(choice.input_size, name if entry else fixed[0], fixed[1])

def paper_family_protocol(family: str, backend: str, input_size: int) -> dict:
    """The LR0.FM authors' way of making views for a family, for any model of it: the resize mode,
    filter and RGB order most of its audited backbones share (those of ``backend`` first), and the
    HR route through 224 px that its backbones of other input sizes took. Protocol fields."""
    from collections import Counter

    from ..catalog import paper_protocol
    from ..options import check_protocol_name

    check_protocol_name(f"paper:{family}")
    names = paper_families()
    family = names[family.lower()]
    table = paper_protocol()
    members = [(e, table[n]) for n, e in model_catalog().items() if e.get("family") == family and n in table]
    same_backend = [m for m in members if m[0]["backend"] == backend] or members
    ways = Counter((p["paper_resize_mode"], p["paper_interpolation"], "resize_before_rgb" in p["paper_quirks"])
                   for _, p in same_backend)
    mode, interpolation, rgb_last = ways.most_common(1)[0][0]
    via_224 = any("hr_via_224" in p["paper_quirks"] for _, p in same_backend)
    return {"mode": mode, "interpolation": interpolation, "rgb_last": rgb_last,
            "hr_via": 224 if via_224 and input_size != 224 else None, "source": f"paper:{family}"}

def choose_protocol(model: ZeroShotModel, protocol: str | ProtocolChoice = "native", **overrides) -> ZeroShotModel:
    """Set how ``model``'s views are made: ``native`` (its own preprocessing), ``paper`` (what the
    LR0.FM authors ran for this backbone, catalog/paper_protocol.yaml) or ``paper:FAMILY`` (that
    family's way for any model, e.g. a fine-tune: lr0fm.models.paper_family_protocol), then the
    ``overrides`` (lr0fm.options.RunOptions' protocol part: resize_mode=, input_size=, ...), each
    setting the Protocol field its option names. ``protocol`` may be a ProtocolChoice holding both.
    The choice is recorded in the protocol (``source``) and so in every cell's identity."""
    from dataclasses import replace

    from ..options import ProtocolChoice
    from .towers import input_size_fixed

    choice = protocol if isinstance(protocol, ProtocolChoice) else ProtocolChoice(protocol=protocol, **overrides)
    cfg = model.preprocess
    family = choice.protocol.partition(":")[2]
    if choice.protocol == "paper":
        found = paper_entry(model)
        if found is None:
            raise _not_a_paper_backbone(model.info.model_id)
        name, entry = found
        fields = {k: v for q in entry["paper_quirks"] if q in _QUIRK_FIELDS for k, v in [_QUIRK_FIELDS[q]]}
        source = "paper"
        if int(entry["paper_input_size"]) != cfg.input_size:  # needs the model rebuilt (position embeddings)
            source += f" (input size {cfg.input_size}, the paper's {entry['paper_input_size']} not applied)"
        cfg = replace(cfg, mode=entry["paper_resize_mode"], interpolation=entry["paper_interpolation"],
                      mean=tuple(entry["paper_mean"]), std=tuple(entry["paper_std"]), source=source, **fields)
    elif family:  # the model keeps its own input size and normalisation (properties of its weights)
        cfg = replace(cfg, **paper_family_protocol(family, model.info.backend, cfg.input_size))
    if choice.input_size not in (None, cfg.input_size) and input_size_fixed(model.tower):
        info = model.info
        raise _fixed_input_size(choice.input_size, info.extra.get("catalog_name") or info.extra.get("arch")
                                or info.model_id, cfg.input_size)
    if choice.overrides():
        cfg = replace(cfg, source=cfg.source + "+override", **choice.overrides())
    model.preprocess = cfg
    return model

__all__ = ["PROTOCOLS", "choose_protocol", "paper_entry", "paper_families", "paper_family_protocol", "BACKENDS",
           "BACKEND_REQUIRES", "PICKLE_BACKENDS", "ModelError", "ModelInfo", "TextCfg", "ZeroShotModel",
           "check_model_options", "create_model", "hub_revisions", "model_names", "register_backend", "resolve"]
