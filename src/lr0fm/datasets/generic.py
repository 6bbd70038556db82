"""User datasets: an image folder (one sub-folder per class) or a CSV of path,label."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from .base import DatasetError, DatasetSpec, LabeledImages, read_lines

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
DEFAULT_TEMPLATES = ("a photo of a {}.",)


def _templates(templates) -> list[str]:
    if templates is None:
        return list(DEFAULT_TEMPLATES)
    if isinstance(templates, (str, os.PathLike)):
        if not Path(templates).is_file():
            raise DatasetError(f"templates file {templates} does not exist")
        return read_lines(templates)
    return list(templates)


def _classnames_file(classnames) -> list[str] | None:
    if classnames is None:
        return None
    if isinstance(classnames, (str, os.PathLike)):
        if not Path(classnames).is_file():
            raise DatasetError(f"class names file {classnames} does not exist")
        return read_lines(classnames)
    return list(classnames)


def build_imagefolder(root: str | os.PathLike | None = None, split: str = "all",
                      classnames=None, templates=None, key: str = "imagefolder") -> LabeledImages:
    """``root/<class>/<image>``; classes in sorted folder order (torchvision's ImageFolder).

    ``classnames`` (file or list) gives the prompt name of each class in that order.
    """
    if root is None:
        raise DatasetError("the imagefolder dataset needs --data-root DIR with one sub-folder per class")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not folders:
        raise DatasetError(f"image folder {root} has no class sub-folders")
    names = _classnames_file(classnames) or [f.replace("_", " ") for f in folders]
    if len(names) != len(folders):
        raise DatasetError(f"{len(names)} class names given for {len(folders)} class folders in {root}")
    samples = [(str(p), label) for label, folder in enumerate(folders)
               for p in sorted((root / folder).rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    ids = [str(Path(p).relative_to(root)) for p, _ in samples]
    spec = DatasetSpec(key, split, tuple(names), tuple(_templates(templates)))
    return LabeledImages(spec, samples, ids=ids, root=str(root))


def build_csv(root: str | os.PathLike | None = None, split: str = "all",
              classnames=None, templates=None, key: str = "csv", csv_path: str | None = None) -> LabeledImages:
    """A CSV with columns ``path,label`` (label: class index or class name).

    Relative paths are taken relative to the CSV's folder. Class names: given, or the sorted
    distinct labels when labels are names.
    """
    path = Path(csv_path or root or "")
    if not path.is_file():
        raise DatasetError(f"CSV dataset needs --data-root FILE.csv with columns path,label; {path} is not a file")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise DatasetError(f"{path} must have a header with columns path,label")
        rows = [(r["path"], r["label"].strip()) for r in reader]
    names = _classnames_file(classnames)
    if names is None:
        if all(l.isdigit() for _, l in rows):
            raise DatasetError(f"{path} has numeric labels: give --classnames FILE with one class name per line")
        names = sorted({l for _, l in rows})
    index = {n: i for i, n in enumerate(names)}
    samples = []
    for p, l in rows:
        label = int(l) if l.isdigit() else index.get(l)
        if label is None or not 0 <= label < len(names):
            raise DatasetError(f"{path}: label {l!r} is not a class index or a known class name")
        full = Path(p) if Path(p).is_absolute() else path.parent / p
        samples.append((str(full), label))
    spec = DatasetSpec(key, split, tuple(names), tuple(_templates(templates)))
    return LabeledImages(spec, samples, ids=[p for p, _ in rows], root=str(path.parent))
