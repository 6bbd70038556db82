"""Training images for LR tokens: a synth index (path, caption_id, caption) or any image folder.

Batches hold ``per_caption`` images of each of ``captions`` caption ids, so images generated
from the same caption are each other's hard negatives. A plain folder has one image per
"caption". Which captions a step uses is a pure function of (seed, step), so a resumed run
sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ..datasets.base import open_image_file
from ..errors import InputError

log = logging.getLogger("lr0fm")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class TrainImages:
    paths: list[str]
    caption_ids: list[int]
    load: Callable[[str], Image.Image] = open_image_file
    _readable: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def readable(self, index: int) -> bool:
        """Header check (cached): the file opens and is not a decompression bomb. Unreadable
        images are left out of their batch (a deterministic choice, so resume is unaffected)."""
        path = self.paths[index]
        if path not in self._readable:
            try:
                with Image.open(path) as im:
                    ok = im.size[0] * im.size[1] <= (Image.MAX_IMAGE_PIXELS or float("inf"))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError):
                ok = False
            if not ok:
                log.warning("skipping unreadable or oversized training image %s", path)
            self._readable[path] = ok
        return self._readable[path]

    def load_image(self, index: int) -> Image.Image:
        return self.load(self.paths[index])

    def subset(self, indices: Sequence[int]) -> "TrainImages":
        return TrainImages([self.paths[i] for i in indices], [self.caption_ids[i] for i in indices], self.load,
                           self._readable)

    def split_holdout(self, fraction: float, seed: int = 0) -> tuple["TrainImages", "TrainImages"]:
        """(train, held-out) split by caption id (a caption's images stay together); stable
        under adding images because membership is a hash of the caption id."""
        if fraction <= 0:
            return self, self.subset([])

        def held(cid: int) -> bool:
            h = hashlib.sha256(f"{seed}:{cid}".encode()).digest()
            return int.from_bytes(h[:8], "little") / 2 ** 64 < fraction

        flags = [held(c) for c in self.caption_ids]
        train = [i for i, f in enumerate(flags) if not f]
        val = [i for i, f in enumerate(flags) if f]
        if not train:
            raise InputError(f"held-out fraction {fraction} leaves no training images; lower --val-fraction")
        return self.subset(train), self.subset(val)


def read_index(path: str | os.PathLike) -> TrainImages:
    """A synth index: JSONL (one {"path", "caption_id", ...} per line) or CSV with those columns.
    Relative paths are relative to the index file."""
    path = Path(path)
    rows: list[dict] = []
    try:
        with open(path, encoding="utf-8") as f:
            if path.suffix.lower() == ".csv":
                rows = list(csv.DictReader(f))
            else:
                rows = [json.loads(line) for line in f if line.strip()]
        paths = [str((path.parent / r["path"]) if not os.path.isabs(r["path"]) else r["path"]) for r in rows]
        ids = [int(r["caption_id"]) for r in rows]
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: not a readable image index with 'path' and 'caption_id' fields ({e})") from None
    if not paths:
        raise InputError(f"{path}: the image index is empty")
    return TrainImages(paths, ids)


def folder_images(root: str | os.PathLike) -> TrainImages:
    files = sorted(str(p) for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise InputError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) found; give a folder of images "
                         "or a synth index (.jsonl/.csv)")
    return TrainImages(files, list(range(len(files))))


def load_train_images(source: str | os.PathLike) -> TrainImages:
    """A synth index file or a folder of unlabeled images (searched recursively)."""
    p = Path(source)
    if p.is_dir():
        return folder_images(p)
    if p.is_file():
        return read_index(p)
    raise InputError(f"{source}: no such folder or index file; give a folder of images or a synth index")


def step_batch(data: TrainImages, step: int, captions: int, per_caption: int, seed: int) -> list[int]:
    """The image indices of one global batch: ``captions`` caption ids x up to ``per_caption``
    images each, drawn with an RNG seeded by (seed, step)."""
    rng = np.random.default_rng([seed, step])
    by_caption: dict[int, list[int]] = {}
    for i, c in enumerate(data.caption_ids):
        by_caption.setdefault(c, []).append(i)
    keys = sorted(by_caption)
    chosen = rng.choice(len(keys), size=min(captions, len(keys)), replace=False)
    out: list[int] = []
    for j in chosen:
        members = by_caption[keys[j]]
        take = rng.choice(len(members), size=min(per_caption, len(members)), replace=False)
        out += [members[t] for t in sorted(take)]
    return out


def draw_resolutions(buckets: Sequence[tuple[int, int]], seed: int, step: int, index: int) -> list[int]:
    """One LR size per [lo, hi) bucket, uniform, a pure function of (seed, step, image index)."""
    rng = np.random.default_rng([seed, step, index, 1])
    return [int(rng.integers(lo, hi)) for lo, hi in buckets]
