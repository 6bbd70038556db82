"""Measuring a model's pass speed on this machine (``lr0fm calibrate``; stored by lr0fm.speeds).

The real pass (``evaluate_many``: workers, decoding, views, forward, top-k, resume points) runs
three times over the same images, each into a fresh results folder with the classifier cached:
an untimed warm-up of one batch, a short pass of two batches and a long one sized to take about
``seconds``. A pass's time is what its records say (``run.seconds``, what the sweep plan
estimates), so the two timed passes give the speed without the start-up (the difference) and
the start-up itself (what is left of the short pass). The text classifier is built once, timed,
with ImageNet's 80 templates (one text batch per class, as every pass builds it).

Images: photo-like generated JPEGs (500x375 and 375x500, like ImageNet's), or the files of a
given folder, used in a cycle as often as the long pass needs.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..datasets.base import DatasetSpec, LabeledImages, packaged_text
from ..errors import InputError
from ..models.base import ZeroShotModel
from ..options import EvalConfig
from ..speeds import Speed, amp_name, device_name, now
from ..store import ResultsStore
from ..version import __version__
from .loading import default_workers

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _write_jpeg(args: tuple[Path, int, int]) -> None:
    from PIL import Image

    path, i, seed = args
    rng = np.random.default_rng((seed, i))  # per image, so any process writes the same file
    w, h = (500, 375) if i % 3 else (375, 500)
    small = rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8)
    a = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)).copy()
    a[h // 3: h // 2, :, i % 3] = 255
    Image.fromarray(a).save(path, quality=90)


def generate_jpegs(root: Path, n: int, seed: int = 0, processes: int | None = None) -> list[Path]:
    """Photo-sized JPEGs (smooth colour fields with edges, 500x375 and 375x500 like ImageNet),
    written in parallel; files already in ``root`` (same names) are kept, so a folder is reused."""
    root.mkdir(parents=True, exist_ok=True)
    paths = [root / f"{i:05d}.jpg" for i in range(n)]
    todo = [(p, i, seed) for i, p in enumerate(paths) if not p.is_file()]
    processes = processes or min(len(todo) // 64 + 1, os.cpu_count() or 1)
    if processes > 1:
        with ProcessPoolExecutor(processes) as pool:
            list(pool.map(_write_jpeg, todo, chunksize=64))
    else:
        for item in todo:
            _write_jpeg(item)
    return paths


def jpeg_dataset(paths: Sequence, classnames: Sequence[str], templates: Sequence[str],
                 name: str = "bench") -> LabeledImages:
    """A LabeledImages over image files (label i mod C), read by lr0fm's own file loader."""
    spec = DatasetSpec(name, "all", tuple(classnames), tuple(templates))
    return LabeledImages(spec, [(str(p), i % len(classnames)) for i, p in enumerate(paths)])


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files under ``folder`` (recursively), or one line."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"--images {folder}: not a folder; give a folder of image files (or leave it out for "
                         "generated JPEGs)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"--images {folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it")
    return files


def _prompts_per_second(model: ZeroShotModel, classnames: list[str], templates: list[str],
                        device: str) -> tuple[float, torch.Tensor, int]:
    """(prompts/s, the classifier of the classes timed last, how many classes): classifiers of 2,
    8, 32 classes built until one takes a second, after an untimed one-class build."""
    from ..classifier import build_zero_shot_classifier

    build_zero_shot_classifier(model, classnames[:1], templates)
    classes = 2
    while True:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        weights = build_zero_shot_classifier(model, classnames[:classes], templates)  # ends on the host
        seconds = time.perf_counter() - t
        if seconds >= 1.0 or classes >= len(classnames):
            return classes * len(templates) / seconds, weights, classes
        classes = min(classes * 4, len(classnames))


def calibrate(model: ZeroShotModel, name: str, cfg: EvalConfig, images: Sequence[Path], seconds: float = 20.0,
              log=None) -> Speed:
    """The pass speed of ``model`` (called ``name`` in sweeps) with the run options ``cfg`` on
    ``images`` (cycled), measured as the module says."""
    from ..classifier import classifier_key
    from .passes import Job, evaluate_many

    say = log or (lambda text: None)
    classnames = [f"class {i}" for i in range(32)]
    templates = packaged_text("imagenet1k", "templates")
    prompts_per_s, weights, classes = _prompts_per_second(model, classnames, templates, cfg.device)
    say(f"text: {prompts_per_s:,.1f} prompts/s ({classes} classes x {len(templates)} templates)")
    classnames = classnames[:classes]
    key = classifier_key(model, classnames, templates)
    R, batch = len(cfg.resolutions), cfg.batch_size
    cfg = EvalConfig(**{**cfg.__dict__, "progress": False, "limit": None})

    with tempfile.TemporaryDirectory(prefix="lr0fm-calibrate-") as work:
        runs = iter(range(1_000_000))

        def timed(n: int) -> float:
            store = ResultsStore(Path(work) / f"pass{next(runs)}")
            store.classifier_cache.mkdir(parents=True, exist_ok=True)
            torch.save(weights, store.classifier_cache / f"{key}.pt")
            data = jpeg_dataset([images[i % len(images)] for i in range(n)], classnames, templates, "calibration")
            (records,) = evaluate_many([Job(model, cfg)], data, store)
            run = records[0]["run"]
            say(f"pass of {n} images: {run['seconds']:.2f} s; stages " +
                " ".join(f"{k} {v:.2f}" for k, v in run.get("stages", {}).items()))
            return float(run["seconds"])

        timed(batch)  # warm-up: workers, kernels, the device decoder
        n1 = 2 * batch
        t1 = timed(n1)
        rough = n1 * R / max(t1, 1e-3)  # pairs/s with the start-up in: the long pass takes at most ``seconds``
        n2 = n1 + batch * max(4, math.ceil(rough * seconds / R / batch))
        t2 = timed(n2)
    pairs_per_s = (n2 - n1) * R / (t2 - t1) if t2 > t1 else n2 * R / t2
    fixed = max(0.0, t1 - n1 * R / pairs_per_s)
    say(f"passes: {n1} images in {t1:.2f} s, {n2} in {t2:.2f} s -> {pairs_per_s:,.1f} pairs/s, {fixed:.2f} s fixed")
    workers = default_workers(cfg.device) if cfg.workers is None else cfg.workers
    return Speed(name, torch.device(cfg.device).type, device_name(cfg.device), amp_name(cfg.amp), batch,
                 round(pairs_per_s, 2), round(fixed, 3), round(prompts_per_s, 2), n2, R, workers, __version__,
                 torch.__version__.split("+")[0], now())


__all__ = ["calibrate", "generate_jpegs", "image_files", "jpeg_dataset"]
