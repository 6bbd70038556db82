"""Dataset registry: key -> builder. ``get_dataset`` is the only entry the pipeline uses."""
from __future__ import annotations

import difflib
import inspect
import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..checks import check_kinds
from .base import (DATA_ROOT_ENV, DatasetEntry, DatasetError, DatasetSpec, LabeledImages,
                   default_data_root, fill_template)
from .generic import build_csv, build_imagefolder
from .hub import build_hfds, build_wds
from .offline import build_fashion_mnist, build_tuxpaint

REGISTRY: dict[str, DatasetEntry] = {}


def register(entry: DatasetEntry) -> DatasetEntry:
    REGISTRY[entry.key] = entry
    return entry


register(DatasetEntry("tuxpaint", build_tuxpaint, "TuxPaint photo stamps, 11 categories (Debian tuxpaint-stamps-default)",
                      offline=True, num_classes=11))
register(DatasetEntry("fashion_mnist", build_fashion_mnist, "Fashion-MNIST test set (Debian dataset-fashion-mnist)",
                      splits=("test", "train"), offline=True, num_classes=10))
register(DatasetEntry("imagefolder", build_imagefolder, "your images: --data-root DIR/<class>/<image>",
                      splits=("all",), default_split="all"))
register(DatasetEntry("csv", build_csv, "your images: --data-root FILE.csv with columns path,label",
                      splits=("all",), default_split="all"))
# Source prefixes: "wds:DIR_OR_REPO" / "hfds:DIR_OR_REPO"; the source decides which splits exist.
SOURCE_PREFIXES = ("wds", "hfds")
register(DatasetEntry("wds", build_wds, "webdataset shards, CLIP_benchmark layout: wds:DIR or wds:OWNER/REPO (HF hub)",
                      splits=()))
register(DatasetEntry("hfds", build_hfds, "HF datasets image classification: hfds:DIR (save_to_disk) or "
                      "hfds:OWNER/REPO --split S", splits=()))

try:  # the 15 benchmark datasets of the paper (on-disk layouts / torchvision downloads)
    from . import paper as _paper  # noqa: F401  (registers itself)
except ImportError:  # pragma: no cover - only while that module is absent
    pass


def dataset_names() -> list[str]:
    return sorted(REGISTRY)


def unknown_dataset_message(key: str) -> str:
    close = difflib.get_close_matches(key, dataset_names(), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"unknown dataset {key!r}.{hint} Run 'lr0fm datasets' to list them."


# Options that say how to fetch files, not which samples there are: not part of the identity
# (a source folder's path is not; a hub source records its repo itself).
_FETCH_OPTIONS = ("download", "source")


def get_dataset(key: str, root: str | os.PathLike | None = None, split: str | None = None,
                classnames: str | Sequence[str] | None = None,
                templates: str | Sequence[str] | None = None, name: str | None = None, **options) -> LabeledImages:
    """Build a dataset by key. ``root`` falls back to $LR0FM_DATA/<key> for on-disk datasets.

    ``name`` is what reports call it: default the key, or for your own data (imagefolder, csv)
    the folder or file stem."""
    texts = (str, os.PathLike, list, tuple)
    check_kinds("get_dataset", [
        ("key", key, (str,), "a dataset key (lr0fm.list_datasets)"), ("root", root, (str, os.PathLike), "a folder path"),
        ("split", split, (str,), "a split name"), ("classnames", classnames, texts, "a file path or a list of names"),
        ("templates", templates, texts, "a file path or a list of prompt templates"),
        ("name", name, (str,), "text")], optional=("root", "split", "classnames", "templates", "name"))
    prefix, colon, source = key.partition(":")
    if colon and prefix in SOURCE_PREFIXES:
        key, options = prefix, {**options, "source": source}
    entry = REGISTRY.get(key)
    if entry is None:
        raise DatasetError(unknown_dataset_message(key))
    split = split or entry.default_split
    if entry.splits and split not in entry.splits:
        raise DatasetError(f"dataset {key!r} has no split {split!r}; choose one of {', '.join(entry.splits)}")
    if options.get("download") and "download" not in inspect.signature(entry.build).parameters \
            and "download" not in entry.options:
        raise DatasetError(f"dataset {key!r} cannot be downloaded by lr0fm; place its files under --data-root")
    if root is None and not entry.offline and entry.key not in ("imagefolder", "csv", *SOURCE_PREFIXES):
        root = default_data_root() / key
    build_options = {**entry.options, **options}
    data = entry.build(root=root, split=split, classnames=classnames, templates=templates, **build_options)
    if name is None and entry.key in ("imagefolder", "csv") and root is not None:
        name = Path(root).stem
    data.spec = replace(data.spec, name=name or data.spec.name or key,
                        # plus what the builder resolved (a hub repo, detected columns)
                        options={**{k: v for k, v in build_options.items() if k not in _FETCH_OPTIONS},
                                 **data.spec.options})
    return data


__all__ = ["DATA_ROOT_ENV", "DatasetEntry", "DatasetError", "DatasetSpec", "LabeledImages", "REGISTRY",
           "dataset_names", "fill_template", "get_dataset", "register", "unknown_dataset_message"]
