"""Atomic file writes: a reader sees the old file or the new one, never half of one; a failed write
is one line (InputError). A leaf module: the store, the verifier, reports and caches all use it."""
from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path

from .errors import InputError

# errors that mean "not writable" (as opposed to a full disk): their remedy differs
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def remedy(e: OSError, instead: str) -> str:
    return f"make it writable or choose {instead}" if e.errno in NOT_WRITABLE else f"free space or choose {instead}"


def atomic_write_bytes(path: Path, data: bytes, instead: str = "another --out") -> None:
    """Write via a temp file and rename: a reader sees the old file or the new one, and a failed
    write (full or read-only disk) leaves neither a temp file nor half a file behind, only one
    line (InputError) that suggests ``instead``."""
    # one temp file per writer: processes on a shared folder, and threads of one process
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InputError(f"cannot write {path}: {e.strerror or e}; {remedy(e, instead)}") from None


__all__ = ["NOT_WRITABLE", "atomic_write_bytes", "remedy"]
