"""open_clip backend: any ``ARCH:TAG``, ``hf-hub:ORG/NAME``, ``ARCH:/path/checkpoint``, or
``ARCH:random`` (randomly initialised weights, seeded, so reproducible). A bare ``ARCH`` names no
weights and is refused: random weights are asked for explicitly and named so in every record.

The resize mode, mean/std, interpolation and input size come from open_clip's per-tag
preprocess config (``model.visual.preprocess_cfg``): SigLIP/CLIPA tags say ``squash``,
OpenAI/EVA/MetaCLIP tags ``shortest``. An ``ARCH`` may be a path to a model-config JSON.
A local checkpoint carries no tag, so ``preprocess_tag="[ARCH:]TAG"`` names the tag whose
preprocessing it needs (e.g. a local copy of ``ViT-B-16-SigLIP:webli``).
"""
from __future__ import annotations

import contextlib
import difflib
import logging
from pathlib import Path

import torch
from torch import nn

from ..identity import weights_from_file
from . import hub
from ..protocol import Protocol
from .base import ModelError, ModelInfo, TextCfg, ZeroShotModel

log = logging.getLogger("lr0fm")


def _is_path(text: str) -> bool:
    return "/" in text or text.endswith((".pt", ".pth", ".bin", ".safetensors", ".json")) or Path(text).exists()


RANDOM = "random"  # the tag that asks for randomly initialised weights
RANDOM_SEED = 0


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'ARCH:TAG' -> (arch, tag); 'hf-hub:org/name' -> (spec, None); 'ARCH' -> (arch, None)."""
    if spec.startswith("hf-hub:"):
        return spec, None
    arch, _, tag = spec.partition(":")
    return arch, (tag or None)


def hub_repo(spec: str) -> str | None:
    """The Hugging Face repository open_clip loads ``spec``'s weights from (``hf-hub:ORG/NAME`` or a
    pretrained tag hosted there), without loading anything; None for files and other sources."""
    if spec.startswith("hf-hub:"):
        return spec[len("hf-hub:"):].strip("/")
    arch, tag = parse_spec(spec)
    if tag is None or tag == RANDOM or _is_path(tag) or arch.endswith(".json"):
        return None
    import open_clip

    hf_hub = (open_clip.get_pretrained_cfg(arch, tag) or {}).get("hf_hub", "")
    return "/".join(hf_hub.strip("/").split("/")[:2]) or None


def fixed_input_size(spec: str) -> tuple[str, int] | None:
    """(architecture, input size) when ``spec``'s architecture config says its input size is fixed,
    read without building it: open_clip's own ViTs and CLIP's attention-pool ResNets learned a
    positional embedding for one size. None where the config cannot say (a timm tower, e.g.
    ConvNeXt, takes any size; a hub config is read when the model is built)."""
    import json

    import open_clip

    arch, _ = parse_spec(spec)
    if arch.startswith("hf-hub:"):
        return None
    if arch.endswith(".json"):
        config = json.loads(Path(arch).read_text()) if Path(arch).is_file() else None
        arch = Path(arch).stem
    else:
        config = open_clip.get_model_config(arch)
    vision = (config or {}).get("vision_cfg") or {}
    if not vision or vision.get("timm_model_name"):
        return None
    size = vision.get("image_size", 224)
    return arch, int(size[0] if isinstance(size, (list, tuple)) else size)


_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


def tag_preprocess_cfg(arch: str, preprocess_tag: str) -> dict:
    """The preprocessing fields of open_clip's pretrained config for '[ARCH:]TAG' (no download)."""
    import open_clip

    tag_arch, _, tag = preprocess_tag.rpartition(":")
    cfg = open_clip.get_pretrained_cfg(tag_arch or arch, tag)
    if not cfg:
        raise ModelError(f"preprocess_tag {preprocess_tag!r}: open_clip has no pretrained tag {tag!r} for {tag_arch or arch}")
    return {k: cfg[k] for k in _PREPROCESS_KEYS if k in cfg}


class OpenCLIPModel(ZeroShotModel):
    def __init__(self, spec: str, device: str | torch.device = "cpu", precision: str = "fp32",
                 tokenizer=None, preprocess_tag: str | None = None, trust_checkpoint: bool = False, **model_kwargs):
        """``trust_checkpoint``: unpickle a pickled checkpoint without restrictions (runs code from
        the file; only for a file you trust). Otherwise only tensors and plain data are read."""
        import open_clip

        arch, tag = parse_spec(spec)
        given = arch  # the architecture as written (a config path stays a path in suggestions)
        if arch.endswith(".json"):  # a user architecture config, registered by file stem
            if not Path(arch).is_file():
                raise ModelError(f"model config {arch} does not exist")
            open_clip.add_model_config(arch)
            arch = Path(arch).stem
        if not arch.startswith("hf-hub:") and arch not in open_clip.list_models():
            close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ModelError(f"open_clip has no architecture {arch!r}.{hint}")

        weights, weights_hash = None, None
        hub.go_offline_if_unreachable()
        if tag is None and not arch.startswith("hf-hub:"):
            tags = open_clip.list_pretrained_tags_by_model(arch)
            known = f"pretrained tags for it: {', '.join(tags)}" if tags else "open_clip has no pretrained tags for it"
            raise ModelError(f"open_clip:{spec} names an architecture but no weights ({known}); give open_clip:{given}:TAG, "
                             f"open_clip:{given}:/path/to/checkpoint, or open_clip:{given}:{RANDOM} for randomly "
                             "initialised weights")
        if tag == RANDOM:  # identity then digests the state dict (lr0fm.identity.model_part)
            # every tower random (no default text/image tower weights), the same init on every run
            model_kwargs.setdefault("pretrained_text", False)
            model_kwargs.setdefault("pretrained_image", False)
        elif tag is not None and _is_path(tag):
            if not Path(tag).is_file():
                raise ModelError(f"checkpoint {tag} does not exist; give an existing file as ARCH:/path/to/checkpoint")
            weights, weights_hash = tag, weights_from_file(tag)
        elif tag is not None:
            cfg = open_clip.get_pretrained_cfg(arch, tag)
            if not cfg:
                tags = open_clip.list_pretrained_tags_by_model(arch)
                raise ModelError(f"open_clip has no pretrained tag {tag!r} for {arch}; known tags: {', '.join(tags) or 'none'}"
                                 f", or {RANDOM} for randomly initialised weights")
            try:
                weights = open_clip.download_pretrained(cfg)
            except Exception as e:  # offline and not cached, or hub refused
                raise ModelError(f"weights for {arch}:{tag} are not available here ({type(e).__name__}); download them "
                                 "where there is network (they go to the Hugging Face cache) or pass ARCH:/path/to/checkpoint") from None
            weights_hash = weights_from_file(weights) if weights else None
        else:  # hf-hub:ORG/NAME: the file open_clip's create_model loads (a second call finds it in the cache)
            weights = hub.open_clip_hf_weights(arch[len("hf-hub:"):])
            weights_hash = weights_from_file(weights)
        if preprocess_tag is not None:
            model_kwargs["force_preprocess_cfg"] = tag_preprocess_cfg(arch, preprocess_tag)
        try:
            if trust_checkpoint and weights and not str(weights).endswith(".safetensors"):
                log.warning("unpickling %s without restrictions (--trust-checkpoint): it can run code", weights)
            with torch.random.fork_rng(devices=[]), _quiet_random_notice(tag == RANDOM), hub.tensors_only(weights):
                torch.manual_seed(RANDOM_SEED)  # weights are made on the CPU; the caller's RNG is untouched
                model = open_clip.create_model(arch, pretrained=None if tag == RANDOM else tag, device=device,
                                               precision=precision, weights_only=not trust_checkpoint, **model_kwargs)
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(f"could not build open_clip model {spec!r}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
        model.eval()
        pcfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = pcfg.get("size", model.visual.image_size)
        size = size[0] if isinstance(size, (tuple, list)) else size
        pre = Protocol(int(size), tuple(pcfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                            tuple(pcfg.get("std", open_clip.OPENAI_DATASET_STD)),
                            pcfg.get("resize_mode", "shortest"), pcfg.get("interpolation", "bicubic"))
        info = ModelInfo(model_id=f"open_clip:{spec}", backend="open_clip", weights=str(weights) if weights else tag,
                         weights_hash=weights_hash, extra={"arch": arch, "tag": tag,
                                                          **({"seed": RANDOM_SEED} if tag == RANDOM else {})})
        if tokenizer is None:
            try:  # the model's context length, which force_context_length may have changed
                tokenizer = open_clip.get_tokenizer(arch, context_length=getattr(model, "context_length", None))
            except Exception as e:
                raise ModelError(f"the tokenizer of {arch} is not available offline ({type(e).__name__}); "
                                 "download it once where there is network") from None
        # open_clip tokenizers pad every prompt to the context length (and lower-case, or not, themselves)
        super().__init__(info, pre, TextCfg(padding="max_length", max_length=getattr(tokenizer, "context_length", None)))
        self.model = model
        self.tokenizer = tokenizer

    @property
    def tower(self) -> nn.Module:
        return self.model.visual

    def _image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens)


class _RandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_notice(asked_for: bool):
    """open_clip warns (on the root logger) that no weights were loaded; with ``:random`` that was
    the request, and the records name it, so the warning is dropped for that call only."""
    if not asked_for:
        yield
        return
    notice = _RandomInitNotice()
    logging.getLogger().addFilter(notice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(notice)
