"""Offline-aware access to downloadable weights: fail at once instead of long hub retries."""
from __future__ import annotations

import json
import os
import socket
from functools import lru_cache
from pathlib import Path

from .base import file_sha256

HUB_HOST = os.environ.get("LR0FM_HUB_HOST", "huggingface.co")


@lru_cache(maxsize=1)
def network_available(timeout: float = 3.0) -> bool:
    """One quick TCP probe of the hub (cached for the process)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def go_offline_if_unreachable() -> None:
    """Put huggingface_hub in offline mode when the hub cannot be reached, so a missing file
    raises immediately rather than after minutes of retries."""
    if network_available():
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as c
        c.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover
        pass


def _hash_cache_file() -> Path:
    return Path(os.environ.get("LR0FM_CACHE", Path.home() / ".cache" / "lr0fm")) / "weights_hashes.json"


def cached_file_hash(path: str | os.PathLike) -> str:
    """sha256 of a weights file, remembered by (path, size, mtime) -- big checkpoints hash once."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{int(st.st_mtime)}"
    cache_path = _hash_cache_file()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        cache[key] = file_sha256(path)
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(cache, indent=0))
            os.replace(tmp, cache_path)
        except OSError:
            pass
    return cache[key]
