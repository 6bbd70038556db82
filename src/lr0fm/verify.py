"""Numbers a reader can verify: every number and id of a stored record derived again from what it
was made of, and records that disagree moved aside (``lr0fm verify [--fix]``).

A record is made of its identity parts (``identity``) and its predictions file
(``predictions/<cell>.npz``); everything else in it follows from those two, and is checked here:

* ``evaluation``, ``cell`` and ``classifier_key`` are the ids lr0fm.identity makes of the identity
  (and the resolution); the record's file name is its cell; ``num_classes`` is the identity's;
* ``predictions_sha256`` is the predictions file's sha256;
* the per-cell metrics (lr0fm.metrics.CELL_METRICS), ``n_images``, ``n_skipped`` and
  ``skipped_ids`` are what ``cell_metrics`` and the valid mask give from the predictions' top-k,
  labels and ids, and the identity's image count ``data.n`` is their length;
* ``numbers_digest`` is the digest of those numbers with the cell, the class count and the
  predictions' sha256 (``ResultsStore.put`` writes it beside them).

The catalog hashes a record carries name the catalog files of the lr0fm that wrote it: nothing in
the record derives them (what of the catalog can change a number -- class names, templates,
protocol, weights -- is in the identity parts, checked above), so they are provenance, not checked.

Two depths. ``quick_problem`` is what the store asks whenever it trusts a record (``eval``'s
"complete", reports, ``lr0fm.load_results``): the ids (digests of a few small dicts), the
predictions' sha256 (the file is read once, as before) and the numbers digest -- a number edited
by hand no longer matches it, and that costs neither loading the arrays nor recomputing a metric
(mean per-class recall walks every image in Python). Only a record written before records carried
a numbers digest has its numbers derived there. A digest forged along with the numbers passes the
quick check; ``verify_store`` (``lr0fm verify``) derives every number from the arrays and catches
that as well.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from .errors import InputError
from .identity import cell_id, classifier_id, digest, evaluation_id
from .metrics import CELL_METRICS, cell_metrics
from .records import SKIPPED_IDS_KEPT, current, problem

class Store(Protocol):
    """What verification reads of a results store (lr0fm.store.ResultsStore, which uses this module's
    cheap checks itself: so the store is described here, not imported)."""

    root: Path

    def record_path(self, cell: str) -> Path: ...
    def predictions_path(self, cell: str) -> Path: ...

# the fields of a record its predictions give, and the fields its numbers digest covers
DERIVED = (*CELL_METRICS, "n_images", "n_skipped", "skipped_ids")
SEALED = ("cell", "predictions_sha256", "num_classes", *DERIVED)
QUARANTINE = "quarantine"  # RESULTS/quarantine/<time>/: where --fix moves disagreeing records

# why the quick check distrusts a record (the store's warnings name these)
PREDICTIONS_CHANGED = "predictions file missing or changed"
NUMBERS_DIFFER = "its numbers differ from its predictions; 'lr0fm verify' lists what differs"
IDS_DIFFER = "its ids do not derive from its identity; 'lr0fm verify' lists what differs"
UNREADABLE_PREDICTIONS = "predictions file unreadable"
NOT_PREDICTIONS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)  # what np.load of another file raises


def numbers_digest(record: dict) -> str:
    """The digest of the ``SEALED`` fields a record holds: its numbers tied to its cell and
    predictions. Fields it lacks are left out, so a per-cell metric added to lr0fm later leaves
    the digest of a record written before it unchanged (and one deleted by hand changes it)."""
    return digest({k: record[k] for k in SEALED if k in record})


def _differing(record: dict, derived: dict) -> list[str]:
    """The ``DERIVED`` fields ``record`` holds with another value than ``derived`` (a field it
    lacks was not recorded by the lr0fm that wrote it, and is not compared)."""
    return [k for k in DERIVED if k in record and not _same(record[k], derived[k])]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def derived_numbers(predictions: bytes, num_classes: int | None) -> tuple[dict, int]:
    """The ``DERIVED`` fields a predictions file gives (as ``records.make_record`` computes them)
    and its number of images. Raises one of ``NOT_PREDICTIONS`` for a file that is not one."""
    with np.load(io.BytesIO(predictions), allow_pickle=False) as z:
        topk, labels, valid, ids = z["topk"], z["labels"], z["valid"].astype(bool), z["ids"]
    if not (topk.ndim == 2 and len(topk) == len(labels) == len(valid) == len(ids)):
        raise ValueError(f"arrays of other lengths (topk {topk.shape}, labels {labels.shape}, valid {valid.shape}, "
                         f"ids {ids.shape})")
    # mean per-class recall sizes its tallies by the class count and skips absent classes, so any
    # count above the largest label gives the same number
    classes = max(num_classes or 0, int(labels.max(initial=-1)) + 1)
    numbers = {**cell_metrics(topk[valid], labels[valid], classes), "n_images": int(valid.sum()),
               "n_skipped": int((~valid).sum()), "skipped_ids": [str(i) for i in ids[~valid][:SKIPPED_IDS_KEPT]]}
    return numbers, len(labels)


@dataclass(frozen=True)
class Mismatch:
    """One thing a record file holds that its parts do not give: ``name`` is the file's stem (its
    cell, unless renamed); ``recorded`` what the file says, ``derived`` what its parts give."""

    name: str
    what: str
    recorded: Any = None
    derived: Any = None

    def __str__(self) -> str:
        if self.recorded is None and self.derived is None:
            return f"{self.name}: {self.what}"
        return f"{self.name}: {self.what} (recorded {_show(self.recorded)}, derived {_show(self.derived)})"


def _show(value: Any) -> str:
    return "none" if value is None else json.dumps(value) if isinstance(value, list) else str(value)


def _same(a: Any, b: Any) -> bool:
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return both_nan or a == b


def _own_cell(record: dict, name: str) -> str:
    """The cell whose predictions a record file names: its ``cell`` when that is a plain file
    name (a hand-edited one may not be), else the file's own name."""
    cell = record.get("cell")
    return cell if isinstance(cell, str) and re.fullmatch(r"[0-9A-Za-z_-]+", cell) else name


def id_mismatches(record: dict, name: str | None = None) -> list[Mismatch]:
    """The ids of ``record`` that its identity does not give."""
    name = name or record["cell"]
    identity = record["identity"]
    evaluation = evaluation_id(identity)
    out = []
    if record["evaluation"] != evaluation:
        out.append(Mismatch(name, "evaluation id", record["evaluation"], evaluation))
    cell = cell_id(evaluation, record["resolution"])
    if record["cell"] != cell:
        out.append(Mismatch(name, "cell id", record["cell"], cell))
    if "classifier_key" in record and record["classifier_key"] != classifier_id(identity):
        out.append(Mismatch(name, "classifier key", record["classifier_key"], classifier_id(identity)))
    return out


def quick_problem(record: dict, predictions: bytes | None) -> str | None:
    """Why the store must not trust ``record`` (None: it may), from digests: see the module's doc.
    ``predictions``: the bytes of its predictions file (None: missing)."""
    if id_mismatches(record):
        return IDS_DIFFER
    if predictions is None or sha256(predictions) != record["predictions_sha256"]:
        return PREDICTIONS_CHANGED
    sealed = record.get("numbers_digest")
    if sealed is not None:
        return None if sealed == numbers_digest(record) else NUMBERS_DIFFER
    try:  # written before records carried a numbers digest: derive the numbers (the file is in hand)
        derived, _ = derived_numbers(predictions, record.get("num_classes"))
    except NOT_PREDICTIONS:
        return UNREADABLE_PREDICTIONS
    return NUMBERS_DIFFER if _differing(record, derived) else None


def record_mismatches(store: Store, name: str, record: dict,
                      cell_of_sha: dict[str, str] | None = None) -> list[Mismatch]:
    """Everything ``record`` (read from ``records/<name>.json``) holds that its parts do not give.
    ``cell_of_sha``: predictions sha256 -> the cell that records it, to name a swapped file."""
    out = []
    if record["cell"] != name:
        out.append(Mismatch(name, "cell id against the file name", record["cell"], name))
    out += id_mismatches(record, name)
    classes = (record["identity"].get("data") or {}).get("num_classes")
    if record.get("num_classes") != classes:  # the numbers digest covers it: quick_problem needs no look
        out.append(Mismatch(name, "num_classes (of the identity's data)", record.get("num_classes"), classes))
    recorded = record["predictions_sha256"]
    try:
        data = store.predictions_path(_own_cell(record, name)).read_bytes()
    except OSError:
        return [*out, Mismatch(name, "predictions sha256: no predictions file", recorded, None)]
    found = sha256(data)
    if found != recorded:  # numbers of another file say nothing about this record: stop here
        owner = (cell_of_sha or {}).get(found)
        what = "predictions sha256" + (f": the file holds cell {owner}'s predictions" if owner else "")
        return [*out, Mismatch(name, what, recorded, found)]
    try:
        derived, n = derived_numbers(data, record.get("num_classes"))
    except NOT_PREDICTIONS as e:
        return [*out, Mismatch(name, f"{UNREADABLE_PREDICTIONS} ({type(e).__name__}: {e})")]
    out += [Mismatch(name, k, record[k], derived[k]) for k in _differing(record, derived)]
    images = (record["identity"].get("data") or {}).get("n")
    if images is not None and images != n:
        out.append(Mismatch(name, "images (identity data.n against the predictions)", images, n))
    sealed = record.get("numbers_digest")
    if not out and sealed is not None and sealed != numbers_digest(record):
        out.append(Mismatch(name, "numbers digest", sealed, numbers_digest(record)))  # the only evidence
    return out


@dataclass
class Verification:
    """What ``verify_store`` found: ``checked`` record files, their ``mismatches`` in file order."""

    checked: int
    mismatches: list[Mismatch]

    @property
    def bad(self) -> list[str]:
        """The stems of the record files with a mismatch, once each, in order."""
        return list(dict.fromkeys(m.name for m in self.mismatches))

    def summary(self) -> str:
        if not self.mismatches:
            return f"{self.checked} records verified, all consistent"
        return (f"{len(self.bad)} of {self.checked} records inconsistent; 'lr0fm verify --fix' moves them aside and "
                "'lr0fm eval' recomputes their cells")


def verify_store(store: Store) -> Verification:
    """Every record file under ``records/`` checked against its parts (``record_mismatches``); a
    file that is not a readable record is a mismatch too."""
    paths = sorted((store.root / "records").glob("*.json"))
    records: dict[str, dict] = {}
    out: list[Mismatch] = []
    for path in paths:
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            out.append(Mismatch(path.stem, f"not a readable JSON record ({type(e).__name__})"))
            continue
        why = problem(obj)
        if why is not None:
            out.append(Mismatch(path.stem, f"not a record this lr0fm reads ({why})"))
            continue
        records[path.stem] = current(obj)
    cell_of_sha = {r["predictions_sha256"]: r["cell"] for r in records.values()}
    for name, record in records.items():
        out += record_mismatches(store, name, record, cell_of_sha)
    order = {path.stem: i for i, path in enumerate(paths)}
    return Verification(len(paths), sorted(out, key=lambda m: order[m.name]))


def quarantine(store: Store, verification: Verification) -> Path | None:
    """Move the record files with a mismatch, and their predictions, to
    ``RESULTS/quarantine/<time>/`` (same layout, with ``verify.txt`` listing why), so that
    readers no longer see them and ``lr0fm eval`` computes their cells again. None when there
    was nothing to move."""
    from .atomic import atomic_write_bytes

    names = verification.bad
    if not names:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = store.root / QUARANTINE / stamp
    n = 1
    while folder.exists():
        n += 1
        folder = store.root / QUARANTINE / f"{stamp}-{n}"
    moves = [path for name in names for path in _files_of(store, name)]
    atomic_write_bytes(folder / "verify.txt", "".join(f"{m}\n" for m in verification.mismatches).encode())
    for path in moves:
        target = folder / path.relative_to(store.root)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        except OSError as e:
            raise InputError(f"cannot move {path} to {target}: {e.strerror or e}; check the permissions of "
                             f"{store.root} and rerun 'lr0fm verify --fix'") from None
    return folder


def _files_of(store: Store, name: str) -> Sequence[Path]:
    """``records/<name>.json`` and the predictions beside it: ``predictions/<name>.npz``, and those
    of the cell the file names when that cell has no record file of its own (a renamed record)."""
    record = store.record_path(name)
    files = [record, store.predictions_path(name)]
    try:
        cell = _own_cell(json.loads(record.read_text(encoding="utf-8")), name)
    except (OSError, ValueError, AttributeError):
        cell = name
    if cell != name and not store.record_path(cell).exists():
        files.append(store.predictions_path(cell))
    return [p for p in files if p.is_file()]


__all__ = ["DERIVED", "Mismatch", "SEALED", "Verification", "numbers_digest", "quarantine", "quick_problem",
           "record_mismatches", "verify_store"]
