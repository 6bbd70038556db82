"""Training LR tokens by self-distillation (LR-TK0).

Teacher = the frozen model with tokens off on the HR view (no grad; its features are a pure
function of the image, so they are cached). Student = the same model with tokens on, on the HR
view and one LR view per resolution bucket. Loss = sum over student views of the symmetric
InfoNCE between teacher and student features with one learnable logit scale, plus an optional
non-saturating term (``aux``: 1 - cosine, or KL between softmaxes when the target is logits).

One gradient path serves single process, micro-batching and DDP: student features are computed
(optionally in micro-batches without a graph), gathered across ranks, the global loss is
differentiated w.r.t. the gathered features, and each rank back-propagates its own slice
(GradCache). Token gradients are then summed over ranks; the scale's gradient is already the
full one on every rank. So N ranks give the tokens one process gives on the same global batch.
"""
from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..protocol import HR
from .checkpoint import (config_differences, load_state_sidecar, read_checkpoint, save_checkpoint,
                         save_state_sidecar, sidecar_path)
from .data import TrainImages, draw_resolutions, step_batch
from .modules import LRTokens, TokenConfig

log = logging.getLogger("lr0fm")

DEFAULT_BUCKETS = ((16, 32), (32, 64), (64, 128))
TARGETS = ("embedding", "pooled", "logits")
AUX = ("none", "cosine", "kl")
VALIDATION_STEP = 2 ** 31 - 1  # the fixed "step" whose LR sizes the held-out views use


@dataclass
class TrainConfig:
    steps: int = 1000
    captions: int = 32              # caption ids per global batch
    per_caption: int = 4            # images per caption id (hard negatives)
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 50
    buckets: tuple = DEFAULT_BUCKETS
    hr_view: bool = True            # the student also sees the HR view (keeps HR accuracy)
    target: str = "embedding"       # what is distilled: encode_image | pooled_features | image_logits
    aux: str = "none"               # non-saturating term beside InfoNCE
    aux_weight: float = 1.0
    kl_temperature: float = 1.0
    micro_batch: int | None = None  # views per forward; None = one forward with graph
    amp: str | None = None          # "bf16" autocast (any device; fast where the hardware has bf16)
    grad_checkpointing: bool = False
    seed: int = 0
    val_fraction: float = 0.05
    val_every: int = 100
    save_every: int = 100
    init_scale: float = math.log(1 / 0.07)
    tokens: dict = field(default_factory=dict)  # TokenConfig fields

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise InputError(f"--target {self.target!r} unknown; use one of {TARGETS}")
        if self.aux not in AUX:
            raise InputError(f"--aux {self.aux!r} unknown; use one of {AUX}")
        if self.aux == "kl" and self.target != "logits":
            raise InputError("--aux kl compares class distributions; it needs --target logits")
        self.buckets = tuple(tuple(int(v) for v in b) for b in self.buckets)
        for lo, hi in self.buckets:
            if not 0 < lo < hi:
                raise InputError(f"resolution bucket [{lo}, {hi}) is empty; give lo < hi, both > 0")


def feature_fn(model, target: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if target == "embedding":
        return model.encode_image
    name = {"pooled": "pooled_features", "logits": "image_logits"}[target]
    fn = getattr(model, name, None)
    if fn is None:
        raise InputError(f"--target {target} needs a model with {name}() (the ConSE models); use --target embedding")
    return lambda x: fn(x.to(model.device)).float()


def info_nce(student: torch.Tensor, teacher: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between matching rows of student and teacher (both normalised here)."""
    s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    logits = logit_scale.exp() * s @ t.T
    labels = torch.arange(len(s), device=s.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def aux_loss(kind: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    if kind == "cosine":
        return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    if kind == "kl":
        t = F.log_softmax(teacher / temperature, dim=-1)
        s = F.log_softmax(student / temperature, dim=-1)
        return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2
    return student.new_zeros(())


class Distiller(nn.Module):
    """The trainable part: the tokens and one logit scale. The base model is held, not owned,
    so its weights are neither in this module's state nor in the optimizer."""

    def __init__(self, model, cfg: TrainConfig):
        super().__init__()
        object.__setattr__(self, "model", model)  # not a submodule
        self.cfg = cfg
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        self.tokens = LRTokens(model, TokenConfig(**cfg.tokens))
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_scale)))
        self.to(model.device)
        self.features = feature_fn(model, cfg.target)
        self.protocol = model.protocol()
        self._teacher_cache: dict[str, torch.Tensor] = {}

    def views(self, data: TrainImages, indices: list[int], step: int) -> torch.Tensor:
        """[V, B, 3, S, S] normalised views: HR (if on) then one per bucket."""
        out = []
        for i in indices:
            image = data.load_image(i)
            keys = ([HR] if self.cfg.hr_view else []) + draw_resolutions(self.cfg.buckets, self.cfg.seed, step, i)
            out.append(torch.from_numpy(self.protocol.views_uint8(image, keys)))
        return self.protocol.normalize_batch(torch.stack(out).to(self.model.device)).transpose(0, 1)

    @torch.no_grad()
    def teacher(self, data: TrainImages, indices: list[int]) -> torch.Tensor:
        missing = [i for i in indices if data.paths[i] not in self._teacher_cache]
        if missing:
            hr = torch.stack([torch.from_numpy(self.protocol.views_uint8(data.load_image(i), [HR])[0])
                              for i in missing])
            x = self.protocol.normalize_batch(hr.to(self.model.device))
            with self.tokens.disabled(), self._autocast():
                feats = self._chunked(x, grad=False)
            for i, f in zip(missing, feats):
                self._teacher_cache[data.paths[i]] = f.float()
        return torch.stack([self._teacher_cache[data.paths[i]] for i in indices])

    def _autocast(self):
        import contextlib
        if not self.cfg.amp:  # honoured on CPU too, as `lr0fm eval --amp` is: the config says what ran
            return contextlib.nullcontext()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[self.cfg.amp]
        return torch.autocast(self.model.device.type, dtype=dtype)

    def _chunked(self, x: torch.Tensor, grad: bool) -> torch.Tensor:
        mb = self.cfg.micro_batch or len(x)
        with torch.set_grad_enabled(grad):
            return torch.cat([self.features(x[i:i + mb]).float() for i in range(0, len(x), mb)])

    def loss_from_features(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """student [V, B, D], teacher [B, D] -> summed loss over views and per-view parts."""
        parts = {}
        total = student.new_zeros(())
        for v in range(student.shape[0]):
            loss = info_nce(student[v], teacher, self.logit_scale)
            if self.cfg.aux != "none":
                loss = loss + self.cfg.aux_weight * aux_loss(self.cfg.aux, student[v], teacher,
                                                             self.cfg.kl_temperature)
            parts[v] = float(loss.detach())
            total = total + loss
        return total, parts


def _dist():
    import torch.distributed as dist
    return dist if dist.is_available() and dist.is_initialized() else None


def _shard(indices: list[int], rank: int, world: int) -> tuple[int, int]:
    n = len(indices)
    per = math.ceil(n / world)
    return min(n, rank * per), min(n, (rank + 1) * per)


def train_step(d: Distiller, data: TrainImages, step: int, optimizer) -> float:
    """One optimisation step on the global batch of ``step``; returns the (global) loss."""
    cfg, dist = d.cfg, _dist()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)
    batch = [i for i in step_batch(data, step, cfg.captions, cfg.per_caption, cfg.seed) if data.readable(i)]
    lo, hi = _shard(batch, rank, world)
    local = batch[lo:hi]
    teacher = d.teacher(data, batch)                 # the global batch's teacher features
    views = d.views(data, local, step)               # [V, b, 3, S, S]
    V, b = views.shape[:2]
    flat = views.flatten(0, 1)
    keep_graph = cfg.micro_batch is None
    with d._autocast():
        local_feats = d._chunked(flat, grad=keep_graph)  # [V*b, D]
    D = local_feats.shape[-1]
    gathered = local_feats.detach().view(V, b, D)
    if dist is not None:
        sizes = [_shard(batch, r, world) for r in range(world)]
        parts = [gathered.new_zeros(V, e - s, D) for s, e in sizes]
        # all_gather needs equal sizes: pad to the largest shard
        width = max(e - s for s, e in sizes)
        padded = [gathered.new_zeros(V, width, D) for _ in range(world)]
        mine = F.pad(gathered, (0, 0, 0, width - b))
        dist.all_gather(padded, mine.contiguous())
        parts = [p[:, :e - s] for p, (s, e) in zip(padded, sizes)]
        glob = torch.cat(parts, dim=1)
    else:
        glob = gathered
    glob = glob.clone().requires_grad_(True)
    loss, _ = d.loss_from_features(glob, teacher)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()                                  # grads of the scale and of the features
    feat_grad = glob.grad[:, lo:hi].reshape(V * b, D)
    if keep_graph:
        local_feats.backward(feat_grad)
    else:
        mb = cfg.micro_batch
        for i in range(0, len(flat), mb):
            with d._autocast():
                f = d.features(flat[i:i + mb]).float()
            f.backward(feat_grad[i:i + mb])
    if dist is not None:
        for p in d.tokens.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)                  # sum: each rank holds its slice's share
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def validation_loss(d: Distiller, data: TrainImages, batch_size: int = 64) -> float:
    """Loss on held-out images with fixed views, in batches of up to batch_size."""
    if len(data) == 0:
        return float("nan")
    total, n = 0.0, 0
    for i in range(0, len(data), batch_size):
        idx = [j for j in range(i, min(len(data), i + batch_size)) if data.readable(j)]
        if len(idx) < 2:
            continue
        teacher = d.teacher(data, idx)
        views = d.views(data, idx, step=VALIDATION_STEP)
        with d._autocast():
            feats = d._chunked(views.flatten(0, 1), grad=False).view(views.shape[0], len(idx), -1)
        loss, _ = d.loss_from_features(feats, teacher)
        total, n = total + float(loss) * len(idx), n + len(idx)
    return total / max(n, 1)


def make_optimizer(d: Distiller, cfg: TrainConfig):
    optimizer = torch.optim.AdamW(d.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def schedule(step: int) -> float:  # linear warmup, cosine decay to 0
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def enable_grad_checkpointing(model) -> None:
    """Use the backbone's own activation checkpointing switch (open_clip, timm, transformers)."""
    for target in (getattr(model, "model", None), model.tower, model):
        if target is None:
            continue
        for method in ("set_grad_checkpointing", "gradient_checkpointing_enable"):
            if hasattr(target, method):
                getattr(target, method)()
                return
    raise InputError(f"{model.model_id}: the backbone has no gradient-checkpointing switch; drop --grad-checkpointing")


def train_tokens(model, data: TrainImages, cfg: TrainConfig, out_dir: str | os.PathLike,
                 progress: bool = True, restart: bool = False, stop_at: int | None = None) -> Path:
    """Train tokens on ``data`` (a held-out part is split off for model selection); write
    ``out_dir/last.safetensors`` (+ sidecar state) and ``out_dir/best.safetensors``; return best.

    ``stop_at``: end this invocation after that step (time-sliced jobs); the same call again
    resumes and finishes exactly as an uninterrupted run. A run in ``out_dir`` with another
    config is refused unless ``restart``, which discards it."""
    out = Path(out_dir)
    dist = _dist()
    rank = dist.get_rank() if dist else 0
    if not restart:
        check_same_run(out, cfg)  # before the model gets tokens or anything is written
    train, val = data.split_holdout(cfg.val_fraction, cfg.seed)
    if cfg.grad_checkpointing:
        enable_grad_checkpointing(model)
    d = Distiller(model, cfg)
    optimizer, scheduler = make_optimizer(d, cfg)
    out.mkdir(parents=True, exist_ok=True)  # only once the configuration is known to be valid
    start, best = 0, float("inf")
    last = out / "last.safetensors"
    if restart:
        if rank == 0:
            for stale in (last, sidecar_path(last), out / "best.safetensors"):
                stale.unlink(missing_ok=True)
    elif last.is_file():
        start, best = load_state_sidecar(last, d, optimizer, scheduler, model, cfg)
        log.info("resuming token training at step %d", start)
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=start, desc="lr-tokens", unit="step", file=sys.stderr,
                   dynamic_ncols=True)
    for step in range(start, min(cfg.steps, stop_at or cfg.steps)):
        loss = train_step(d, train, step, optimizer)
        scheduler.step()
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.4f}", scale=f"{d.logit_scale.exp().item():.1f}")
            bar.update(1)
        done = step + 1
        if done % cfg.val_every == 0 or done == cfg.steps:
            v = validation_loss(d, val) if len(val) else loss
            if v < best:
                best = v
                if rank == 0:
                    save_checkpoint(out / "best.safetensors", d, model, cfg, done, {"val_loss": v})
        if rank == 0 and (done % cfg.save_every == 0 or done in (cfg.steps, stop_at)):
            save_checkpoint(last, d, model, cfg, done, {"loss": loss})
            save_state_sidecar(last, done, best, optimizer, scheduler, d._teacher_cache)
    if bar is not None:
        bar.close()
    d.tokens.detach()  # the model is the base model again; attach_checkpoint turns tokens on
    if dist is not None:
        dist.barrier()
    return out / "best.safetensors"


def check_same_run(out: Path, cfg: TrainConfig) -> None:
    """Refuse to continue (or to return the best of) a run in ``out`` made with another config."""
    for name in ("last.safetensors", "best.safetensors"):
        if (out / name).is_file():
            differ = config_differences(read_checkpoint(out / name)[1], cfg)
            if differ:
                raise InputError(f"{out} holds a run with other settings ({', '.join(differ)}); pass --restart "
                                 "to discard it and start over, or use another --output")
            return


def config_from_dict(d: dict) -> TrainConfig:
    return TrainConfig(**{k: v for k, v in d.items() if k in TrainConfig.__dataclass_fields__})


__all__ = ["Distiller", "TrainConfig", "config_from_dict", "info_nce", "train_step", "train_tokens",
           "validation_loss"]
