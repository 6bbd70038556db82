"""Access to the versioned data files shipped inside the package (catalogs, class names...)."""
from __future__ import annotations

import hashlib
from importlib import resources as _res
from pathlib import Path

_PACKAGE = "lr0fm"


def path(relpath: str) -> Path:
    """Filesystem path of a packaged data file (the package is installed unzipped)."""
    return Path(str(_res.files(_PACKAGE).joinpath(relpath)))


def exists(relpath: str) -> bool:
    return path(relpath).is_file()


def read_text(relpath: str) -> str:
    return path(relpath).read_text(encoding="utf-8")


def file_hash(relpath: str) -> str:
    """Short content hash of a data file: recorded with results so catalogs are traceable."""
    return hashlib.sha256(path(relpath).read_bytes()).hexdigest()[:16]


def folder_files(relpath: str, pattern: str) -> list[Path]:
    """The packaged files of a folder matching ``pattern``, sorted by name."""
    return sorted(p for p in path(relpath).glob(pattern) if p.is_file())


def folder_hash(relpath: str, pattern: str) -> str:
    """Short content hash of a folder's files matching ``pattern``: their names and bytes, in name order."""
    h = hashlib.sha256()
    for p in folder_files(relpath, pattern):
        h.update(p.name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:16]
