"""Token checkpoints: only the tokens and the logit scale (safetensors, small), with their token
config, the base model's id and weights hash in the safetensors header. The optimizer,
scheduler and RNG state needed to resume live in a sidecar ``<name>.state.pt``."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import InputError
from ..models.base import state_dict_hash

FORMAT = "lr0fm-lr-tokens/1"


def model_weights_id(model) -> str:
    """The weights hash a checkpoint is tied to (the recorded one, else a hash of the tower)."""
    if model.info.weights_hash:
        return model.info.weights_hash
    cached = model.info.extra.get("_tower_state_hash")
    if cached is None:
        cached = state_dict_hash(model.tower)
        model.info.extra["_tower_state_hash"] = cached
    return cached


def save_checkpoint(path: str | os.PathLike, distiller, model, cfg, step: int, extra: dict | None = None) -> Path:
    from dataclasses import asdict

    from safetensors.torch import save_file
    path = Path(path)
    tensors = distiller.tokens.token_state()
    tensors["logit_scale"] = distiller.logit_scale.detach().cpu().reshape(1).contiguous()
    meta = {"format": FORMAT, "model_id": model.info.model_id, "weights_hash": model_weights_id(model),
            "tower": distiller.tokens.tower.name, "input_size": str(model.preprocess.input_size),
            "token_config": json.dumps(distiller.tokens.cfg.as_dict(), sort_keys=True),
            "train_config": json.dumps(asdict(cfg), sort_keys=True, default=list),
            "step": str(step), "extra": json.dumps(extra or {})}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # missing file, not safetensors, truncated
        raise InputError(f"{path}: not a readable LR-token checkpoint (.safetensors) ({e})") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{path}: not an LR-token checkpoint (format {meta.get('format')!r}, expected {FORMAT!r}); "
                         "make one with 'lr0fm train-tokens'")
    return tensors, meta


def content_digest(tensors: dict[str, torch.Tensor], meta: dict) -> str:
    """sha256 of a checkpoint's content: metadata and tensors in sorted order. Not the file's
    bytes: safetensors writes its header in hash-map order, so the same tokens saved twice give
    different files (and would give two result variants)."""
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def checkpoint_digest(path: str | os.PathLike) -> str:
    """The id results record for a token checkpoint (see content_digest)."""
    return content_digest(*read_checkpoint(path))


def check_matches(meta: dict, model, path) -> None:
    if meta["model_id"] != model.info.model_id:
        raise InputError(f"{path}: tokens were trained for model {meta['model_id']!r}, not {model.info.model_id!r}; "
                         "use the matching --model or retrain with 'lr0fm train-tokens'")
    if meta["weights_hash"] != model_weights_id(model):
        raise InputError(f"{path}: tokens were trained on other weights of {meta['model_id']} "
                         f"(hash {meta['weights_hash'][:12]} != {model_weights_id(model)[:12]}); retrain them")


def attach_checkpoint(model, path: str | os.PathLike):
    """Attach the checkpoint's tokens to ``model`` (on at every resolution, HR included) and
    return the checkpoint's content digest (sha256), which results record."""
    from .modules import LRTokens, TokenConfig
    tensors, meta = read_checkpoint(path)
    check_matches(meta, model, path)
    try:
        cfg = TokenConfig(**json.loads(meta["token_config"]))
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: unreadable token config in the header ({e})") from None
    previous = getattr(model, "_lr_tokens", None)
    if previous is not None:
        previous.detach()
    tokens = LRTokens(model, cfg).to(model.device)
    try:
        tokens.load_token_state(tensors)
    except ValueError as e:
        tokens.detach()
        raise InputError(f"{path}: tokens do not fit this model: {e}") from None
    for p in tokens.parameters():
        p.requires_grad_(False)
    object.__setattr__(model, "_lr_tokens", tokens)  # kept alive, not a submodule: model weights unchanged
    return content_digest(tensors, meta)


def load_into(distiller, path, model) -> dict:
    tensors, meta = read_checkpoint(path)
    check_matches(meta, model, path)
    distiller.tokens.load_token_state(tensors)
    with torch.no_grad():
        distiller.logit_scale.copy_(tensors["logit_scale"].reshape(()))
    return meta


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".state.pt")


def save_state_sidecar(path, step: int, best: float, optimizer, scheduler, teacher_cache: dict | None = None) -> None:
    # The teacher cache is saved too: a feature computed in another batch can differ in the last
    # bit (batch-size dependent kernels), and a resumed run must continue bit-identically.
    state = {"step": step, "best": best, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
             "teacher_cache": teacher_cache or {}}
    target = sidecar_path(path)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, target)


def load_state_sidecar(path, distiller, optimizer, scheduler, model, cfg) -> tuple[int, float]:
    meta = load_into(distiller, path, model)
    side = sidecar_path(path)
    if not side.is_file():
        raise InputError(f"{side}: resume state missing next to {path}; delete {path} to start over")
    state = torch.load(side, map_location="cpu", weights_only=False)
    if int(meta["step"]) != state["step"]:
        raise InputError(f"{side}: resume state is for step {state['step']}, checkpoint for {meta['step']}; "
                         "delete both to start over")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    distiller._teacher_cache.update({k: v.to(model.device) for k, v in state.get("teacher_cache", {}).items()})
    return int(state["step"]), float(state["best"])
