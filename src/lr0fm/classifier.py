"""Zero-shot text classifier: class names x templates -> [D, C] weights, cached on disk.

The cache key comes from lr0fm.identity (the model's identity -- weights digest, kwargs, text
config -- with the class names and templates), so a classifier is built once per (model,
prompts) and reused by every resolution, rerun and analysis, and never across weights.
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Sequence

import torch

from .atomic import atomic_write_bytes
from .datasets.base import fill_template
from .identity import classifier_key
from .models.base import ZeroShotModel


@torch.no_grad()
def build_zero_shot_classifier(model: ZeroShotModel, classnames: Sequence[str], templates: Sequence[str],
                               batch_size: int = 256) -> torch.Tensor:
    """[D, C] L2-normalised mean of the normalised prompt embeddings of each class (CLIP's recipe).

    Each class's prompts are one text batch (split only past ``batch_size``), as CLIP_benchmark
    does: a batch mixing classes changes the float rounding of every row (2e-7 here), and the
    classifier must match CLIP_benchmark's within 1e-7. The classifier is cached, so the extra
    batches are paid once per (model, prompts).
    """
    rows = []
    for c in classnames:
        prompts = [fill_template(t, c) for t in templates]
        feats = torch.cat([model.encode_text(prompts[i:i + batch_size]) for i in range(0, len(prompts), batch_size)])
        rows.append(torch.nn.functional.normalize(feats, dim=-1).mean(0))
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1).T.contiguous().cpu()


def cached_classifier(model: ZeroShotModel, classnames: Sequence[str], templates: Sequence[str],
                      cache_dir: str | os.PathLike | None, key: str | None = None) -> tuple[torch.Tensor, str]:
    """(classifier, cache key); ``key`` defaults to identity.classifier_key of the model and prompts."""
    key = key or classifier_key(model, classnames, templates)
    if cache_dir is None:
        return build_zero_shot_classifier(model, classnames, templates), key
    path = Path(cache_dir) / f"{key}.pt"
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True), key
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            with contextlib.suppress(OSError):  # replaced below (or one line there for a read-only folder)
                path.unlink(missing_ok=True)
    weights = build_zero_shot_classifier(model, classnames, templates)
    # the cache is the results folder's own (ResultsStore.classifier_cache): if it cannot be written,
    # neither can the results, so say so now (one line), not after the whole pass
    buf = io.BytesIO()  # torch.save on a path raises RuntimeError, not OSError, when it cannot write
    torch.save(weights, buf)
    atomic_write_bytes(path, buf.getvalue())
    return weights, key
