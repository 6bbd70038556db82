"""``lr0fm synth``: synthetic training images for LR tokens from a captions file (text-to-image).

Any diffusers pipeline id or local folder (``DiffusionPipeline.from_pretrained``; default
PixArt-alpha, as in the paper). Image j of caption i uses seed f(seed, i, j), so a run is
reproducible, resumable (existing files are skipped) and shardable (``--shard i/n`` or the
torchrun rank: image k of the plan belongs to shard k mod n). The index ``index.jsonl``
(path, caption_id, caption) lists every finished image and is what ``lr0fm train-tokens`` reads.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .extras import require

DEFAULT_PIPELINE = "PixArt-alpha/PixArt-XL-2-1024-MS"
INDEX = "index.jsonl"


@dataclass(frozen=True)
class Item:
    caption_id: int
    image: int
    caption: str

    @property
    def relpath(self) -> str:
        return f"images/{self.caption_id:06d}_{self.image:03d}.png"


def image_seed(seed: int, caption_id: int, image: int) -> int:
    """Deterministic per-image seed (independent of sharding and batch composition)."""
    return ((seed * 1_000_003 + caption_id) * 10_007 + image) % (2 ** 63)


def read_captions(path: str | os.PathLike) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            captions = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise InputError(f"--captions {path}: cannot read it ({e.strerror}); give a text file, one caption a line") from None
    if not captions:
        raise InputError(f"--captions {path}: no captions (one per line expected)")
    return captions


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:  # torchrun sets these
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--shard {text!r}: give i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise InputError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def plan(captions: list[str], per_caption: int) -> list[Item]:
    return [Item(c, j, text) for c, text in enumerate(captions) for j in range(per_caption)]


def write_index(out: Path, items: list[Item]) -> Path:
    """Atomically write the index of all planned images that exist (any shard may call this)."""
    path = out / INDEX
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for it in items:
            if (out / it.relpath).is_file():
                f.write(json.dumps({"path": it.relpath, "caption_id": it.caption_id, "caption": it.caption}) + "\n")
    os.replace(tmp, path)
    return path


def load_pipeline(name: str, device: str, dtype: str | None):
    import torch
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as dlog
    dlog.disable_progress_bar()
    kwargs = {}
    if dtype:
        kwargs["torch_dtype"] = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    try:
        pipe = DiffusionPipeline.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as e:
        raise InputError(f"--pipeline {name}: cannot load a diffusers pipeline ({str(e).splitlines()[0]}); "
                         "give a hub id available offline or a local folder saved with save_pretrained") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def synthesize(captions: list[str], out: str | os.PathLike, pipeline: str = DEFAULT_PIPELINE,
               per_caption: int = 4, shard: tuple[int, int] = (0, 1), seed: int = 0, batch_size: int = 4,
               steps: int | None = None, size: int | None = None, guidance: float | None = None,
               device: str = "cpu", dtype: str | None = None, progress: bool = True) -> Path:
    require("diffusers", "lr0fm synth")  # before the output folder is made
    import torch
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    items = plan(captions, per_caption)
    rank, world = shard
    todo = [it for k, it in enumerate(items) if k % world == rank and not (out / it.relpath).is_file()]
    if todo:
        pipe = load_pipeline(pipeline, device, dtype)
        call = {k: v for k, v in {"num_inference_steps": steps, "height": size, "width": size,
                                  "guidance_scale": guidance}.items() if v is not None}
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(todo), desc="synth", unit="img", file=sys.stderr, dynamic_ncols=True)
        gen_device = "cpu" if device == "cpu" else device
        for i in range(0, len(todo), batch_size):
            batch = todo[i:i + batch_size]
            generators = [torch.Generator(gen_device).manual_seed(image_seed(seed, it.caption_id, it.image))
                          for it in batch]
            images = pipe(prompt=[it.caption for it in batch], generator=generators, output_type="pil", **call).images
            for it, image in zip(batch, images):
                target = out / it.relpath
                tmp = target.with_suffix(f".tmp{os.getpid()}.png")
                image.save(tmp)
                os.replace(tmp, target)  # a killed run never leaves a half-written image
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
    return write_index(out, items)


