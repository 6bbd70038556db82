"""Leases on units of work: two drivers (or a driver and an earlier run's SLURM elements) on one
results folder never compute the same unit at once, on any filesystem the machines share.

A lease is a small file ``RESULTS/leases/<key>.json`` created with ``O_CREAT | O_EXCL`` (atomic on
local filesystems and on NFS v3+), naming its holder (host, pid, a random token). Its holder
touches it every ``heartbeat`` seconds; a lease untouched for ``stale_after`` seconds, or held by
a process of this host that is gone, is stale: the next taker renames it aside (one rename wins)
and creates its own. No ``flock`` is needed, so it works across machines.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from ..errors import InputError

LEASES_DIR = "leases"
HEARTBEAT_S = float(os.environ.get("LR0FM_LEASE_HEARTBEAT", "10"))
STALE_AFTER_S = float(os.environ.get("LR0FM_LEASE_STALE", "60"))


class Leases:
    """The leases this process holds in one results folder, kept alive by one heartbeat thread."""

    def __init__(self, root: str | os.PathLike, heartbeat: float = HEARTBEAT_S, stale_after: float = STALE_AFTER_S,
                 tag: str | None = None):
        self.dir = Path(root) / LEASES_DIR
        self.tag = tag  # e.g. a SLURM job id: a requeued run of the same job takes over its own lease
        self.heartbeat, self.stale_after = heartbeat, stale_after
        self.token = uuid.uuid4().hex
        self.held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def holder(self, key: str) -> dict | None:
        """Who holds ``key`` now (host, pid, token, age in s), or None when nobody does or the lease is stale."""
        path = self.path(key)
        try:
            age = time.time() - path.stat().st_mtime
            owner = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if age > self.stale_after or _gone(owner):
            return None
        return {**owner, "age": age}

    def held_by_others(self) -> set[str]:
        """The keys other live processes hold leases on now (what a key means is the caller's)."""
        if not self.dir.is_dir():
            return set()
        keys = set()
        for path in self.dir.glob("*.json"):
            holder = self.holder(path.stem)
            if holder is not None and holder.get("token") != self.token:
                keys.add(path.stem)
        return keys

    def acquire(self, key: str) -> bool:
        """Take the lease of ``key`` (True), or False when a live holder has it."""
        if key in self.held:
            return True
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot write to results folder {self.dir.parent} ({LEASES_DIR}: {e.strerror or e}); "
                             "make it writable or choose another --out") from None
        path = self.path(key)
        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                           "tag": self.tag}).encode()
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except PermissionError as e:
                raise InputError(f"cannot write to results folder {self.dir.parent} ({LEASES_DIR}: "
                                 f"{e.strerror or e}); make it writable or choose another --out") from None
            except FileExistsError:
                holder = self.holder(key)
                if holder is not None and not (self.tag and holder.get("tag") == self.tag):
                    return False
                # stale: move it aside under a unique name; of two takers only one rename succeeds
                with contextlib.suppress(OSError):
                    aside = path.with_name(f".{path.name}.stale-{self.token}")
                    os.rename(path, aside)
                    aside.unlink()
                continue
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            with self._lock:
                self.held.add(key)
            self._start()
            return True
        return False

    def release(self, key: str) -> None:
        """Drop the lease of ``key`` if this process still holds it."""
        with self._lock:
            self.held.discard(key)
        path = self.path(key)
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("token") == self.token:
                path.unlink()

    def release_all(self) -> None:
        for key in list(self.held):
            self.release(key)
        self._stop.set()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="lr0fm-lease-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with self._lock:
                keys = list(self.held)
            for key in keys:
                with contextlib.suppress(OSError):
                    os.utime(self.path(key))

    def __enter__(self) -> "Leases":
        return self

    def __exit__(self, *_exc) -> bool:
        self.release_all()
        return False


def _gone(owner: dict) -> bool:
    """The holder ran on this host and its process is gone (a killed driver: no need to wait)."""
    if owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return False


__all__ = ["LEASES_DIR", "Leases"]
