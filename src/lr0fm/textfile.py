"""Users' text files (accuracy tables, CSV datasets, class names, templates): UTF-8, checked."""
from __future__ import annotations

import os
from pathlib import Path


def read_utf8(path: str | os.PathLike, what: str, error: type[Exception]) -> str:
    """The file's text; a non-UTF-8 byte, or a file that cannot be read, raises ``error`` naming
    it (a leading BOM is dropped)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise error(f"{path}:{line}: {what} is not UTF-8 text (byte 0x{data[e.start]:02x}); save it as UTF-8") from None
