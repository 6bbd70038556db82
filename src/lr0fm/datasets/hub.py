"""Datasets in the hub's formats, from a local folder or a Hugging Face hub repo.

* ``wds:DIR_OR_REPO``  -- CLIP_benchmark's webdataset layout: ``<split>/nshards.txt``,
  ``<split>/0.tar, 1.tar, ...``, ``classnames.txt``, ``zeroshot_classification_templates.txt``;
  a sample is an image under ``webp``, ``png``, ``jpg`` or ``jpeg`` plus its class index under
  ``cls`` (webdataset's key rule: the member name up to the first dot of its base name).
* ``hfds:DIR_OR_REPO`` -- an HF ``datasets`` image-classification split: a folder written by
  ``save_to_disk`` (or any folder ``datasets.load_dataset`` reads), or a hub dataset repo.

Both stay map-style with flat memory: the shards are indexed once (member offsets and labels,
headers only) and a worker reads one member's bytes by offset; an HF split stays a memory-mapped
Arrow table whose image column is read as bytes. Decoding is lr0fm's own (``bytes_loader``), in
the DataLoader workers, so an unreadable image is skipped and counted like an unreadable file.
Hub repos are fetched into the HF cache (``huggingface_hub`` / ``datasets``); offline with
nothing cached is one error line saying what to download.

Identity: a sample is its source's content digest plus its reference -- the shards' sha256
(wds) or the Arrow files' sha256 (hfds) -- so moving a folder keeps its results. Class names and
templates are identified by the spec, as for every dataset.
"""
from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path
from typing import Sequence

from ..extras import require
from ..identity import digest
from .base import DatasetError, DatasetSpec, LabeledImages, bytes_loader
from .generic import _classnames_file, _templates, _text_lines

# In CLIP_benchmark's order of preference (its ``to_tuple(["webp", "png", "jpg", "jpeg"], "cls")``).
WDS_IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")
WDS_CLASSNAMES = "classnames.txt"
WDS_TEMPLATES = "zeroshot_classification_templates.txt"
# Candidate id columns of an HF split (used when their values are unique); else the row index.
HFDS_ID_COLUMNS = ("id", "image_id", "__key__")

_WDS_META = r"__[^/]*__($|/)"  # webdataset's metadata members (tar_file_iterator's skip_meta)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _resolve_source(prefix: str, source: str | os.PathLike | None) -> tuple[Path | None, str | None]:
    """(local folder, None) or (None, hub repo id) for what followed ``prefix:``."""
    if not source:
        raise DatasetError(f"dataset {prefix!r} needs a source: --dataset {prefix}:DIR or {prefix}:OWNER/REPO")
    path = Path(source).expanduser()
    if path.is_dir():
        return path, None
    if _REPO_ID.match(str(source)):
        return None, str(source)
    raise DatasetError(f"{prefix} source {source} is neither a folder nor a hub repo id (OWNER/NAME); "
                       "check the path")


def _hub_error(repo: str, what: str, fetch: str, error: Exception) -> DatasetError:
    """One line for a hub repo that could not be fetched: why, and how to get it."""
    from huggingface_hub import constants

    first = str(error).splitlines()[0][:160] if str(error) else ""
    why = ("is not in the HF cache and HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE
           else f"could not be fetched ({type(error).__name__}: {first})")
    return DatasetError(f"{what} {repo} {why} (nor is it a folder here); {fetch}")


# -- webdataset shards (CLIP_benchmark layout) -----------------------------------------------
class TarMemberLoader:
    """Picklable loader of ``(shard, offset, size)`` refs: reads the member's bytes with
    ``os.pread`` (no shared file position, so forked workers may share a descriptor) and decodes
    them. Each process opens a shard on first use and keeps it open."""

    def __init__(self, shards: Sequence[str]):
        self.shards = list(shards)
        self._fds: dict[int, int] = {}

    def __getstate__(self):
        return {"shards": self.shards}  # descriptors do not travel

    def __setstate__(self, state):
        self.shards, self._fds = state["shards"], {}

    def read(self, ref: tuple[int, int, int]) -> bytes:
        shard, offset, size = ref
        if offset < 0:
            raise OSError(f"sample in {self.shards[shard]} has no image member")
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._fds[shard] = os.open(self.shards[shard], os.O_RDONLY)
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise OSError(f"{self.shards[shard]} ends inside a member (truncated shard)")
        return data

    def __call__(self, ref: tuple[int, int, int]):
        return bytes_loader(self.read(ref))

    def __del__(self):
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass


def _wds_shards(split_dir: Path) -> list[Path]:
    """The split's shards in order: ``0.tar .. n-1.tar`` as nshards.txt says (CLIP_benchmark), else
    the ``.tar`` files present in numeric order."""
    count_file = split_dir / "nshards.txt"
    if count_file.is_file():
        text = count_file.read_text().strip()
        if not text.isdigit():
            raise DatasetError(f"{count_file} should hold the number of shards, not {text[:40]!r}")
        shards = [split_dir / f"{i}.tar" for i in range(int(text))]
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise DatasetError(f"{split_dir} lacks {len(missing)} of the {len(shards)} shards nshards.txt lists "
                               f"(first: {missing[0]}); download them again")
        return shards
    shards = sorted(split_dir.glob("*.tar"), key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit()
                                                            else 0, p.name))
    if not shards:
        raise DatasetError(f"{split_dir} has no nshards.txt and no .tar shards")
    return shards


def _index_shard(path: Path, shard: int, samples: list, ids: list) -> None:
    """Append (ref, label) and key of every sample of one shard, reading headers and .cls members
    only (webdataset's grouping: a sample is the run of consecutive members sharing a key)."""
    from webdataset.tariterators import base_plus_ext

    size = path.stat().st_size

    def finish(key, members):
        if key is None or not members:
            return
        if "cls" not in members:
            if any(ext in members for ext in WDS_IMAGE_EXTENSIONS):
                raise DatasetError(f"{path}: sample {key!r} has an image but no .cls class index; "
                                   "CLIP_benchmark shards pair each image with its label")
            return  # not an image-classification sample (metadata, captions)
        text = members["cls"]
        if not text.strip().isdigit():
            raise DatasetError(f"{path}: sample {key!r} has .cls {text[:20]!r}, not a class index")
        image = next((members[ext] for ext in WDS_IMAGE_EXTENSIONS if ext in members), (-1, 0))
        samples.append(((shard, *image), int(text)))
        ids.append(key)

    first, end = len(samples), 0  # end: where the archive's last member ends (512-byte blocks)
    try:
        with tarfile.open(path, "r:") as tar:  # uncompressed and seekable: data blocks are skipped
            key, members = None, {}
            while (member := tar.next()) is not None:
                tar.members = []  # keep no TarInfo: memory stays flat however large the shard
                end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                if not member.isfile():
                    continue
                prefix, ext = base_plus_ext(member.name)
                if prefix is None or re.match(_WDS_META, member.name):
                    continue  # webdataset skips these too
                if prefix != key:
                    finish(key, members)
                    key, members = prefix, {}
                ext = ext.lower()
                if member.offset_data + member.size > size:
                    raise DatasetError(f"{path} is truncated (member {member.name} ends past the end of the "
                                       "file); download it again")
                if ext == "cls":
                    members[ext] = tar.extractfile(member).read().decode("utf-8", "replace")
                elif ext in WDS_IMAGE_EXTENSIONS:
                    members[ext] = (member.offset_data, member.size)
            finish(key, members)
    except (tarfile.TarError, EOFError) as e:
        raise DatasetError(f"{path} is not a readable tar shard ({e}); download it again") from None
    # tarfile reads a tar cut at a member boundary as a shorter, whole one: a tar ends with two
    # zero blocks, and a shard without them was cut short (the samples after the cut are missing)
    with open(path, "rb") as f:
        f.seek(end)
        closing = f.read(2 * tarfile.BLOCKSIZE)
    if closing != bytes(2 * tarfile.BLOCKSIZE):
        raise DatasetError(f"{path} is truncated: it ends after {len(samples) - first} samples without the tar "
                           "end-of-archive blocks, so the rest of the shard is missing; download it again")


def _fetch_wds(repo: str, split: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    patterns = [f"{split}/*", WDS_CLASSNAMES, WDS_TEMPLATES]
    try:
        return Path(snapshot_download(repo, repo_type="dataset", allow_patterns=patterns))
    except (OSError, ValueError, HfHubHTTPError) as e:
        fetch = f"download it with network: hf download {repo} --repo-type dataset " + " ".join(
            f"--include '{p}'" for p in patterns)
        raise _hub_error(repo, "webdataset repo", fetch, e) from None


def build_wds(root: str | os.PathLike | None = None, split: str = "test", classnames=None, templates=None,
              source: str | None = None, download: bool = False) -> LabeledImages:
    """CLIP_benchmark webdataset shards from ``source`` (or ``root``): a folder or a hub dataset
    repo (fetched into the HF cache; ``download`` changes nothing: a repo is always fetched).

    Class names and templates come from the folder's text files unless given."""
    require("webdataset", "a wds: dataset", DatasetError)
    folder, repo = _resolve_source("wds", source or root)
    if repo is not None:
        folder = _fetch_wds(repo, split)
    split_dir = folder / split
    if not split_dir.is_dir():
        have = sorted(d.name for d in folder.iterdir() if d.is_dir() and (d / "nshards.txt").is_file())
        raise DatasetError(f"{repo or folder} has no split {split!r}"
                           + (f"; choose one of {', '.join(have)}" if have else "; expected <split>/nshards.txt"))
    names = _classnames_file(classnames)
    if names is None:
        if not (folder / WDS_CLASSNAMES).is_file():
            raise DatasetError(f"{folder} has no {WDS_CLASSNAMES}; give --classnames FILE (one name per class)")
        names = _text_lines(folder / WDS_CLASSNAMES, "class names file")
    if templates is None and (folder / WDS_TEMPLATES).is_file():
        templates = folder / WDS_TEMPLATES
    temps = _templates(templates)
    bad = [t for t in temps if "{c}" not in t and "{}" not in t]
    if bad:
        raise DatasetError(f"template {bad[0]!r} has no '{{c}}' or '{{}}' placeholder for the class name")

    shards = _wds_shards(split_dir)
    samples: list[tuple[tuple[int, int, int], int]] = []
    ids: list[str] = []
    for i, shard in enumerate(shards):
        _index_shard(shard, i, samples, ids)
    if not samples:
        raise DatasetError(f"the {len(shards)} shards of {split_dir} hold no image with a .cls label")
    over = next((l for _, l in samples if l >= len(names)), None)
    if over is not None:
        raise DatasetError(f"{split_dir} has class index {over} but {len(names)} class names are given")

    from ..filedigest import file_digests
    source_digest = digest({"format": "wds", "split": split, "shards": file_digests(shards)})
    name = repo.rsplit("/", 1)[-1] if repo else folder.resolve().name
    spec = DatasetSpec("wds", split, tuple(names), tuple(temps), name=name, options={"source": repo} if repo else {},
                       description=f"CLIP_benchmark webdataset {repo or folder}")
    return LabeledImages(spec, samples, load=TarMemberLoader([str(s) for s in shards]), ids=ids,
                         root=str(folder), source_digest=source_digest)


# -- HF datasets -------------------------------------------------------------------------------
class ArrowImageLoader:
    """Picklable loader of row indices into an HF split whose image column is undecoded: a
    memory-mapped Arrow table pickles as its file paths, so every worker maps it once."""

    def __init__(self, table, column: str):
        self.table, self.column = table, column

    def read(self, row: int) -> bytes:
        cell = self.table[row][self.column]
        if cell is None:
            raise OSError(f"row {row} has no image")
        if cell.get("bytes") is not None:
            return cell["bytes"]
        if cell.get("path"):
            with open(cell["path"], "rb") as f:
                return f.read()
        raise OSError(f"row {row} has neither image bytes nor a path")

    def __call__(self, row: int):
        return bytes_loader(self.read(row))


def _load_hfds(folder: Path | None, repo: str | None, split: str):
    """The split as a ``datasets.Dataset``: a ``save_to_disk`` folder, another folder
    ``load_dataset`` reads, or a hub repo (fetched into the HF cache)."""
    import datasets
    from huggingface_hub.errors import HfHubHTTPError

    if folder is not None and ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()):
        data = datasets.load_from_disk(str(folder))
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise DatasetError(f"{folder} has no split {split!r}; choose one of {', '.join(data)}")
            return data[split]
        if data.split is not None and str(data.split) != split:
            raise DatasetError(f"{folder} holds split {data.split!r} only; pass --split {data.split}")
        return data
    where = str(folder) if folder is not None else repo
    try:
        return datasets.load_dataset(where, split=split)
    except ValueError as e:  # an unknown split names the ones there are
        raise DatasetError(f"{where}: {str(e).splitlines()[0][:200]}") from None
    except (OSError, HfHubHTTPError) as e:
        if folder is not None:
            raise DatasetError(f"{folder} is not a dataset folder datasets can read ({e}); "
                               "write one with save_to_disk") from None
        raise _hub_error(repo, "HF dataset", "run once with network (HF_HUB_OFFLINE=0) to fill the HF cache, "
                                             "or give a save_to_disk folder", e) from None


def _find_column(features, kind, given: str | None, flag: str, what: str) -> str:
    if given is not None:
        if given not in features:
            raise DatasetError(f"{flag} {given!r} is not a column; the columns are {', '.join(features)}")
        return given
    found = [c for c, f in features.items() if isinstance(f, kind)]
    if len(found) == 1:
        return found[0]
    if found and "label" in found:
        return "label"
    listing = ", ".join(f"{c} ({type(f).__name__})" for c, f in features.items())
    raise DatasetError(f"{'several' if found else 'no'} {what} columns in {listing}; name one with {flag}")


def build_hfds(root: str | os.PathLike | None = None, split: str = "test", classnames=None, templates=None,
               source: str | None = None, image_column: str | None = None, label_column: str | None = None,
               download: bool = False) -> LabeledImages:
    """An HF ``datasets`` image-classification split from ``source`` (or ``root``).

    The image column is the one ``Image`` feature and the label column the one ``ClassLabel``
    (its names are the class names) unless ``image_column`` / ``label_column`` say otherwise; an
    integer label column without names needs ``classnames``."""
    datasets = require("datasets", "an hfds: dataset", DatasetError)
    folder, repo = _resolve_source("hfds", source or root)
    table = _load_hfds(folder, repo, split)
    features = table.features
    image_column = _find_column(features, datasets.Image, image_column, "--image-column", "Image")
    label_column = _find_column(features, datasets.ClassLabel, label_column, "--label-column", "ClassLabel")
    where = f"{repo or folder} [{split}]"
    label_feature = features[label_column]
    if not isinstance(features[image_column], datasets.Image) and not (
            isinstance(features[image_column], dict) and {"bytes", "path"} <= set(features[image_column])):
        raise DatasetError(f"{where}: column {image_column!r} is {features[image_column]}, not an image")
    names = _classnames_file(classnames)
    if names is None:
        if not isinstance(label_feature, datasets.ClassLabel):
            raise DatasetError(f"{where}: label column {label_column!r} has no class names; "
                               "give --classnames FILE (one name per class index)")
        names = list(label_feature.names)
    if not len(table):
        raise DatasetError(f"{where} has no rows")
    labels = table.with_format("arrow")[label_column].to_pylist()  # respects an indices mapping
    odd = next((l for l in labels if not isinstance(l, int)), 0)
    if not isinstance(odd, int):
        raise DatasetError(f"{where}: label column {label_column!r} holds {odd!r}, not a class index; "
                           "name another with --label-column")
    bad = next((l for l in labels if not 0 <= l < len(names)), None)
    if bad is not None:
        raise DatasetError(f"{where}: label {bad} is outside 0..{len(names) - 1} ({len(names)} classes)"
                           + ("; this split is unlabeled" if bad < 0 else ""))

    ids = [str(i) for i in range(len(labels))]
    for column in HFDS_ID_COLUMNS:
        if column in features and column not in (image_column, label_column):
            values = [str(v) for v in table.with_format("arrow")[column].to_pylist()]
            if len(set(values)) == len(values):
                ids = values
                break

    from ..filedigest import file_digests
    arrow_files = [f["filename"] for f in table.cache_files]
    content = {"arrow": file_digests(arrow_files)} if arrow_files else {"fingerprint": table._fingerprint}
    source_digest = digest({"format": "hfds", "split": split, "image_column": image_column, **content})
    images = table.select_columns([image_column]).cast_column(image_column, datasets.Image(decode=False))
    name = repo.rsplit("/", 1)[-1] if repo else folder.resolve().name
    spec = DatasetSpec("hfds", split, tuple(names), tuple(_templates(templates)), name=name,
                       options={**({"source": repo} if repo else {}), "image_column": image_column,
                                "label_column": label_column}, description=f"HF datasets {where}")
    return LabeledImages(spec, [(i, l) for i, l in enumerate(labels)], load=ArrowImageLoader(images, image_column),
                         ids=ids, root=str(folder) if folder else str(Path(arrow_files[0]).parent) if arrow_files
                         else repo, source_digest=source_digest)


__all__ = ["ArrowImageLoader", "TarMemberLoader", "WDS_IMAGE_EXTENSIONS", "build_hfds", "build_wds"]
