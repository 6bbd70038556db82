"""Analyses of low-resolution damage: where in the network (``layers``), what kind of mistakes
(``predictions``), and which model properties go with robustness (``models``).

Each analysis is a library function returning a small result object with ``table()`` and
``save(dir)`` (JSON + CSV + PNG); ``lr0fm.commands.analyze`` adds ``lr0fm analyze ...`` over them.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

from ..atomic import atomic_write_bytes
from ..plotting import figure_png, pyplot
from ..store import ResultsStore


def analysis_dir(out=None) -> Path:
    """Where analyses write their files: <results dir>/analysis."""
    return ResultsStore(out).root / "analysis"


def slug(*parts: str) -> str:
    """A file-name-safe stem from model/dataset names (model specs may be paths)."""
    text = "_".join(str(p) for p in parts)
    clean = re.sub(r"[^A-Za-z0-9_+-]+", "-", text).strip("-")
    if clean != text or len(clean) > 60:
        # altered or shortened: a hash keeps different specs apart
        clean = f"{clean[-48:].strip('-')}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return clean


def write_json(path: Path, obj) -> Path:
    atomic_write_bytes(path, json.dumps(obj, indent=1, default=str).encode())
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """``fig`` laid out and written to ``path`` as PNG (lr0fm.plotting.figure_png), then closed."""
    atomic_write_bytes(path, figure_png(fig, dpi=dpi))
    return path


__all__ = ["analysis_dir", "pyplot", "save_figure", "slug", "write_csv", "write_json"]
