"""Dataset interface: a map-style list of (image reference, label) with class names and templates.

Loaders only *list* samples; decoding happens in ``load_image`` inside DataLoader workers, so an
unreadable file is skipped and counted instead of stopping a run. The evaluator never knows which
dataset it runs: everything it needs is on ``LabeledImages`` and its ``DatasetSpec``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image

from .. import resources
# image decoding lives in lr0fm.images; re-exported here for the loaders
from ..images import (SIXTEEN_BIT_MODES, bytes_loader, composite_on_white, eight_bit,  # noqa: F401
                      open_image_file, to_8bit)
from ..errors import DatasetError  # noqa: F401  (re-exported)



@dataclass(frozen=True)
class DatasetSpec:
    """What a result needs to know about a dataset: its key, split, classes and prompts."""

    key: str
    split: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    description: str = ""
    name: str = ""  # what reports call it (custom data: the folder or file stem, or --name); default: key
    options: dict = field(default_factory=dict)  # build options that change the samples (partition=, seed=)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def label(self) -> str:
        return self.name or self.key


@dataclass
class LabeledImages:
    """A map-style dataset: ``samples[i] = (ref, label)``; ``load(ref)`` decodes one image.

    ``ref`` is anything ``load`` understands (a path, an index into an array, bytes). ``ids``
    are stable per-sample identifiers stored with predictions (defaults to str(ref)).
    """

    spec: DatasetSpec
    samples: list[tuple[Any, int]]
    load: Callable[[Any], Image.Image] = open_image_file
    ids: list[str] | None = None
    root: str | None = None
    # digest of the underlying data when refs are neither files nor bytes (an array file, shards)
    source_digest: str | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def sample_id(self, index: int) -> str:
        return self.ids[index] if self.ids is not None else str(self.samples[index][0])

    def load_image(self, index: int) -> Image.Image:
        ref, _ = self.samples[index]
        return self.load(ref)

    def label(self, index: int) -> int:
        return self.samples[index][1]

    def encoded(self, index: int) -> bytes | None:
        """The sample's encoded bytes, when its loader can give them (for decoding on the device):
        a loader with ``read(ref)``, or a file read by ``open_image_file``; else None."""
        ref, _ = self.samples[index]
        read = getattr(self.load, "read", None)
        if read is not None:
            return read(ref)
        if self.load is open_image_file and isinstance(ref, (str, os.PathLike)):
            with open(ref, "rb") as f:
                return f.read()
        return None

    def subset(self, indices: Sequence[int]) -> "LabeledImages":
        ids = [self.sample_id(i) for i in indices]
        return LabeledImages(self.spec, [self.samples[i] for i in indices], self.load, ids, self.root,
                             self.source_digest)


def read_lines(path: str | os.PathLike) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def packaged_text(dataset_key: str, name: str) -> list[str]:
    """Lines of a versioned data file shipped in lr0fm/datasets/data/<key>/<name>.txt."""
    return [l for l in resources.read_text(f"datasets/data/{dataset_key}/{name}.txt").splitlines() if l.strip()]


def load_classnames_templates(dataset_key: str,
                              classnames: str | Sequence[str] | None = None,
                              templates: str | Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """Class names and templates: user-given (file path or list) or the packaged data files."""
    def resolve(value, name):
        if value is None:
            return packaged_text(dataset_key, name)
        if isinstance(value, (str, os.PathLike)):
            if not Path(value).is_file():
                raise DatasetError(f"{name} file {value} does not exist; give a text file with one entry per line")
            return read_lines(value)
        return list(value)

    names = resolve(classnames, "classnames")
    temps = resolve(templates, "templates")
    bad = [t for t in temps if "{}" not in t and "{c}" not in t]
    if bad:
        raise DatasetError(f"template {bad[0]!r} has no '{{}}' placeholder for the class name; fix the templates file")
    return names, temps


def fill_template(template: str, classname: str) -> str:
    return template.replace("{c}", classname).replace("{}", classname)


DATA_ROOT_ENV = "LR0FM_DATA"


def default_data_root() -> Path:
    return Path(os.environ.get(DATA_ROOT_ENV, Path.home() / ".cache" / "lr0fm" / "data"))


@dataclass(frozen=True)
class DatasetEntry:
    """A registry entry: a key and a builder ``build(root, split, **options) -> LabeledImages``."""

    key: str
    build: Callable[..., LabeledImages]
    description: str = ""
    splits: tuple[str, ...] = ("test",)
    default_split: str = "test"
    offline: bool = False  # available without downloading anything
    num_classes: int | None = None
    options: dict = field(default_factory=dict)
