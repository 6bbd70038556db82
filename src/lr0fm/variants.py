"""Optional interventions on a model for evaluation: LR-TK0 tokens and super-resolution.

A variant changes results, so it is part of every cell's identity (``EvalConfig.variant``).
"""
from __future__ import annotations

from typing import Sequence

from .models.base import ZeroShotModel


def apply_variants(model: ZeroShotModel, resolutions: Sequence[int | str], lr_tokens: str | None = None,
                   sr: str | None = None, device: str = "cpu"):
    """-> (view_fn or None, variant record). Tokens are attached to ``model`` in place."""
    view_fn, variant = None, {}
    if lr_tokens:
        from .tokens import attach_checkpoint  # returns the checkpoint's content digest
        variant["lr_tokens"] = attach_checkpoint(model, lr_tokens)
    if sr:
        from .sr import sr_view_fn  # returns (image -> uint8 views, SR model id)
        view_fn, variant["sr"] = sr_view_fn(model.protocol(resolutions), sr, device=device)
    return view_fn, variant
