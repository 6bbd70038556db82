"""Results store: one JSON record per cell, written atomically; predictions beside it.

Layout under the results directory (``./lr0fm-results`` unless --out / $LR0FM_RESULTS):

    records/<cell>.json        one per cell (lr0fm.identity: an evaluation at one resolution)
    predictions/<cell>.npz     per-image top-k class indices, labels and ids; the record names its sha256
    quarantine/<time>/         records (and their predictions) ``lr0fm verify --fix`` moved aside
    partial/<evaluation>-<pending>.npz   progress of a pass in flight (resume point), removed when done
    locks/<evaluation>.lock    held while a process runs a pass of that evaluation
    locks/<evaluation>.commit.lock   held while a process writes records of that evaluation
    cache/classifiers/<k>.pt   zero-shot text classifiers

A cell is complete only when its record is a valid record of this lr0fm *and* its predictions
file exists with the digest the record names *and* its numbers and ids are the ones its parts give
(lr0fm.verify.quick_problem, by digests); anything else (a truncated or foreign file, a deleted or
altered predictions file, a number edited by hand) is one warning and the cell is computed again.
A killed run loses at most the images since the last partial save and never leaves a half-written
file.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .atomic import atomic_write_bytes, remedy
from .errors import InputError, PassBusy
from .records import TABLE_COLUMNS, current, label_records, problem, res_key, table_row
from .verify import PREDICTIONS_CHANGED, numbers_digest, quick_problem

log = logging.getLogger("lr0fm")

RESULTS_ENV = "LR0FM_RESULTS"
DEFAULT_RESULTS_DIR = "lr0fm-results"


def results_dir(out: str | os.PathLike | None = None) -> Path:
    return Path(out or os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS_DIR)


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def atomic_write_npz(path: Path, **arrays) -> None:
    atomic_write_bytes(path, npz_bytes(**arrays))


class ResultsStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = results_dir(root)
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"results folder {self.root} is a file; give --out a folder (new or used by lr0fm before)")
        self._warned: set[Path] = set()

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

    def _not_writable(self, path: Path, e: OSError) -> InputError:
        """The one line for a write into the results folder that the system refused."""
        where = path.relative_to(self.root) if path.is_relative_to(self.root) else path
        return InputError(f"cannot write to results folder {self.root} ({where}: {e.strerror or e}); "
                          f"{remedy(e, 'another --out')}")

    def check_writable(self) -> None:
        """The folders a pass writes into, where they exist, accept writes: a read-only results
        folder (or one unwritable part of it) is one line before the pass, not after it."""
        for folder in (self.root / "records", self.root / "predictions", self.root / "partial", self.classifier_cache):
            if folder.is_dir():
                try:  # a file made and removed: the system's own answer (mode bits, ACLs, read-only mounts, root)
                    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check"):
                        pass
                except OSError as e:
                    raise self._not_writable(folder, e) from None

    # -- records ----------------------------------------------------------------------------
    def _warn(self, path: Path, why: str, reported: bool = False) -> None:
        """One warning per file; ``reported``: its cell's numbers are still shown (a report)."""
        if path not in self._warned:
            self._warned.add(path)
            log.warning("warning: %s %s (%s); 'lr0fm eval' recomputes its cell", "reporting the record of" if reported
                        else "ignoring", path, why)

    def _read(self, path: Path) -> dict | None:
        """The record in ``path``, or None (with one warning) when it is damaged or foreign."""
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            self._warn(path, f"not a readable JSON record: {type(e).__name__}")
            return None
        why = problem(record)
        if why is None and record["cell"] != path.stem:
            why = "its cell id does not match its file name"
        if why is not None:
            self._warn(path, why)
            return None
        return current(record)

    def get(self, cell: str) -> dict | None:
        return self._read(self.record_path(cell))

    def complete(self, cell: str, warn: bool = True) -> bool:
        """The cell has a valid record that its parts still give: its predictions file (same
        digest), its numbers and ids (lr0fm.verify.quick_problem). ``warn=False`` for a caller
        whose own error line says it (one line, not a warning and an error)."""
        record = self.get(cell)
        return record is not None and self._trusted(record, warn)

    def problem_of(self, record: dict) -> str | None:
        """Why ``record`` cannot be trusted (lr0fm.verify.quick_problem: digests, cheap), or None."""
        try:
            predictions = self.predictions_path(record["cell"]).read_bytes()
        except OSError:
            predictions = None
        return quick_problem(record, predictions)

    def _trusted(self, record: dict, warn: bool, reported: bool = False) -> bool:
        why = self.problem_of(record)
        if why is not None and warn:
            on_predictions = why == PREDICTIONS_CHANGED
            self._warn(self.predictions_path(record["cell"]) if on_predictions else self.record_path(record["cell"]),
                       why, reported)
        return why is None

    def untrusted(self, records: Iterable[dict]) -> list[tuple[dict, str]]:
        """(record, why) of each of ``records`` whose parts no longer give it (``problem_of``)."""
        return [(r, why) for r in records if (why := self.problem_of(r)) is not None]

    def warn_incomplete(self, records: Iterable[dict]) -> list[dict]:
        """Warn once per record whose predictions file is missing or changed, or whose numbers or
        ids its parts do not give, as ``eval`` does (a report still shows its numbers); returns
        those records."""
        return [r for r in records if not self._trusted(r, warn=True, reported=True)]

    def put(self, record: dict, predictions: dict) -> None:
        """Predictions first, record last (naming their digest, and sealing its numbers with it:
        lr0fm.verify.numbers_digest): a record means the cell is complete."""
        cell = record["cell"]
        data = npz_bytes(**predictions)
        atomic_write_bytes(self.predictions_path(cell), data)
        record = {**record, "predictions_sha256": hashlib.sha256(data).hexdigest()}
        record["numbers_digest"] = numbers_digest(record)
        try:
            atomic_write_bytes(self.record_path(cell), json.dumps(record, indent=1, sort_keys=True).encode())
        except InputError:  # no record, no predictions: nothing half-written stays behind
            with contextlib.suppress(OSError):
                self.predictions_path(cell).unlink()
            raise

    def records(self) -> list[dict]:
        """Every valid record, sorted; damaged or foreign files are skipped with one warning each."""
        out = [r for path in sorted((self.root / "records").glob("*.json")) if (r := self._read(path)) is not None]
        return sorted(out, key=lambda r: (r["model"], r["dataset"], r["evaluation"], res_key(r["resolution"])))

    def load_predictions(self, cell: str) -> dict[str, np.ndarray]:
        with np.load(self.predictions_path(cell), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    # -- concurrency ------------------------------------------------------------------------
    @contextlib.contextmanager
    def pass_lock(self, evaluation: str, wait: bool = True) -> Iterator[None]:
        """Held while this process runs a pass of ``evaluation``: two processes on one results
        folder never compute the same cells at once. ``wait=False`` raises PassBusy instead of
        waiting."""
        def busy() -> None:
            if not wait:
                raise PassBusy(evaluation)
            log.warning("another lr0fm process is evaluating %s in %s; waiting for it", evaluation[:12], self.root)

        with self._file_lock(f"{evaluation}.lock", busy):
            self.check_writable()
            yield

    @contextlib.contextmanager
    def commit_lock(self, evaluation: str) -> Iterator[None]:
        """Held while records of ``evaluation`` are written (lr0fm.evaluation.write_records): the
        check that a cell is complete and its writing are one step, so when two processes finish
        the same cells (two Ray drivers, two SLURM submitters, an attempt that reports late) each
        record is written once and the second process finds it complete. Short: no pass runs
        under it."""
        with self._file_lock(f"{evaluation}.commit.lock"):
            yield

    @contextlib.contextmanager
    def _file_lock(self, name: str, busy=None) -> Iterator[None]:
        """Hold ``locks/<name>``, a flock (NFS and the usual parallel file systems carry it across
        machines); ``busy()`` is called once if another process holds it (it may raise instead of
        waiting). Where the file system has no locks nothing is held: the work still gets done,
        only the race the lock closes stays open."""
        from filelock import FileLock, Timeout

        path = self.root / "locks" / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._not_writable(path.parent, e) from None
        lock: FileLock | None = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:  # caught before OSError: filelock's Timeout is a TimeoutError
            if busy is not None:
                busy()
            lock.acquire()
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP):
                raise self._not_writable(path, e) from None  # e.g. the lock file of a read-only folder
            lock = None
        try:
            yield
        finally:
            if lock is not None:
                lock.release()

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
        self._remove(self.partial_path(group))

    def _remove(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            raise self._not_writable(path, e) from None

    def drop_stale_partials(self, evaluation: str, finished_cells: Iterable[str]) -> None:
        """Remove resume points of ``evaluation`` that cover a cell already finished (their pass can
        never be resumed); resume points of other evaluations or other pending sets stay."""
        finished = set(finished_cells)
        if not finished:
            return
        for path in (self.root / "partial").glob(f"{evaluation}-*.npz"):
            state = self.load_partial(path.stem)
            cells = set(map(str, state["cells"])) if state is not None and "cells" in state else set()
            if cells & finished:
                self._remove(path)

    # -- export -----------------------------------------------------------------------------
    def export_csv(self, path: str | os.PathLike, records: Iterable[dict] | None = None) -> Path:
        """The tidy columns of ``records`` (default: all) with their row labels (records.TABLE_COLUMNS)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=[c.name for c in TABLE_COLUMNS])
        writer.writeheader()
        writer.writerows(table_row(r) for r in label_records(self.records() if records is None else records))
        atomic_write_bytes(Path(path), buf.getvalue().encode(), instead="another --csv file")
        return Path(path)


__all__ = ["DEFAULT_RESULTS_DIR", "PassBusy", "RESULTS_ENV", "ResultsStore", "atomic_write_npz",
           "results_dir"]
