"""LR tokens (LR-TK0): learnable additive tokens in a frozen vision tower, attached with hooks.

One mechanism for every tower ``lr0fm.models.towers.find_tower`` knows:

* ViT towers: a forward hook on the patch embedding adds T_0 to the patch embeddings (before
  the class token and positional embedding are added, as in the paper's code); a forward
  pre-hook on each block adds T_l to the patch positions of its input (prefix/class tokens
  untouched, sequence length unchanged). T_l in R^{N x D}, N patches, init N(0, 0.02).
* ``variant="vpt-deep"`` (comparison): per block, M prompts are inserted after the prefix
  tokens by the pre-hook and removed from the block's output by a forward hook, so each block
  sees its own prompts (VPT-deep) while the rest of the tower sees the usual sequence.
* CNN towers: an additive map at the input of each stage (the same pre-hook), shaped
  ``[C, g, g]`` and bilinearly upsampled to the stage's [H, W] (``grid=g``), ``[C, 1, 1]``
  (``grid=1``: one value per channel) or the full ``[C, H, W]`` (``grid=0``).

Shapes are read from one dry forward at the model's input size, so no tower-specific shape
code exists here. ``enabled=False`` (or ``with tokens.disabled():``) gives exactly the base model.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError  # a ValueError: one line in the CLI
from ..models.towers import Tower, find_tower

VARIANTS = ("additive", "vpt-deep")


@dataclass(frozen=True)
class TokenConfig:
    variant: str = "additive"   # "additive" (LR-TK0) | "vpt-deep" (prompts, comparison)
    first: int | None = None    # tokens only in the first k blocks/stages
    last: int | None = None     # ... or only in the last k
    embed: bool = True          # T_0 on the patch embedding (ViT)
    num_prompts: int = 8        # vpt-deep only
    grid: int = 0               # CNN maps: 0 = full HxW, 1 = per channel, g = g x g upsampled
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise InputError(f"token variant {self.variant!r} unknown; use one of {VARIANTS}")
        if self.first is not None and self.last is not None:
            raise InputError("give at most one of --first k and --last k")

    def as_dict(self) -> dict:
        return asdict(self)

    def block_indices(self, depth: int) -> list[int]:
        if self.first is not None:
            return list(range(min(self.first, depth)))
        if self.last is not None:
            return list(range(max(0, depth - self.last), depth))
        return list(range(depth))


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def _replace_first(x, new):
    if isinstance(x, tuple):
        return (new,) + x[1:]
    if isinstance(x, list):
        return [new] + x[1:]
    return new


@torch.no_grad()
def probe_shapes(model: nn.Module, tower: Tower, input_size: int) -> tuple[tuple, list[tuple]]:
    """(patch-embed output shape, [block input shapes]) of one dry forward, batch dim dropped."""
    shapes: dict = {}

    def record(key, x) -> None:  # hooks must return None, or they would replace the value
        shapes.setdefault(key, x.shape)

    handles = [tower.embed.register_forward_hook(lambda m, a, o: record("embed", _first(o)))]
    for i, block in enumerate(tower.blocks):
        handles.append(block.register_forward_pre_hook(
            lambda m, a, kw, i=i: record(i, a[0] if a else next(iter(kw.values()))), with_kwargs=True))
    try:
        device = next(model.parameters()).device
        x = torch.zeros(1, 3, input_size, input_size, device=device)
        (model.encode_image if hasattr(model, "encode_image") else model)(x)
    finally:
        for h in handles:
            h.remove()
    batch_axis = 0 if tower.batch_first or tower.kind == "cnn" else 1
    drop = lambda s: tuple(d for j, d in enumerate(s) if j != batch_axis)  # noqa: E731
    return drop(shapes["embed"]), [drop(shapes[i]) for i in range(len(tower.blocks))]


class LRTokens(nn.Module):
    """The trainable tokens of one tower plus the hooks that apply them.

    ``tokens[0]`` is T_0 (patch embedding, ViT) and ``tokens[l]`` belongs to block/stage l
    (1-based); slots without tokens are absent from the ParameterDict.
    """

    def __init__(self, model: nn.Module, cfg: TokenConfig = TokenConfig(), input_size: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.tower = find_tower(model)
        size = input_size or model.preprocess.input_size
        embed_shape, block_shapes = probe_shapes(model, self.tower, size)
        vit = self.tower.kind == "vit"
        p = self.tower.num_prefix_tokens
        if vit:
            D = block_shapes[0][-1]
            self.num_patches = block_shapes[0][0] - p
            if self.tower.embed_layout == "bdhw":
                self.embed_grid = tuple(embed_shape[1:])
            else:
                self.embed_grid = None
        self.tokens = nn.ParameterDict()
        g = torch.Generator().manual_seed(0)

        def init(*shape):
            return nn.Parameter(torch.randn(*shape, generator=g) * cfg.init_std)

        if vit and cfg.embed and cfg.variant == "additive":
            self.tokens["0"] = init(self.num_patches, D)
        for i in cfg.block_indices(self.tower.depth):
            if not vit:
                C, H, W = block_shapes[i]
                gh, gw = (H, W) if cfg.grid == 0 else (min(cfg.grid, H), min(cfg.grid, W))
                self.tokens[str(i + 1)] = init(C, gh, gw)
            elif cfg.variant == "vpt-deep":
                self.tokens[str(i + 1)] = init(cfg.num_prompts, D)
            else:
                self.tokens[str(i + 1)] = init(self.num_patches, D)
        self.enabled = True
        self._handles: list = []
        self.attach()

    # -- switching ------------------------------------------------------------------------
    @contextlib.contextmanager
    def disabled(self):
        """Within the block the tower is exactly the base model."""
        before, self.enabled = self.enabled, False
        try:
            yield self
        finally:
            self.enabled = before

    def attach(self) -> None:
        if self._handles:
            return
        t = self.tower
        if "0" in self.tokens:
            self._handles.append(t.embed.register_forward_hook(self._embed_hook))
        for i, block in enumerate(t.blocks):
            key = str(i + 1)
            if key not in self.tokens:
                continue
            self._handles.append(block.register_forward_pre_hook(self._block_pre_hook(key), with_kwargs=True))
            if self.cfg.variant == "vpt-deep":
                self._handles.append(block.register_forward_hook(self._vpt_remove_hook))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # -- hooks ----------------------------------------------------------------------------
    def _embed_hook(self, _module, _inputs, output):
        if not self.enabled:
            return None
        x = _first(output)
        T = self.tokens["0"].to(x.dtype)
        if self.tower.embed_layout == "bdhw":  # conv output [B, D, h, w]: patches are h*w
            T = T.T.reshape(T.shape[1], *self.embed_grid)
        elif x.dim() == 4:                     # timm NHWC patch embed [B, h, w, D]
            T = T.reshape(*x.shape[1:])
        return _replace_first(output, x + T)

    def _block_pre_hook(self, key: str):
        def hook(_module, args, kwargs):
            if not self.enabled:
                return None
            if args:
                x = args[0]
                new = self._add_tokens(x, key)
                return (new,) + tuple(args[1:]), kwargs
            name = next(iter(kwargs))  # the block's first input passed by keyword
            return args, {**kwargs, name: self._add_tokens(kwargs[name], key)}
        return hook

    def _add_tokens(self, x: torch.Tensor, key: str) -> torch.Tensor:
        T = self.tokens[key].to(x.dtype)
        if self.tower.kind == "cnn":
            if T.shape[-2:] != x.shape[-2:]:
                T = F.interpolate(T[None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
            return x + T
        p = self.tower.num_prefix_tokens
        seq_axis = 1 if self.tower.batch_first else 0
        if self.cfg.variant == "vpt-deep":
            B = x.shape[1 - seq_axis]
            prompts = T.unsqueeze(1 - seq_axis).expand(*((B, -1, -1) if seq_axis == 1 else (-1, B, -1)))
            return torch.cat([x.narrow(seq_axis, 0, p), prompts, x.narrow(seq_axis, p, x.shape[seq_axis] - p)],
                             dim=seq_axis)
        L = x.shape[seq_axis]
        delta = F.pad(T, (0, 0, p, L - p - T.shape[0]))  # zeros on prefix (and any trailing) tokens
        return x + (delta if seq_axis == 1 else delta[:, None])

    def _vpt_remove_hook(self, _module, _inputs, output):
        if not self.enabled:
            return None
        x = _first(output)
        p, M = self.tower.num_prefix_tokens, self.cfg.num_prompts
        seq_axis = 1 if self.tower.batch_first else 0
        kept = torch.cat([x.narrow(seq_axis, 0, p), x.narrow(seq_axis, p + M, x.shape[seq_axis] - p - M)],
                         dim=seq_axis)
        return _replace_first(output, kept)

    # -- state ----------------------------------------------------------------------------
    def token_state(self) -> dict[str, torch.Tensor]:
        return {f"tokens.{k}": v.detach().cpu().contiguous() for k, v in self.tokens.items()}

    def load_token_state(self, state: dict[str, torch.Tensor]) -> None:
        mine = self.token_state()
        if set(mine) != {k for k in state if k.startswith("tokens.")}:
            raise ValueError(f"token slots differ: checkpoint has {sorted(k for k in state if k.startswith('tokens.'))}, "
                             f"the model expects {sorted(mine)}")
        for k, v in mine.items():
            if tuple(state[k].shape) != tuple(v.shape):
                raise ValueError(f"{k}: checkpoint shape {tuple(state[k].shape)} != model's {tuple(v.shape)}")
        with torch.no_grad():
            for k, param in self.tokens.items():
                param.copy_(state[f"tokens.{k}"].to(param))
