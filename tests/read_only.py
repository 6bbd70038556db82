"""Run lr0fm commands with some folders read-only -- for root too, where chmod stops nothing (CI
runs the tests as root).

The folders are bind-mounted read-only in a private mount namespace (``unshare --mount``, inside
a user namespace, ``--map-root-user``, where that is what the system allows: always for a user
other than root), so a write fails as it does on a read-only disk, whoever runs it, and nothing
outside the commands sees the mounts. Where namespaces are not allowed, a user other than root
gets the folders' write bits removed instead; root without namespaces cannot be refused a write
(``needs_read_only`` skips).
"""
from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import lr0fm

SRC = Path(lr0fm.__file__).resolve().parents[1]  # the lr0fm these tests import, for the subprocesses


@dataclass
class Ran:
    rc: int
    out: str
    err: str


def _mounts(folders) -> str:
    """Shell lines that make each folder a read-only bind mount of itself."""
    return "".join(f"mount --bind {q} {q} && mount -o remount,ro,bind {q} {q} || exit 97\n"
                   for q in map(shlex.quote, map(str, folders)))


@functools.lru_cache(maxsize=None)
def how() -> tuple[str, ...] | str | None:
    """The unshare command whose read-only bind mounts work here, else 'chmod' (not root: write
    bits are enough), else None."""
    if shutil.which("unshare") and shutil.which("mount"):
        tries = ([["unshare", "--mount"]] if os.geteuid() == 0 else []) + [["unshare", "--mount", "--map-root-user"]]
        for unshare in tries:
            with tempfile.TemporaryDirectory() as d:
                probe = f"{_mounts([d])}! touch {shlex.quote(d)}/probe 2>/dev/null\n"
                if subprocess.run([*unshare, "sh", "-c", probe], capture_output=True).returncode == 0:
                    return tuple(unshare)
    return "chmod" if os.geteuid() != 0 else None


needs_read_only = pytest.mark.skipif(how() is None, reason="root, where neither a mount namespace (CAP_SYS_ADMIN) nor "
                                     "a user namespace is allowed: nothing refuses root a write")


def _read_only_tree(folder: Path) -> dict[Path, int]:
    """Remove the write bits of ``folder`` and all in it; -> the modes to restore."""
    modes = {path: path.stat().st_mode for path in [folder, *folder.rglob("*")]}
    for path, mode in modes.items():
        path.chmod(mode & ~0o222)
    return modes


def run_read_only(folders, commands: list[list[str]], logs: Path) -> list[Ran]:
    """Run ``python -m lr0fm ARGS`` for each of ``commands`` in turn, with ``folders`` read-only
    for all of them; their exit codes and outputs go through files in ``logs`` (keep it outside
    the folders)."""
    logs.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, argv in enumerate(commands):
        cmd = shlex.join([sys.executable, "-m", "lr0fm", *map(str, argv)])
        log = shlex.quote(str(logs / str(i)))
        lines.append(f"{cmd} >{log}.out 2>{log}.err; echo $? >{log}.rc\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)}
    if isinstance(how(), tuple):
        done = subprocess.run([*how(), "sh", "-c", _mounts(folders) + "".join(lines)], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, f"the read-only mounts failed: {done.stderr}"
    else:
        modes = {}
        try:
            for folder in folders:
                modes.update(_read_only_tree(Path(folder)))
            subprocess.run(["sh", "-c", "".join(lines)], env=env, check=True)
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
    return [Ran(int((logs / f"{i}.rc").read_text()), (logs / f"{i}.out").read_text(), (logs / f"{i}.err").read_text())
            for i in range(len(commands))]
