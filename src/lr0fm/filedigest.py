"""sha256 of files, remembered by (path, size, mtime, inode, ctime): weights files and dataset images
hash once. The inode catches a file replaced by rename (how most tools save), the ctime one whose
mtime was set back (``touch -d``, ``rsync -t``, tar extraction).

The cache is a small SQLite file (``$LR0FM_CACHE/file_digests.sqlite``, default
``~/.cache/lr0fm``), safe for several processes. A moved or copied file misses the cache and is
hashed again -- to the same digest, which is the point: results are tied to content, not paths.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from pathlib import Path
from typing import Sequence

log = logging.getLogger("lr0fm")

CACHE_ENV = "LR0FM_CACHE"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lr0fm")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _connect() -> sqlite3.Connection | None:
    try:
        path = cache_dir() / "file_digests.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=60)
        con.execute("CREATE TABLE IF NOT EXISTS digests_v2 (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                    "ino INTEGER, ctime_ns INTEGER, sha256 TEXT)")
        return con
    except (OSError, sqlite3.Error):  # read-only home: hash without remembering
        return None


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    """What must be unchanged for a remembered digest to stand."""
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def file_digests(paths: Sequence[str | os.PathLike]) -> list[str]:
    """sha256 of each file (raises OSError for a missing one), hashing only files the cache does
    not know at their current size, mtime, inode and ctime."""
    resolved = [Path(p).resolve() for p in paths]
    stats = [p.stat() for p in resolved]
    con = _connect()
    known: dict[str, tuple[tuple[int, int, int, int], str]] = {}
    if con is not None:
        try:
            keys = [str(p) for p in resolved]
            for i in range(0, len(keys), 900):  # SQLite's bound-parameter limit
                part = keys[i:i + 900]
                rows = con.execute(f"SELECT path, size, mtime_ns, ino, ctime_ns, sha256 FROM digests_v2 WHERE path IN "
                                   f"({','.join('?' * len(part))})", part)
                known.update({r[0]: (tuple(r[1:5]), r[5]) for r in rows})
        except sqlite3.Error:
            known = {}
    out, new = [], []
    missing = sum(1 for p, st in zip(resolved, stats) if known.get(str(p), (None,))[0] != _stamp(st))
    if missing > 1000:
        log.warning("hashing %d files once to identify their content (remembered in %s)", missing, cache_dir())
    for p, st in zip(resolved, stats):
        hit = known.get(str(p))
        if hit is not None and hit[0] == _stamp(st):
            out.append(hit[1])
            continue
        digest = sha256_file(p)
        out.append(digest)
        new.append((str(p), *_stamp(st), digest))
    if con is not None:
        try:
            if new:
                with con:
                    con.executemany("INSERT OR REPLACE INTO digests_v2 VALUES (?, ?, ?, ?, ?, ?)", new)
        except sqlite3.Error:
            pass
        finally:
            con.close()
    return out


def file_digest(path: str | os.PathLike) -> str:
    return file_digests([path])[0]
