"""The content-digest cache never answers with a stale digest, and does not rehash unchanged files."""
import hashlib
import os
import time

from lr0fm import filedigest


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def remembered(tmp_path, monkeypatch):
    """A file whose digest the cache now holds, and its stat at that time."""
    monkeypatch.setenv(filedigest.CACHE_ENV, str(tmp_path / "cache"))
    path = tmp_path / "weights.bin"
    path.write_bytes(b"first")
    st = path.stat()
    assert filedigest.file_digest(path) == sha(b"first")
    return path, st


def test_unchanged_file_is_served_from_the_cache(tmp_path, monkeypatch):
    path, _ = remembered(tmp_path, monkeypatch)
    calls = []
    monkeypatch.setattr(filedigest, "sha256_file", lambda p, **kw: calls.append(p) or "not-hashed")
    assert filedigest.file_digest(path) == sha(b"first")  # from the cache
    assert calls == []


def test_same_size_rewrite_with_mtime_set_back_is_hashed_again(tmp_path, monkeypatch):
    path, st = remembered(tmp_path, monkeypatch)
    time.sleep(0.05)  # past the kernel's timestamp granularity, so the ctime moves
    path.write_bytes(b"other")  # same size, in place
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime as before (rsync -t, tar, touch -d)
    assert path.stat().st_mtime_ns == st.st_mtime_ns
    assert filedigest.file_digest(path) == sha(b"other")


def test_file_replaced_by_rename_is_hashed_again(tmp_path, monkeypatch):
    path, st = remembered(tmp_path, monkeypatch)
    tmp = tmp_path / "weights.bin.tmp"
    tmp.write_bytes(b"other")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)  # how most tools save: a new inode under the old name
    assert filedigest.file_digest(path) == sha(b"other")
