"""LR-TK0: learnable low-resolution tokens in a frozen vision tower (self-distilled from HR).

``attach_checkpoint(model, path)`` turns a trained checkpoint on for a ZeroShotModel and returns
the checkpoint's content digest (sha256 of tokens + header; what ``lr0fm eval --lr-tokens`` records).
"""
from .checkpoint import attach_checkpoint, checkpoint_digest, read_checkpoint, save_checkpoint
from .modules import LRTokens, TokenConfig

__all__ = ["LRTokens", "TokenConfig", "attach_checkpoint", "checkpoint_digest", "read_checkpoint", "save_checkpoint"]
