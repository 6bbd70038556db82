"""ALBEF and BLIP (pretraining) checkpoints: their image-text contrastive (ITC) dual encoder.

Both are official Salesforce ``.pth`` files (``{"model": state_dict, ...}``) holding a ViT
(``visual_encoder.*``, already under timm's VisionTransformer key names) and a BERT text
encoder (``text_encoder.*``, transformers' BertModel key names), each followed by a 256-d
projection of its [CLS] token (``vision_proj``, ``text_proj``) -- the ITC embeddings the paper
used for zero-shot classification. So this adapter is timm's VisionTransformer plus
transformers' BertModel loaded through a key-prefix table; every size (width, depth, patch and
image size, vocabulary) is read from the checkpoint. What differs per family is data
(``FORMATS``): ALBEF's text-only pass stops where its fusion (cross-attention) layers begin,
BLIP's runs all layers and skips their cross-attention; and the caption length of each
family's retrieval eval. Momentum encoders, fusion/ITM heads and decoders are not loaded.

The files are pickles, read with torch's weights-only unpickler: tensors, plain data and
``CHECKPOINT_GLOBALS``. A file that needs more is refused unless the caller trusts it
(``trust_checkpoint=True``, ``lr0fm eval --trust-checkpoint``), because full unpickling runs
code from the file.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from ..identity import weights_from_file
from . import hub
from ..protocol import Protocol
from .base import ModelError, ModelInfo, TextCfg, ZeroShotModel

log = logging.getLogger("lr0fm")

# Both families' eval transform: Resize((S, S), BICUBIC) -> ToTensor -> Normalize(CLIP stats).
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_DIM = 64  # ViT-B/L and BERT-base all use 64-d attention heads
# Classes the weights-only unpickler may build beyond its defaults. The official training scripts
# (ALBEF Pretrain.py, BLIP pretrain.py / train_*.py) save {"model": state_dict, "optimizer":
# state_dict, ["lr_scheduler": timm-style scheduler __dict__,] "config": the YAML config as a
# dict, "epoch": int}: tensors and plain data only, which the defaults cover. A config saved as
# the parsed command line is an argparse.Namespace, an attribute holder that runs no code.
CHECKPOINT_GLOBALS = (argparse.Namespace,)

# checkpoint key prefix -> submodule here; the rest of each key is unchanged.
KEY_PREFIXES = {"visual_encoder.": "vision.", "text_encoder.": "text.",
                "vision_proj.": "vision_proj.", "text_proj.": "text_proj."}


@dataclass(frozen=True)
class CheckpointFormat:
    text_stops_at_cross_attention: bool  # ALBEF: the text pass is the layers before the fusion layers
    max_length: int                      # caption truncation of the family's retrieval eval
    tokenizer: str = "bert-base-uncased"


FORMATS = {
    "albef": CheckpointFormat(text_stops_at_cross_attention=True, max_length=30),
    "blip": CheckpointFormat(text_stops_at_cross_attention=False, max_length=35),
}


def fetch_checkpoint(spec: str) -> Path:
    """A local .pth path, or a URL cached in torch.hub's checkpoint folder (downloaded once)."""
    if not spec.startswith(("https://", "http://")):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelError(f"checkpoint {spec} does not exist; give an existing .pth file or its official URL")
        return path
    dest = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(spec).path).name
    if dest.is_file():
        return dest
    if not hub.network_available():
        raise ModelError(f"weights {spec} are not available here (offline); download them where there is network "
                         f"to {dest} or pass a local .pth path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(spec, str(dest))
    except Exception as e:
        raise ModelError(f"could not download {spec} ({type(e).__name__}); save it to {dest} by hand") from None
    return dest


def load_state_dict(path: Path, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """The checkpoint's model state dict; ``trust_checkpoint``: unpickle anything (runs code from the file)."""
    if trust_checkpoint:
        log.warning("unpickling %s without restrictions (--trust-checkpoint): it can run code", path)
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    else:
        allow = getattr(torch.serialization, "safe_globals", None)  # torch < 2.5: the defaults only
        try:
            with hub.tensors_only(path), allow(list(CHECKPOINT_GLOBALS)) if allow else contextlib.nullcontext():
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except ModelError:  # a refused pickle, said in one line
            raise
        except (RuntimeError, EOFError) as e:  # not a torch file, truncated
            reason = str(e).splitlines()[0].split(". ")[0][:160]
            raise ModelError(f"{path} is not a readable PyTorch checkpoint ({reason})") from None
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(k.startswith("visual_encoder.") for k in state):
        raise ModelError(f"{path} is not an ALBEF/BLIP checkpoint (no 'model' state dict with visual_encoder.* keys)")
    return state


def remap(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for src, dst in KEY_PREFIXES.items():
            if key.startswith(src):
                out[dst + key[len(src):]] = value
    token_types = "text.embeddings.token_type_embeddings.weight"
    if token_types not in out and "text.embeddings.word_embeddings.weight" in out:
        # BLIP's BERT has no token-type embeddings: one all-zero type adds nothing
        out[token_types] = torch.zeros(1, out["text.embeddings.word_embeddings.weight"].shape[1])
    return out


def _count(state: dict, pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def build_vision(state: dict[str, torch.Tensor]) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    width, _, patch, _ = state["vision.patch_embed.proj.weight"].shape
    grid = math.isqrt(state["vision.pos_embed"].shape[1] - 1)
    return VisionTransformer(img_size=grid * patch, patch_size=patch, embed_dim=width,
                             depth=_count(state, r"vision\.blocks\.(\d+)\."), num_heads=width // HEAD_DIM,
                             mlp_ratio=state["vision.blocks.0.mlp.fc1.weight"].shape[0] / width,
                             qkv_bias=True, num_classes=0, global_pool="token")


def build_text(state: dict[str, torch.Tensor], fmt: CheckpointFormat) -> nn.Module:
    from transformers import BertConfig, BertModel

    layers = _count(state, r"text\.encoder\.layer\.(\d+)\.")
    if fmt.text_stops_at_cross_attention:
        fusion = [int(m.group(1)) for k in state if (m := re.match(r"text\.encoder\.layer\.(\d+)\.crossattention\.", k))]
        layers = min(fusion, default=layers)
    vocab, width = state["text.embeddings.word_embeddings.weight"].shape
    config = BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers,
                        num_attention_heads=width // HEAD_DIM,
                        intermediate_size=state["text.encoder.layer.0.intermediate.dense.weight"].shape[0],
                        max_position_embeddings=state["text.embeddings.position_embeddings.weight"].shape[0],
                        type_vocab_size=state["text.embeddings.token_type_embeddings.weight"].shape[0])
    return BertModel(config, add_pooling_layer=False)


class ViTBertModel(ZeroShotModel):
    """``spec``: a .pth path or URL; ``family``: a key of FORMATS; ``tokenizer``: a transformers
    tokenizer or where to load one (default bert-base-uncased, as both families used);
    ``trust_checkpoint``: unpickle the .pth without restrictions (only for a file you trust)."""

    def __init__(self, spec: str, family: str, tokenizer=None, trust_checkpoint: bool = False):
        from transformers import AutoTokenizer

        fmt = FORMATS[family]
        path = fetch_checkpoint(spec)
        state = remap(load_state_dict(path, trust_checkpoint))
        vision, text = build_vision(state), build_text(state, fmt)
        embed_dim = state["vision_proj.weight"].shape[0]
        vision_proj = nn.Linear(vision.embed_dim, embed_dim)
        text_proj = nn.Linear(text.config.hidden_size, embed_dim)
        if tokenizer is None or isinstance(tokenizer, (str, Path)):
            name = str(tokenizer or fmt.tokenizer)
            if not Path(name).is_dir():
                hub.go_offline_if_unreachable()
            try:
                tokenizer = AutoTokenizer.from_pretrained(name)
            except OSError:
                raise ModelError(f"the {name} tokenizer is not available offline; download it once where there is "
                                 "network (it goes to the Hugging Face cache)") from None
        info = ModelInfo(model_id=f"{family}:{spec}", backend=family, weights=str(path),
                         weights_hash=weights_from_file(path), extra={"family": family})
        pre = Protocol(vision.patch_embed.img_size[0], MEAN, STD, "squash", "bicubic")
        super().__init__(info, pre, TextCfg(lowercase=True, max_length=fmt.max_length))
        self.vision, self.text, self.vision_proj, self.text_proj = vision, text, vision_proj, text_proj
        self.tokenizer = tokenizer
        missing, _ = self.load_state_dict(state, strict=False)  # the rest: momentum, fusion, ITM, decoder
        if missing:
            raise ModelError(f"{path} lacks {len(missing)} weights of the {family} ITC encoders, e.g. {missing[0]}")
        self.eval()

    @property
    def tower(self) -> nn.Module:
        return self.vision

    def _image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.vision_proj(self.vision.forward_features(images)[:, 0])

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(texts, padding=self.text_cfg.padding, truncation=True,
                             max_length=self.text_cfg.max_length, return_tensors="pt").to(self.device)
        hidden = self.text(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
        return self.text_proj(hidden[:, 0])
