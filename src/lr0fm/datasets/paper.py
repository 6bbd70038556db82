"""The 15 benchmark datasets of LR0.FM, read from their official on-disk layouts.

A loader only lists ``(image path, label)`` pairs from the dataset's own metadata files (split
lists, ``.mat`` files, CoOp split JSONs, class folders). Labels are indices into a packaged
reference list -- ``wnids.txt`` for the ImageNet family, ``folders.txt`` where folder names are
not class names (caltech101, eurosat), ``classnames.txt`` otherwise -- so a user's
``classnames`` file changes the prompts, never the labels. Class names found in the files
(folders, CoOp names, variant names) are matched to the reference by name, and every mismatch
raises instead of silently shifting labels.

Each dataset is described by its card, catalog/datasets/<key>.yaml (title, splits and sizes, how
to get the files, which lister below parses them and with which options, hub copy, class-name
variants); this module holds the listers and turns a card into a registered dataset.

With ``download=True`` (``"hub"``), a dataset whose files are not under ``root`` is read from the
hub copy its card names (a CLIP_benchmark webdataset or an HF ``datasets`` repo, fetched into the
HF cache): the copy's images and labels, mapped by class name onto lr0fm's packaged class list
(through the card's ``label_aliases`` where the copy spells a class otherwise), under the
dataset's own key, class names and templates. The copy, its split
and whether it holds the paper's images are recorded in ``DatasetSpec.options`` (so in the
result identity, and ``compare`` flags a copy that is not the paper's split); with no hub copy the
error says what to download where. ``download="torchvision"`` instead calls torchvision's dataset
class, where it can fetch the original files, only to put them under ``root``; the parsing stays
here. Roots accept both the archive's own layout and the one torchvision's download leaves
(e.g. ``<root>/dtd/labels`` and ``<root>/dtd/dtd/labels``).
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..catalog import DATASET_CARDS, dataset_cards, dataset_sources
from . import register
from .base import (DatasetEntry, DatasetError, DatasetSpec, LabeledImages, default_data_root,
                   load_classnames_templates, packaged_text)
from .generic import IMAGE_SUFFIXES
from .hub import build_hfds, build_wds

COOP_SPLITS = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"
# where download= fetches a dataset whose files are not under its root (True = "hub")
DOWNLOAD_FROM = ("hub", "torchvision")
HUB_BUILDERS = {"wds": build_wds, "hfds": build_hfds}

log = logging.getLogger("lr0fm")


class IncompleteDatasetWarning(UserWarning):
    """The split lists a different number of images than the paper's: results are not comparable."""


class MissingFilesError(DatasetError):
    """The dataset's files are not under its root (download=True reads its hub copy instead)."""


@dataclass(frozen=True)
class Split:
    what: str  # how the split is defined, recorded in DatasetSpec.description
    size: int  # image count of the official split


@dataclass(frozen=True)
class PaperDataset:
    """A benchmark dataset as its card (catalog/datasets/<key>.yaml) describes it."""

    key: str
    title: str
    lister: Callable[..., list[tuple[str, int]]]  # lister(files, split, **options), its card's lister_args bound
    options: dict  # the options a user may change, with the paper's values
    splits: dict[str, Split]
    get: str  # how to obtain the files; "{root}" is the dataset root
    reference_file: tuple[str, str]  # (data key, file) of the packaged list giving the label order
    torchvision: tuple[str, dict] | None  # (torchvision.datasets class, kwargs) for download="torchvision"
    default_split: str
    label_aliases: dict[str, str | None]  # a hub copy's spelling -> lr0fm's class name (None: not a class)


# ---------------------------------------------------------------------------------------------
# Finding files and matching class names


class Files:
    """One dataset root: finds files among alternative layouts, fetches with torchvision when
    asked, and turns a miss into a one-line error saying which file to place where."""

    def __init__(self, dataset: PaperDataset, root: Path, download: bool, hub: str | None = None):
        self.dataset, self.key, self.root, self.download = dataset, dataset.key, root, download
        self.hub = hub  # the hub copy download=True reads instead, offered when files are missing
        self.reference = packaged_text(*dataset.reference_file)
        self._downloaded = False

    def missing(self, path: Path, fetchable: bool = True) -> MissingFilesError:
        hint = ""
        if self.hub and not self.download:
            hint = f", or pass download=True (--download) to read its hub copy {self.hub}"
        elif fetchable and self.dataset.torchvision and not self.download:
            hint = ", or pass download=True"
        return MissingFilesError(f"{self.key}: {path} not found; {self.dataset.get.format(root=self.root)}{hint}")

    def find(self, *candidates: str, test: Callable[[Path], bool] = Path.exists, fetch: bool = True,
             shown: str | None = None) -> Path:
        """The first ``root/<candidate>`` passing ``test``. With download=True a miss fetches the
        dataset with torchvision once (``fetch=False``: files torchvision does not provide)."""
        for attempt in range(2):
            for c in candidates:
                path = self.root / c
                if test(path):
                    return path
            if attempt or not (fetch and self.download and self.dataset.torchvision and not self._downloaded):
                break
            self._fetch()
        raise self.missing(self.root / (shown or candidates[0]), fetchable=fetch)

    def find_class_folders(self, *candidates: str, folders: Sequence[str]) -> Path:
        """The first candidate directory holding at least one of the expected class folders."""
        return self.find(*candidates, test=partial(has_class_folders, known=set(folders)),
                         shown=f"{candidates[0]}/<{folders[0]}, ...>")

    def _fetch(self) -> None:
        import torchvision.datasets as tvd
        name, kwargs = self.dataset.torchvision
        self._downloaded = True
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            getattr(tvd, name)(str(self.root), download=True, **kwargs)
        except Exception as e:  # network, checksum, disk: say so in one line
            raise DatasetError(f"{self.key}: torchvision {name} download into {self.root} failed "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
                               f"{self.dataset.get.format(root=self.root)}") from None

    def read_lines(self, path: Path) -> list[str]:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]

    def matcher(self) -> "ClassMatcher":
        return ClassMatcher(self.key, self.reference)


def _squashed(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _word_set(name: str) -> str:
    return " ".join(sorted(re.findall(r"[a-z0-9]+", name.lower())))


class ClassMatcher:
    """Maps the class names written in a dataset's files to reference labels.

    Names are compared with case, spaces and punctuation removed ("Hammer_Throw" = "Hammer Throw",
    "polka-dotted" = "polka dotted"), then as word sets ("2012 Acura RL Sedan", CoOp's year-first
    car names, = "Acura RL Sedan 2012"). A key shared by two reference names is never used.
    """

    KEYS = (_squashed, _word_set)

    def __init__(self, key: str, reference: Sequence[str]):
        self.key = key
        self.tables = []
        for keyfn in self.KEYS:
            keys = [keyfn(n) for n in reference]
            self.tables.append({k: i for i, k in enumerate(keys) if keys.count(k) == 1})
        self.cache: dict[str, int] = {}

    def __call__(self, name: str) -> int:
        if name not in self.cache:
            for keyfn, table in zip(self.KEYS, self.tables):
                if keyfn(name) in table:
                    self.cache[name] = table[keyfn(name)]
                    break
            else:
                raise DatasetError(f"{self.key}: class {name!r} in the dataset files matches no class of "
                                   f"lr0fm's {self.key} class list; these files do not belong to {self.key}")
        return self.cache[name]


def has_class_folders(path: Path, known: set[str]) -> bool:
    return path.is_dir() and any(e.is_dir() and e.name in known for e in os.scandir(path))


def _images(directory: str) -> list[str]:
    return sorted(f for f in os.listdir(directory) if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES)


def scan_class_folders(key: str, directory: Path, folders: Sequence[str],
                       ignore: Sequence[str] = ()) -> dict[int, list[str]]:
    """``directory/<folder>/<image>`` -> {label: sorted image paths}; label = index in ``folders``.

    A folder that is not a class raises: it means the root points at the wrong dataset."""
    label_of = {f: i for i, f in enumerate(folders)}
    found: dict[int, list[str]] = {}
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith(".") or entry.name in ignore:
            continue
        if entry.name not in label_of:
            raise DatasetError(f"{key}: folder {entry.path} is not one of the {len(folders)} {key} classes; "
                               f"point the root at the {key} files or remove that folder")
        found[label_of[entry.name]] = [os.path.join(entry.path, f) for f in _images(entry.path)]
    return found


def _flatten(per_class: dict[int, list[str]]) -> list[tuple[str, int]]:
    return [(p, label) for label in sorted(per_class) for p in per_class[label]]


def _consistent(key: str, source: Path, pairs: Sequence[tuple[int, int]]) -> None:
    """The file's own labels must map one-to-one onto reference labels (else the file is corrupt
    or belongs to another class list)."""
    forward: dict[int, int] = {}
    backward: dict[int, int] = {}
    for theirs, ours in pairs:
        if forward.setdefault(theirs, ours) != ours or backward.setdefault(ours, theirs) != theirs:
            raise DatasetError(f"{key}: {source} gives label {theirs} to two different classes (or one class "
                               f"two labels); the file is corrupt or from another version of {key}")


# ---------------------------------------------------------------------------------------------
# Listers: one per metadata format


def list_wnid_folders(files: Files, split: str, subdirs: Sequence[str]) -> list[tuple[str, int]]:
    """ImageNet-A/-R/-Sketch: ``<subdir>/<wnid>/<image>``, labels in ``wnids.txt`` order."""
    directory = files.find_class_folders(*subdirs, ".", folders=files.reference)
    return _flatten(scan_class_folders(files.key, directory, files.reference))


def list_imagenet_val(files: Files, split: str) -> list[tuple[str, int]]:
    """ILSVRC-2012 validation: ``val/<wnid>/*.JPEG`` or a flat ``val/`` with a label file:
    Kaggle's ``LOC_val_solution.csv`` or the devkit's ground truth + ``meta.mat``."""
    wnids = files.reference
    subdirs = ("val", "ILSVRC/Data/CLS-LOC/val", "ILSVRC2012_img_val")
    for sub in (*subdirs, "."):
        if has_class_folders(files.root / sub, set(wnids)):
            return _flatten(scan_class_folders(files.key, files.root / sub, wnids))
    directory = next((files.root / s for s in subdirs if (files.root / s).is_dir()), None)
    if directory is None:
        raise files.missing(files.root / "val" / f"<{wnids[0]}, ...>")
    label = {w: i for i, w in enumerate(wnids)}
    kaggle = files.root / "LOC_val_solution.csv"
    devkit = files.root / "ILSVRC2012_devkit_t12" / "data"
    if kaggle.is_file():
        with open(kaggle, newline="", encoding="utf-8") as f:
            rows = sorted((r["ImageId"], r["PredictionString"].split()[0]) for r in csv.DictReader(f))
        unknown = next((w for _, w in rows if w not in label), None)
        if unknown:
            raise DatasetError(f"{files.key}: {kaggle} names {unknown!r}, which is not an ImageNet-1k class")
        return [(str(directory / f"{image}.JPEG"), label[w]) for image, w in rows]
    truth = devkit / "ILSVRC2012_validation_ground_truth.txt"
    if truth.is_file():
        from scipy.io import loadmat
        meta = devkit / "meta.mat"
        if not meta.is_file():
            raise files.missing(meta)
        # ILSVRC2012_ID numbers classes in the devkit's own order; meta.mat maps them to WNIDs.
        synsets = loadmat(meta, squeeze_me=True)["synsets"]
        wnid_of = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
        ids = [int(x) for x in files.read_lines(truth)]
        bad = next((i for i in ids if wnid_of.get(i) not in label), None)
        if bad is not None:
            raise DatasetError(f"{files.key}: {truth} uses class id {bad}, which {meta} does not map to an "
                               "ImageNet-1k WNID")
        return [(str(directory / f"ILSVRC2012_val_{n:08d}.JPEG"), label[wnid_of[i]])
                for n, i in enumerate(ids, start=1)]
    raise DatasetError(f"{files.key}: {directory} has no <wnid> class folders and neither {kaggle} nor {truth} "
                       "exists; sort the images into val/<wnid>/ (e.g. with valprep.sh) or add one of those "
                       "label files")


def list_index_folders(files: Files, split: str, subdirs: Sequence[str]) -> list[tuple[str, int]]:
    """ImageNetV2: ``<subdir>/<class index>/<image>`` (folder "7" = ImageNet label 7)."""
    folders = [str(i) for i in range(len(files.reference))]
    directory = files.find_class_folders(*subdirs, ".", folders=folders)
    return _flatten(scan_class_folders(files.key, directory, folders))


def list_caltech101(files: Files, split: str, seed: int, train_per_class: int) -> list[tuple[str, int]]:
    """``101_ObjectCategories/<folder>/*.jpg`` without ``BACKGROUND_Google``; per class,
    ``train_per_class`` images drawn with ``seed`` are held out as the training set and the rest
    is the test set. The draw depends only on (seed, class) and the sorted file names."""
    directory = files.find_class_folders("101_ObjectCategories", "caltech101/101_ObjectCategories",
                                         folders=files.reference)
    samples = []
    for label, paths in sorted(scan_class_folders(files.key, directory, files.reference,
                                                  ignore=("BACKGROUND_Google",)).items()):
        if len(paths) <= train_per_class:
            raise DatasetError(f"{files.key}: {os.path.dirname(paths[0]) if paths else directory} has "
                               f"{len(paths)} images, not more than the {train_per_class} training images "
                               "to hold out; the copy is incomplete")
        train = set(np.random.default_rng([seed, label]).choice(len(paths), train_per_class, replace=False).tolist())
        samples += [(p, label) for i, p in enumerate(paths) if i not in train]
    return samples


def list_dtd(files: Files, split: str, partition: int) -> list[tuple[str, int]]:
    """``labels/test<partition>.txt`` lines ``<class>/<file>.jpg`` -> ``images/<class>/<file>.jpg``."""
    name = f"labels/test{partition}.txt"
    split_file = files.find(f"dtd/{name}", f"dtd/dtd/{name}", name, test=Path.is_file)
    base = split_file.parent.parent
    match = files.matcher()
    return [(str(base / "images" / line), match(line.split("/")[0])) for line in files.read_lines(split_file)]


def list_food101(files: Files, split: str) -> list[tuple[str, int]]:
    """``meta/test.txt`` lines ``<class>/<id>`` -> ``images/<class>/<id>.jpg``."""
    split_file = files.find("food-101/meta/test.txt", "meta/test.txt", test=Path.is_file)
    base = split_file.parent.parent
    match = files.matcher()
    return [(str(base / "images" / f"{line}.jpg"), match(line.split("/")[0])) for line in files.read_lines(split_file)]


def list_sun397(files: Files, split: str, partition: int) -> list[tuple[str, int]]:
    """``Testing_<NN>.txt`` lines ``/<letter>/<class path>/<file>.jpg`` under ``SUN397/``; the class
    path (``jail/indoor``) names the class."""
    name = f"Testing_{partition:02d}.txt"
    split_file = files.find(f"Partitions/{name}", f"SUN397/Partitions/{name}", name, f"SUN397/{name}",
                            test=Path.is_file, fetch=False)  # torchvision does not fetch the partitions
    lines = files.read_lines(split_file)
    first = lines[0].strip("/") if lines else ""
    images = files.find("SUN397", ".", test=lambda p: (p / first).is_file(), shown=f"SUN397/{first}")
    match = files.matcher()
    samples = []
    for line in lines:
        parts = line.strip("/").split("/")  # letter, class path..., file
        samples.append((str(images.joinpath(*parts)), match(" ".join(parts[1:-1]))))
    return samples


def list_fgvc_aircraft(files: Files, split: str) -> list[tuple[str, int]]:
    """``data/images_variant_test.txt`` lines ``<id> <variant name>`` -> ``data/images/<id>.jpg``."""
    split_file = files.find("fgvc-aircraft-2013b/data/images_variant_test.txt", "data/images_variant_test.txt",
                            test=Path.is_file)
    data = split_file.parent
    match = files.matcher()
    variants = data / "variants.txt"
    if variants.is_file() and [match(v) for v in files.read_lines(variants)] != list(range(len(files.reference))):
        raise DatasetError(f"{files.key}: the class order of {variants} differs from lr0fm's class list")
    samples = []
    for line in files.read_lines(split_file):
        image, variant = line.split(" ", 1)
        samples.append((str(data / "images" / f"{image}.jpg"), match(variant)))
    return samples


def list_pets(files: Files, split: str) -> list[tuple[str, int]]:
    """``annotations/test.txt`` lines ``<Breed_name>_<n> <class id> <species> <breed id>``;
    the 1-based class id must agree with the breed name."""
    split_file = files.find("oxford-iiit-pet/annotations/test.txt", "annotations/test.txt", test=Path.is_file)
    base = split_file.parent.parent
    match = files.matcher()
    samples = []
    for line in files.read_lines(split_file):
        image, class_id = line.split()[:2]
        label = match(image.rsplit("_", 1)[0])
        if label != int(class_id) - 1:
            raise DatasetError(f"{files.key}: {split_file} gives {image} class id {class_id}, but lr0fm's class "
                               f"list puts {image.rsplit('_', 1)[0]!r} at position {label + 1}")
        samples.append((str(base / "images" / f"{image}.jpg"), label))
    return samples


def list_flowers(files: Files, split: str) -> list[tuple[str, int]]:
    """``setid.mat`` ``tstid`` (1-based image numbers) + ``imagelabels.mat`` (1-based labels)
    -> ``jpg/image_<nnnnn>.jpg``."""
    from scipy.io import loadmat
    setid = files.find("setid.mat", "flowers-102/setid.mat", test=Path.is_file)
    base = setid.parent
    labels_file = base / "imagelabels.mat"
    if not labels_file.is_file():
        raise files.missing(labels_file)
    test_ids = np.atleast_1d(loadmat(setid, squeeze_me=True)["tstid"]).astype(int)
    labels = np.atleast_1d(loadmat(labels_file, squeeze_me=True)["labels"]).astype(int) - 1
    if len(test_ids) and (test_ids.min() < 1 or test_ids.max() > len(labels)):
        raise DatasetError(f"{files.key}: {setid} lists image numbers outside 1..{len(labels)} of {labels_file}")
    if labels.min() < 0 or labels.max() >= len(files.reference):
        raise DatasetError(f"{files.key}: {labels_file} has labels outside 1..{len(files.reference)}")
    return [(str(base / "jpg" / f"image_{i:05d}.jpg"), int(labels[i - 1])) for i in test_ids]


def list_coop(files: Files, split: str, json_name: str, subdir: str, image_dir: str,
              by_folder: bool) -> list[tuple[str, int]]:
    """A CoOp split file ``{"train"|"val"|"test": [[relative path, label, class name], ...]}``
    whose paths are relative to ``<CoOp dataset dir>/<image_dir>``.

    Labels come from the class name (or, with ``by_folder``, the path's first folder looked up in
    ``folders.txt``); CoOp's own label must map one-to-one onto them."""
    json_file = files.find(json_name, f"{subdir}/{json_name}", test=Path.is_file, fetch=False)
    near_json = os.path.relpath(json_file.parent / image_dir, files.root)
    images = files.find(near_json, image_dir, f"{subdir}/{image_dir}", test=Path.is_dir)
    try:
        items = [(str(p), int(l), str(n)) for p, l, n in json.loads(json_file.read_text(encoding="utf-8"))[split]]
    except (ValueError, KeyError, TypeError):
        raise DatasetError(f"{files.key}: {json_file} is not a CoOp split file with a {split!r} list; "
                           f"download it again from {COOP_SPLITS}") from None
    match, folder_label = files.matcher(), {f: i for i, f in enumerate(files.reference)}
    samples, pairs = [], []
    for path, coop_label, name in items:
        if by_folder:
            folder = path.split("/")[0]
            if folder not in folder_label:
                raise DatasetError(f"{files.key}: {json_file} lists {path} in folder {folder!r}, which is not "
                                   f"a {files.key} class folder")
            label = folder_label[folder]
        else:
            label = match(name)
        samples.append((str(images / path), label))
        pairs.append((coop_label, label))
    _consistent(files.key, json_file, pairs)
    return samples


# ---------------------------------------------------------------------------------------------
# The benchmark: each card names its lister here

LISTERS: dict[str, Callable[..., list[tuple[str, int]]]] = {
    "imagenet_val": list_imagenet_val, "wnid_folders": list_wnid_folders, "index_folders": list_index_folders,
    "caltech101": list_caltech101, "dtd": list_dtd, "food101": list_food101, "sun397": list_sun397,
    "fgvc_aircraft": list_fgvc_aircraft, "pets": list_pets, "flowers": list_flowers, "coop": list_coop,
}


def dataset_from_card(card: dict) -> PaperDataset:
    key = card["key"]
    if card["lister"] not in LISTERS:
        raise DatasetError(f"{DATASET_CARDS}/{key}.yaml: lister {card['lister']!r} is not one of "
                           f"{', '.join(LISTERS)} (lr0fm.datasets.paper.LISTERS)")
    data, _, file = card["label_order"].partition("/")
    tv = card.get("torchvision")
    return PaperDataset(
        key=key, title=card["title"], lister=partial(LISTERS[card["lister"]], **card.get("lister_args", {})),
        options=dict(card.get("options", {})),
        splits={name: Split(s["what"], int(s["images"])) for name, s in card["splits"].items()},
        get=card["get"], reference_file=(data, file),
        torchvision=(tv["class"], dict(tv.get("kwargs", {}))) if tv else None,
        default_split=card["default_split"], label_aliases=dict(card.get("label_aliases") or {}))


DATASETS = [dataset_from_card(card) for card in dataset_cards().values()]


# ---------------------------------------------------------------------------------------------
# Hub copies (each card's ``hub``)

MATCHES_PAPER = {True: "the paper's images", False: "not the paper's images",
                 None: "not established to be the paper's images"}


def hub_copy(key: str) -> tuple[str, dict] | None:
    """(``FORMAT:REPO``, catalog entry) of a benchmark dataset's hub copy, or None where the
    catalog knows none (then its ``get`` says what to download)."""
    entry = dataset_sources().get(key) or {}
    return (f"{entry['format']}:{entry['repo']}", entry) if entry.get("format") and entry.get("repo") else None


def _download_from(key: str, download) -> str | None:
    if download is None or download is False:
        return None
    if download is True:
        return "hub"
    if download in DOWNLOAD_FROM:
        return download
    raise DatasetError(f"{key}: download={download!r}; use true (its hub copy), 'hub' or 'torchvision'")


def _hub_labels(key: str, hub: str, theirs: Sequence[str], ours: Sequence[str], aliases: dict[str, str | None],
                instead: str) -> list[int | None]:
    """Hub label -> lr0fm label (None: a class the card's ``label_aliases`` leaves out). Each hub
    name is first renamed by the aliases (spellings compared as ClassMatcher compares names); then
    the same names in the same order map one to one, or else every hub class name is matched
    (ClassMatcher's normalisation) to a different one of ours."""
    alias = {_squashed(spelling): name for spelling, name in aliases.items()}
    renamed = [alias.get(_squashed(n), n) for n in theirs]
    kept = [n for n in renamed if n is not None]
    if len(kept) != len(ours):
        left_out = f" (besides {len(theirs) - len(kept)} left out)" if len(kept) != len(theirs) else ""
        raise DatasetError(f"{key}: its hub copy {hub} has {len(kept)} classes{left_out}, lr0fm's {key} has "
                           f"{len(ours)}, so the copy cannot stand in for it; instead, {instead}")
    if all(_squashed(a) == _squashed(b) for a, b in zip(kept, ours)):
        order = iter(range(len(ours)))
        return [None if n is None else next(order) for n in renamed]
    match, labels = ClassMatcher(key, ours), []
    for hub_name, name in zip(theirs, renamed):
        try:
            labels.append(None if name is None else match(name))
        except DatasetError:
            raise DatasetError(f"{key}: class {hub_name!r} of its hub copy {hub} matches none of lr0fm's {key} class "
                               f"names (one each) nor a known spelling of one ({DATASET_CARDS}/{key}.yaml "
                               f"label_aliases), so its labels cannot be mapped; instead, {instead}") from None
    twice = next((l for l in labels if l is not None and labels.count(l) > 1), None)
    if twice is not None:
        raise DatasetError(f"{key}: two classes of its hub copy {hub} match lr0fm's class {ours[twice]!r}, so its "
                           f"labels cannot be mapped; instead, {instead}")
    return labels


def build_from_hub(dataset: PaperDataset, root: Path, split: str, classnames=None, templates=None,
                   options: dict | None = None) -> LabeledImages:
    """``dataset`` read from its hub copy (download=True with no files under ``root``): the copy's
    images and labels under lr0fm's key, class names and templates. The copy, its split and
    whether it holds the paper's images go into the spec's options, i.e. the result identity."""
    key, found = dataset.key, hub_copy(dataset.key)
    instead = dataset.get.format(root=root)
    if found is None:
        raise DatasetError(f"{key}: no files under {root}, and no hub copy of it is known to download "
                           f"({DATASET_CARDS}/{key}.yaml): {instead}")
    hub, entry = found
    if options:
        raise DatasetError(f"{key}: option {sorted(options)[0]!r} applies to files under {root}, not to its hub copy "
                           f"{hub}; drop it, or place the files: {instead}")
    paper_split = entry.get("paper_split") or dataset.default_split
    if split != paper_split:
        raise DatasetError(f"{key}: its hub copy {hub} stands in for the paper's {paper_split} split only; for the "
                           f"{split} split, {instead}")
    try:
        copy = HUB_BUILDERS[entry["format"]](source=entry["repo"], split=entry["split"])
    except DatasetError as e:
        raise DatasetError(f"{key}: no files under {root}, and its hub copy cannot be read: {e}") from None
    names, temps = load_classnames_templates(key, classnames, templates)
    reference = packaged_text(key, "classnames")  # the human names hub copies ship, in label order
    if len(names) != len(reference):
        raise DatasetError(f"{key}: {len(names)} class names given for {len(reference)} classes; give "
                           f"one name per line in the order of lr0fm's {key} classnames.txt")
    label_of = _hub_labels(key, hub, copy.spec.classnames, reference, dataset.label_aliases, instead)
    kept = [i for i, (_, label) in enumerate(copy.samples) if label_of[label] is not None]
    samples = [(copy.samples[i][0], label_of[copy.samples[i][1]]) for i in kept]
    ids = [copy.ids[i] for i in kept] if copy.ids is not None else None
    left_out = [n for n, label in zip(copy.spec.classnames, label_of) if label is None]
    info, matches = dataset.splits[split], entry.get("matches_paper")
    (log.info if matches is True else log.warning)(
        "%s: no files under %s; reading its hub copy %s (%s split: %s)", key, root, hub, entry["split"],
        MATCHES_PAPER[matches])
    if len(samples) != info.size:
        warnings.warn(f"{key}: its hub copy {hub} has {len(samples):,} images, the paper's {split} split has "
                      f"{info.size:,}; results will not be comparable", IncompleteDatasetWarning, stacklevel=3)
    description = (f"{dataset.title}, hub copy {hub} ({entry['split']} split, {MATCHES_PAPER[matches]}) for the "
                   f"paper's {info.what}: {len(samples):,} images, {len(names)} classes"
                   + (f" (its class {', '.join(map(repr, left_out))} left out)" if left_out else ""))
    spec = DatasetSpec(key, split, tuple(names), tuple(temps), description=description,
                       options={"source": hub, "hub_split": entry["split"], "matches_paper": matches})
    return LabeledImages(spec, samples, load=copy.load, ids=ids, root=copy.root,
                         source_digest=copy.source_digest)


def build(dataset: PaperDataset, root: str | os.PathLike | None = None, split: str | None = None,
          classnames: str | Sequence[str] | None = None, templates: str | Sequence[str] | None = None,
          download: bool | str = False, **options) -> LabeledImages:
    """The dataset's split from its files under ``root``; where they are missing, with
    ``download=True`` (``"hub"``) from its hub copy, with ``download="torchvision"`` fetched there
    by torchvision (where it can)."""
    fetch = _download_from(dataset.key, download)
    split = split or dataset.default_split
    if split not in dataset.splits:
        raise DatasetError(f"dataset {dataset.key!r} has no split {split!r}; choose one of {', '.join(dataset.splits)}")
    root = Path(root) if root is not None else default_data_root() / dataset.key
    unknown = sorted(set(options) - set(dataset.options))
    if unknown:
        raise DatasetError(f"{dataset.key}: unknown option {unknown[0]!r}; {dataset.key} takes "
                           f"{', '.join(dataset.options) or 'no options besides download'}")
    hub = hub_copy(dataset.key)
    offered = f"{hub[0]} ({MATCHES_PAPER[hub[1].get('matches_paper')]})" if hub else None
    # torchvision when asked, or for download=True where no hub copy exists
    files = Files(dataset, root, fetch == "torchvision" or (fetch == "hub" and hub is None), hub=offered)
    try:
        samples = dataset.lister(files, split, **{**dataset.options, **options})
    except MissingFilesError:
        if fetch != "hub":
            raise
        return build_from_hub(dataset, root, split, classnames, templates, options)
    if not samples:
        raise DatasetError(f"{dataset.key}: the {split} split under {root} lists no images; check the files")
    first = Path(samples[0][0])
    if not first.is_file():  # a listed image is missing: images unpacked elsewhere
        raise DatasetError(f"{dataset.key}: image {first} (listed in the split files) not found; unpack the "
                           f"images so that it exists")
    names, temps = load_classnames_templates(dataset.key, classnames, templates)
    if len(names) != len(files.reference):
        raise DatasetError(f"{dataset.key}: {len(names)} class names given for {len(files.reference)} classes; give "
                           f"one name per line in the order of lr0fm's {dataset.key} classnames.txt")
    info = dataset.splits[split]
    if len(samples) != info.size:
        warnings.warn(f"{dataset.key}: {len(samples):,} images found under {root}, the paper's {split} split has "
                      f"{info.size:,}; results will not be comparable", IncompleteDatasetWarning, stacklevel=2)
    description = f"{dataset.title}, {info.what}: {info.size:,} images, {len(names)} classes"
    if options:  # e.g. another caltech101 seed: the split differs from the paper's, say so
        description += " [" + ", ".join(f"{k}={v}" for k, v in sorted(options.items())) + "]"
    spec = DatasetSpec(dataset.key, split, tuple(names), tuple(temps), description=description)
    ids = [os.path.relpath(p, root) for p, _ in samples]
    return LabeledImages(spec, samples, ids=ids, root=str(root))


for _d in DATASETS:
    register(DatasetEntry(_d.key, partial(build, _d), f"{_d.title}, {_d.splits[_d.default_split].what} "
                          f"({_d.splits[_d.default_split].size:,} images)",
                          splits=tuple(_d.splits), default_split=_d.default_split,
                          num_classes=len(packaged_text(*_d.reference_file))))
