"""Datasets that exist on this machine without any download: Debian packages.

* ``tuxpaint``      -- photographic stamps of Debian ``tuxpaint-stamps-default``, grouped into
                       natural categories by folder (data file ``tuxpaint/categories.tsv``).
* ``fashion_mnist`` -- the 10,000-image test set of Debian ``dataset-fashion-mnist``
                       (torchvision's download is the fallback where a network exists).
"""
from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from .. import resources
from .base import DatasetError, DatasetSpec, LabeledImages, load_classnames_templates

def tuxpaint_root() -> Path:
    return Path(os.environ.get("LR0FM_TUXPAINT_ROOT", "/usr/share/tuxpaint/stamps"))


def fashion_mnist_root() -> Path:
    return Path(os.environ.get("LR0FM_FASHION_MNIST_ROOT", "/usr/share/datasets/fashion-mnist"))


def _tuxpaint_categories() -> list[tuple[str, list[str]]]:
    rows = []
    for line in resources.read_text("datasets/data/tuxpaint/categories.tsv").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, folders = line.split("\t")
        rows.append((name, [f.strip() for f in folders.split(",")]))
    return rows


def build_tuxpaint(root: str | os.PathLike | None = None, split: str = "test",
                   classnames=None, templates=None) -> LabeledImages:
    root = Path(root) if root else tuxpaint_root()
    if not root.is_dir():
        raise DatasetError(f"TuxPaint stamps not found at {root}; install the Debian package "
                           "'tuxpaint-stamps-default' (apt-get install tuxpaint-stamps-default)")
    categories = _tuxpaint_categories()
    names, temps = load_classnames_templates("tuxpaint", classnames, templates)
    samples: list[tuple[str, int]] = []
    for label, (_, folders) in enumerate(categories):
        for folder in folders:
            for path in sorted((root / folder).rglob("*.png")):
                if "cartoon" in path.relative_to(root).parts:
                    continue  # drawings, not photographs
                samples.append((str(path), label))
    if not samples:
        raise DatasetError(f"no TuxPaint stamps under {root}; reinstall 'tuxpaint-stamps-default'")
    ids = [str(Path(p).relative_to(root)) for p, _ in samples]
    spec = DatasetSpec("tuxpaint", split, tuple(names), tuple(temps),
                       description="TuxPaint photographic stamps, 11 natural categories")
    return LabeledImages(spec, samples, ids=ids, root=str(root))


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@lru_cache(maxsize=2)
def _fashion_arrays(images_path: str) -> np.ndarray:
    return _read_idx(Path(images_path))


class _ArrayImageLoader:
    """Picklable loader for images held in an idx file (each worker maps the file once)."""

    def __init__(self, images_path: str):
        self.images_path = images_path

    def __call__(self, index: int) -> Image.Image:
        return Image.fromarray(_fashion_arrays(self.images_path)[index]).convert("RGB")


def _fashion_files(root: Path, split: str) -> tuple[Path, Path] | None:
    prefix = "t10k" if split == "test" else "train"
    for suffix in (".gz", ""):
        images = root / f"{prefix}-images-idx3-ubyte{suffix}"
        labels = root / f"{prefix}-labels-idx1-ubyte{suffix}"
        if images.is_file() and labels.is_file():
            return images, labels
    return None


def build_fashion_mnist(root: str | os.PathLike | None = None, split: str = "test",
                        classnames=None, templates=None, download: bool = False) -> LabeledImages:
    if split not in ("test", "train"):
        raise DatasetError(f"fashion_mnist has splits 'test' and 'train', not {split!r}")
    root = Path(root) if root else fashion_mnist_root()
    files = _fashion_files(root, split) or _fashion_files(root / "FashionMNIST" / "raw", split)
    if files is None and download:
        from torchvision.datasets import FashionMNIST
        FashionMNIST(str(root), train=split == "train", download=True)
        files = _fashion_files(root / "FashionMNIST" / "raw", split)
    if files is None:
        raise DatasetError(f"Fashion-MNIST {split} files not found under {root}; install the Debian package "
                           "'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist) or pass --download")
    images_path, labels_path = files
    labels = _read_idx(labels_path)
    names, temps = load_classnames_templates("fashion_mnist", classnames, templates)
    samples = [(i, int(l)) for i, l in enumerate(labels)]
    spec = DatasetSpec("fashion_mnist", split, tuple(names), tuple(temps),
                       description="Fashion-MNIST (28x28 grey clothing photos), 10 classes")
    from ..filedigest import file_digest
    return LabeledImages(spec, samples, load=_ArrayImageLoader(str(images_path)),
                         ids=[f"{split}-{i}" for i in range(len(samples))], root=str(root),
                         source_digest=file_digest(images_path))
