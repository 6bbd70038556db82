"""User datasets: an image folder (one sub-folder per class) or a CSV of path,label."""
from __future__ import annotations

import csv
import difflib
import io
import os
from pathlib import Path

from ..textfile import read_utf8
from .base import DatasetError, DatasetSpec, LabeledImages

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
DEFAULT_TEMPLATES = ("a photo of a {}.",)


def _read_text(path: str | os.PathLike, what: str) -> str:
    return read_utf8(path, what, DatasetError)


def _text_lines(path: str | os.PathLike, what: str) -> list[str]:
    return [line for line in _read_text(path, what).splitlines() if line.strip()]


def _templates(templates) -> list[str]:
    if templates is None:
        return list(DEFAULT_TEMPLATES)
    if isinstance(templates, (str, os.PathLike)):
        if not Path(templates).is_file():
            raise DatasetError(f"templates file {templates} does not exist")
        return _text_lines(templates, "templates file")
    return list(templates)


def _classnames_file(classnames) -> list[str] | None:
    if classnames is None:
        return None
    if isinstance(classnames, (str, os.PathLike)):
        if not Path(classnames).is_file():
            raise DatasetError(f"class names file {classnames} does not exist")
        return _text_lines(classnames, "class names file")
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
    if not samples:
        raise DatasetError(f"the class folders of {root} hold no image files ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                           "put the images in one sub-folder per class")
    ids = [str(Path(p).relative_to(root)) for p, _ in samples]
    spec = DatasetSpec(key, split, tuple(names), tuple(_templates(templates)))
    return LabeledImages(spec, samples, ids=ids, root=str(root))


def build_csv(root: str | os.PathLike | None = None, split: str = "all",
              classnames=None, templates=None, key: str = "csv", csv_path: str | None = None) -> LabeledImages:
    """A CSV with columns ``path,label``; relative paths are taken relative to the CSV's folder.

    Labels are either all class indices (digits only, 0-based; ``classnames`` then gives the
    names, one per index) or all class names (the classes are ``classnames`` when given, every
    label being one of them, else the sorted distinct labels). Anything else (a mix, an empty
    label, an index out of range, an unknown name, a short row) is an error naming the line.
    """
    path = Path(csv_path or root or "")
    if not path.is_file():
        raise DatasetError(f"CSV dataset needs --data-root FILE.csv with columns path,label; {path} is not a file")
    rows = _read_csv_rows(path)
    given = _classnames_file(classnames)
    indices = [(n, l) for n, _, l in rows if _is_index(l)]
    names = [(n, l) for n, _, l in rows if not _is_index(l)]
    if indices and names:
        raise DatasetError(f"{path} mixes class indices (line {indices[0][0]}: {indices[0][1]!r}) and class names "
                           f"(line {names[0][0]}: {names[0][1]!r}); use one kind of label throughout")
    if indices:
        if given is None:
            raise DatasetError(f"{path} has numeric labels: give --classnames FILE with one class name per line")
        classes = given
        for n, l in indices:
            if int(l) >= len(classes):
                raise DatasetError(f"{path}:{n}: label {l} is not a class index 0..{len(classes) - 1} "
                                   f"({len(classes)} class names given)")
        labels = [int(l) for _, _, l in rows]
    else:
        classes = given if given is not None else sorted({l for _, _, l in rows})
        index = {c: i for i, c in enumerate(classes)}
        for n, l in names:
            if l not in index:
                close = difflib.get_close_matches(l, classes, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise DatasetError(f"{path}:{n}: label {l!r} is not one of the {len(classes)} class names "
                                   f"given with --classnames{hint}")
        labels = [index[l] for _, _, l in rows]
    samples = [(str(Path(p) if Path(p).is_absolute() else path.parent / p), label)
               for (_, p, _), label in zip(rows, labels)]
    spec = DatasetSpec(key, split, tuple(classes), tuple(_templates(templates)))
    return LabeledImages(spec, samples, ids=[p for _, p, _ in rows], root=str(path.parent))


def _is_index(label: str) -> bool:
    return label.isascii() and label.isdigit()


def _read_csv_rows(path: Path) -> list[tuple[int, str, str]]:
    """(line number, path, label) of every data row, each checked to have a path and a label."""
    reader = csv.reader(io.StringIO(_read_text(path, "CSV dataset"), newline=""))
    header = [c.strip() for c in next(reader, [])]
    if "path" not in header or "label" not in header:
        raise DatasetError(f"{path} must have a header with columns path,label")
    at_path, at_label = header.index("path"), header.index("label")
    rows = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue  # blank line
        n = reader.line_num
        if len(values) != len(header):
            raise DatasetError(f"{path}:{n}: {len(values)} values for the {len(header)} columns "
                               f"{','.join(header)}; quote paths that contain commas")
        p, label = values[at_path].strip(), values[at_label].strip()
        if not p or not label:
            raise DatasetError(f"{path}:{n}: empty {'path' if not p else 'label'}; every row needs a path and a label")
        rows.append((n, p, label))
    if not rows:
        raise DatasetError(f"{path} lists no images; add rows path,label under the header")
    return rows
