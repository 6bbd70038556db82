"""Digests of plain data, text, named tensors and folders: the one way lr0fm turns content into
an id. A leaf module (no torch at import; lr0fm.filedigest, itself a leaf, only when a folder is
digested), so any module may use it without pulling in models or the pipeline.

Every id is ``DIGEST_CHARS`` hex characters of a sha256.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch

DIGEST_CHARS = 32  # every id lr0fm derives has this many hex characters


def digest(obj: Any) -> str:
    """The id of plain data (canonical JSON)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


def text_digest(lines: Sequence[str]) -> str:
    return digest(list(lines))


def tensors_digest(tensors: Mapping[str, "torch.Tensor"], meta: Mapping | None = None) -> str:
    """The id of named tensors (a state dict, LR tokens): names, dtypes, shapes and bytes in sorted
    order, plus optional metadata -- not a file's bytes, whose layout may vary between saves."""
    import torch

    h = hashlib.sha256(json.dumps(dict(meta or {}), sort_keys=True).encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:DIGEST_CHARS]


ALL_FILES = ("**/*",)


def folder_files(folder: str | os.PathLike, patterns: Sequence[str] = ALL_FILES) -> list[Path]:
    """The files of ``folder`` that match any of the glob ``patterns``, sorted."""
    return sorted({p for pattern in patterns for p in Path(folder).glob(pattern) if p.is_file()})


def folder_digest(folder: str | os.PathLike, patterns: Sequence[str] = ALL_FILES) -> str:
    """The id of a folder's content: a digest of the sorted (path inside the folder, sha256) list
    of the files ``patterns`` select (default: every file, in every subfolder). A moved folder
    keeps it; a changed, added or removed file changes it. File digests are remembered
    (lr0fm.filedigest), so a big folder is read once."""
    from .filedigest import file_digests

    files = folder_files(folder, patterns)
    names = [p.relative_to(folder).as_posix() for p in files]
    return digest([[name, sha] for name, sha in zip(names, file_digests(files))])


__all__ = ["ALL_FILES", "DIGEST_CHARS", "digest", "folder_digest", "folder_files", "tensors_digest", "text_digest"]
