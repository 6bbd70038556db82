"""Towers: the one place that knows where a vision tower keeps its patch embedding and blocks.

LR tokens, per-layer feature hooks and any future intervention go through ``find_tower``, so a
new tower type is one adapter entry here and every feature works for it at once.

A ViT adapter names: the patch-embedding module and the layout of its output, the list of
transformer blocks, the number of prefix (class/register) tokens, and whether block inputs are
batch-first. A CNN adapter names: the stem and the stages (lists of blocks; a stage's input is
the first block's input, its output the last block's output).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn


@dataclass
class Tower:
    kind: str                          # "vit" | "cnn"
    module: nn.Module                  # the tower itself
    embed: nn.Module                   # patch embedding (ViT) or stem (CNN)
    embed_layout: str                  # "bdhw" (conv output) | "bnd" (tokens)
    blocks: list[nn.Module]            # ViT: transformer blocks; CNN: first block of each stage
    block_outputs: list[nn.Module] = field(default_factory=list)  # modules whose outputs are "after block l"
    num_prefix_tokens: int = 0
    batch_first: bool = True
    name: str = ""

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def layer_names(self) -> list[str]:
        unit = "block" if self.kind == "vit" else "stage"
        return ["embed"] + [f"{unit}{i + 1}" for i in range(len(self.block_outputs))]


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def _open_clip_vit(m) -> Tower | None:
    if hasattr(m, "conv1") and hasattr(m, "transformer") and hasattr(m.transformer, "resblocks"):
        blocks = list(m.transformer.resblocks)
        prefix = 0 if getattr(m, "class_embedding", None) is None else 1
        return Tower("vit", m, m.conv1, "bdhw", blocks, blocks, prefix,
                     getattr(m.transformer, "batch_first", True), "open_clip.VisionTransformer")
    return None


def _timm_vit(m) -> Tower | None:
    m = getattr(m, "trunk", m)  # open_clip's TimmModel wraps a timm trunk
    if hasattr(m, "patch_embed") and hasattr(m, "blocks") and hasattr(m, "num_prefix_tokens"):
        blocks = list(m.blocks)
        return Tower("vit", m, m.patch_embed, "bnd", blocks, blocks, int(m.num_prefix_tokens), True,
                     f"timm.{type(m).__name__}")
    return None


def _hf_vit(m) -> Tower | None:
    vm = getattr(m, "vision_model", m)
    emb, enc = getattr(vm, "embeddings", None), getattr(vm, "encoder", None)
    if emb is not None and enc is not None and hasattr(emb, "patch_embedding") and hasattr(enc, "layers"):
        prefix = 1 if hasattr(emb, "class_embedding") else 0
        blocks = list(enc.layers)
        return Tower("vit", vm, emb.patch_embedding, "bdhw", blocks, blocks, prefix, True, f"hf.{type(vm).__name__}")
    return None


def _efficientnet(m) -> Tower | None:
    if hasattr(m, "_blocks") and hasattr(m, "_conv_stem"):
        stages: list[list[nn.Module]] = []
        for block in m._blocks:
            # a stage = the run of blocks expanded from one block-args entry: same output width
            if not stages or block._block_args.output_filters != stages[-1][-1]._block_args.output_filters:
                stages.append([block])
            else:
                stages[-1].append(block)
        return Tower("cnn", m, m._conv_stem, "bdhw", [s[0] for s in stages], [s[-1] for s in stages], 0, True,
                     "efficientnet_lite")
    return None


# Tried in order; the first adapter that recognises the tower wins. Add new tower types here.
ADAPTERS: list[Callable[[nn.Module], Tower | None]] = [_open_clip_vit, _hf_vit, _timm_vit, _efficientnet]


def find_tower(model_or_tower: nn.Module) -> Tower:
    tower = getattr(model_or_tower, "tower", model_or_tower)
    for adapter in ADAPTERS:
        found = adapter(tower)
        if found is not None:
            return found
    raise TypeError(f"no tower adapter for {type(tower).__name__}; add one to lr0fm.models.towers.ADAPTERS")


# names of a learned positional embedding's parameter (open_clip and timm ViTs, CLIP's attention-pool
# ResNets, transformers' vision embeddings)
POSITION_PARAMETERS = ("positional_embedding", "pos_embed", "position_embedding")


def input_size_fixed(tower: nn.Module) -> bool:
    """Whether ``tower`` takes only the input size it was made for: it learned a positional
    embedding for one grid and does not resample it (timm's dynamic_img_size does)."""
    if getattr(getattr(tower, "trunk", tower), "dynamic_img_size", False):
        return False
    return any(part in POSITION_PARAMETERS for name, _ in tower.named_parameters() for part in name.split("."))


class LayerRecorder:
    """Context manager collecting the output of the embedding and of every block/stage.

    ``features[name]`` is the raw output tensor ([B, N, D] token sequences are made batch-first;
    conv maps stay [B, C, H, W]).
    """

    def __init__(self, tower: Tower):
        self.tower = tower
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []

    def __enter__(self) -> "LayerRecorder":
        names = self.tower.layer_names()
        modules = [self.tower.embed] + list(self.tower.block_outputs)
        for name, module in zip(names, modules):
            self._handles.append(module.register_forward_hook(self._hook(name, module is self.tower.embed)))
        return self

    def _hook(self, name: str, is_embed: bool):
        def hook(_module, _inputs, output):
            x = _first(output)
            if not is_embed and self.tower.kind == "vit" and not self.tower.batch_first:
                x = x.transpose(0, 1)
            self.features[name] = x.detach()
        return hook

    def __exit__(self, *_exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
