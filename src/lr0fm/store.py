"""Results store: one JSON record per cell, written atomically; predictions beside it.

Layout under the results directory (``./lr0fm-results`` unless --out / $LR0FM_RESULTS):

    records/<cell>.json        one per (model, dataset, split, protocol, resolution, variant)
    predictions/<cell>.npz     per-image top-k class indices, labels and ids (analyses, paired tests)
    partial/<group>.npz        progress of a pass in flight (resume point), removed when done
    cache/classifiers/<k>.pt   zero-shot text classifiers

A killed run loses at most the images since the last partial save; it never leaves a
half-written record (tmp file + os.replace).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

RESULTS_ENV = "LR0FM_RESULTS"
DEFAULT_RESULTS_DIR = "lr0fm-results"
# Columns of the tidy CSV export (protocol columns included, timm-style).
CSV_COLUMNS = ["model", "dataset", "split", "resolution", "top1", "top5", "mean_per_class_recall", "n_images",
               "n_skipped", "mode", "input_size", "interpolation", "antialias", "variant", "model_id", "weights_hash",
               "classnames_hash", "templates_hash", "protocol_hash", "lr0fm_version", "cell"]


def results_dir(out: str | os.PathLike | None = None) -> Path:
    return Path(out or os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS_DIR)


def stable_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_npz(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


class ResultsStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = results_dir(root)

    # -- paths ------------------------------------------------------------------------------
    def record_path(self, cell: str) -> Path:
        return self.root / "records" / f"{cell}.json"

    def predictions_path(self, cell: str) -> Path:
        return self.root / "predictions" / f"{cell}.npz"

    def partial_path(self, group: str) -> Path:
        return self.root / "partial" / f"{group}.npz"

    @property
    def classifier_cache(self) -> Path:
        return self.root / "cache" / "classifiers"

    # -- records ----------------------------------------------------------------------------
    def has(self, cell: str) -> bool:
        return self.record_path(cell).is_file()

    def get(self, cell: str) -> dict | None:
        try:
            return json.loads(self.record_path(cell).read_text())
        except (OSError, ValueError):
            return None

    def put(self, record: dict, predictions: dict | None = None) -> None:
        """Predictions first, record last: a record on disk means the cell is complete."""
        cell = record["cell"]
        if predictions is not None:
            atomic_write_npz(self.predictions_path(cell), **predictions)
        atomic_write_bytes(self.record_path(cell), json.dumps(record, indent=1, sort_keys=True).encode())

    def records(self) -> list[dict]:
        out = []
        for path in sorted((self.root / "records").glob("*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except ValueError:
                continue  # not ours / foreign file
        return sorted(out, key=lambda r: (r["model"], r["dataset"], _res_key(r["resolution"]), json.dumps(r.get("variant"))))

    def load_predictions(self, cell: str) -> dict[str, np.ndarray]:
        with np.load(self.predictions_path(cell), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    # -- partial progress -------------------------------------------------------------------
    def load_partial(self, group: str) -> dict[str, np.ndarray] | None:
        path = self.partial_path(group)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception:
            return None  # a damaged partial file only costs the work since the last save

    def save_partial(self, group: str, **arrays) -> None:
        atomic_write_npz(self.partial_path(group), **arrays)

    def drop_partial(self, group: str) -> None:
        self.partial_path(group).unlink(missing_ok=True)

    # -- export -----------------------------------------------------------------------------
    def to_rows(self, records: Iterable[dict] | None = None) -> list[dict]:
        rows = []
        for r in self.records() if records is None else records:
            p = r.get("protocol", {})
            rows.append({**{k: r.get(k) for k in CSV_COLUMNS},
                         "mode": p.get("mode"), "input_size": p.get("input_size"),
                         "interpolation": p.get("interpolation"), "antialias": p.get("antialias"),
                         "variant": json.dumps(r.get("variant") or {}, sort_keys=True)})
        return rows

    def export_csv(self, path: str | os.PathLike, records: Iterable[dict] | None = None) -> Path:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(self.to_rows(records))
        atomic_write_bytes(Path(path), buf.getvalue().encode())
        return Path(path)


def _res_key(resolution) -> int:
    return 10 ** 9 if str(resolution) == "hr" else int(resolution)
