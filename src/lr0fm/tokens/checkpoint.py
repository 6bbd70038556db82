"""Token checkpoints: only the tokens and the logit scale (safetensors, small), with their token
config, the base model's id and weights hash in the safetensors header. The optimizer,
scheduler, RNG state and teacher cache needed to resume live in a sidecar
``<name>.state.safetensors``: tensors in the file, everything else as JSON in its header (no
pickle, so a run folder from elsewhere cannot run code when resumed)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..digests import tensors_digest
from ..errors import InputError
from ..identity import weights_digest

FORMAT = "lr0fm-lr-tokens/1"


def save_checkpoint(path: str | os.PathLike, distiller, model, cfg, step: int, extra: dict | None = None) -> Path:
    from dataclasses import asdict

    from safetensors.torch import save_file
    path = Path(path)
    tensors = distiller.tokens.token_state()
    tensors["logit_scale"] = distiller.logit_scale.detach().cpu().reshape(1).contiguous()
    meta = {"format": FORMAT, "model_id": model.info.model_id, "weights_hash": weights_digest(model),
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
    """The id of a checkpoint's content (lr0fm.digests.tensors_digest of its tensors and metadata).
    Not the file's bytes: safetensors writes its header in hash-map order, so the same tokens
    saved twice give different files (and would give two result variants)."""
    return tensors_digest(tensors, meta)


def checkpoint_digest(path: str | os.PathLike) -> str:
    """The id results record for a token checkpoint (see content_digest)."""
    return content_digest(*read_checkpoint(path))


def check_matches(meta: dict, model, path) -> None:
    if meta["model_id"] != model.info.model_id:
        raise InputError(f"{path}: tokens were trained for model {meta['model_id']!r}, not {model.info.model_id!r}; "
                         "use the matching --model or retrain with 'lr0fm train-tokens'")
    weights = weights_digest(model)
    if meta["weights_hash"] != weights:
        raise InputError(f"{path}: tokens were trained on other weights of {meta['model_id']} "
                         f"(hash {meta['weights_hash'][:12]} != {weights[:12]}); retrain them")


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


STATE_FORMAT = "lr0fm-lr-tokens-state/1"
# TrainConfig fields that do not change what is trained: a run may resume with other values.
RESUME_FREE = ("micro_batch", "grad_checkpointing", "save_every")


def config_differences(meta: dict, cfg) -> list[str]:
    """The settings (TrainConfig fields, ``tokens.<field>``) in which ``cfg`` differs from the run
    that wrote the checkpoint with header ``meta``."""
    from dataclasses import asdict

    from .modules import TokenConfig
    saved = json.loads(meta.get("train_config", "{}"))
    now = json.loads(json.dumps(asdict(cfg), sort_keys=True, default=list))
    differ = [k for k in sorted(saved.keys() | now.keys())
              if k not in (*RESUME_FREE, "tokens") and saved.get(k) != now.get(k)]
    saved_tokens = json.loads(meta.get("token_config", "{}"))
    now_tokens = TokenConfig(**cfg.tokens).as_dict()
    return differ + [f"tokens.{k}" for k in sorted(saved_tokens.keys() | now_tokens.keys())
                     if saved_tokens.get(k) != now_tokens.get(k)]


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".state.safetensors")


def _encode(obj, tensors: dict[str, torch.Tensor]):
    """A nested state (dicts, lists, tuples, tensors, plain values) -> JSON, tensors moved to
    ``tensors``. Dicts become key-value pairs and tuples are tagged, so int keys (optimizer
    state) and tuples (Adam betas) come back as they were."""
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().clone()  # own storage: safetensors refuses shared memory
        return {"tensor": name}
    if isinstance(obj, dict):
        return {"dict": [[k, _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, tensors) for v in obj]
        return {"tuple": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"resume state holds a {type(obj).__name__}, which has no safe encoding")


def _decode(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        (tag, value), = obj.items()
        if tag == "tensor":
            return tensors[value]
        if tag == "tuple":
            return tuple(_decode(v, tensors) for v in value)
        return {k: _decode(v, tensors) for k, v in value}
    return obj


def save_state_sidecar(path, step: int, best: float, optimizer, scheduler, teacher_cache: dict | None = None) -> None:
    # The teacher cache is saved too: a feature computed in another batch can differ in the last
    # bit (batch-size dependent kernels), and a resumed run must continue bit-identically.
    from safetensors.torch import save_file
    state = {"step": step, "best": best, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
             "teacher_cache": teacher_cache or {}}
    tensors: dict[str, torch.Tensor] = {}
    encoded = json.dumps(_encode(state, tensors))
    target = sidecar_path(path)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"format": STATE_FORMAT, "state": encoded})
    os.replace(tmp, target)


def read_state_sidecar(path) -> dict:
    """The resume state next to checkpoint ``path`` (read with safetensors and JSON only)."""
    from safetensors import safe_open
    side = sidecar_path(path)
    if not side.is_file():
        raise InputError(f"{side}: resume state missing next to {path}; pass --restart to start over")
    try:
        with safe_open(str(side), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {STATE_FORMAT!r}")
        return _decode(json.loads(meta["state"]), tensors)
    except Exception as e:  # not safetensors, truncated, foreign header
        raise InputError(f"{side}: unreadable resume state ({e}); pass --restart to start over") from None


def load_state_sidecar(path, distiller, optimizer, scheduler, model, cfg) -> tuple[int, float]:
    meta = load_into(distiller, path, model)
    state = read_state_sidecar(path)
    if int(meta["step"]) != state["step"]:
        raise InputError(f"{sidecar_path(path)}: resume state is for step {state['step']}, checkpoint for "
                         f"{meta['step']}; pass --restart to start over")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    distiller._teacher_cache.update({k: v.to(model.device) for k, v in state["teacher_cache"].items()})
    return int(state["step"]), float(state["best"])
