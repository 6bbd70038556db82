"""Units of work for the engines: what a worker runs and how its predictions become records.

A worker gets a ``TaskSpec`` (a Group -- a model name, or a model object for a local cluster --
its dataset, the run options and the image shard), builds the model itself and runs the pass
of lr0fm.evaluation against a ``WorkerStore``: it reads which cells are complete from the
writer's snapshot, fetches and sends resume points through a *channel* (the Ray driver, or the
results folder for SLURM) and hands back each model's predictions of its shard instead of
writing records. ``commit`` merges the shards of a unit and writes its records with the real
ResultsStore (atomic writes, predictions digest): the same records as one in-process pass,
with ``run.attempts`` saying how many times its tasks were started.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from ..errors import DatasetError
from ..evaluation.passes import ImageShard, ImageShardResult

@dataclass
class TaskSpec:
    key: str                      # REQUEST.IofK: one image shard of a unit; leases, attempts and result files use it
    groups: list                  # the unit's lr0fm.groups.Group(s): models of one dataset, one pass
    resolutions: list
    device: str
    protocol: dict | None
    options: dict                 # EvalConfig fields
    shard: ImageShard
    unit: int = 0                 # the unit's index in its run (progress lines)


@dataclass
class TaskResult:
    attempt: int
    host: str
    shards: list[ImageShardResult]  # one per model of the pass with pending cells (none: all complete)
    cells: list[str]                # every cell of the unit, pending or not, in resolution order
    ran_on: str = ""                # where it ran, as records say it: "HOST", "HOST (slurm job J)", "HOST (ray node N)"

    def to_bytes(self) -> bytes:
        """One .npz: the shards' arrays and the rest as JSON (``from_file`` reads it back with
        allow_pickle=False, so a file on a shared results folder cannot run code)."""
        meta = {"attempt": self.attempt, "host": self.host, "cells": self.cells, "ran_on": self.ran_on,
                "shards": [s.plain() for s in self.shards]}
        arrays = {f"{i}.{name}": getattr(s, name) for i, s in enumerate(self.shards) for name in ImageShardResult.ARRAYS}
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.array(json.dumps(meta, default=_json_scalar)), **arrays)
        return buffer.getvalue()

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TaskResult":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            shards = [ImageShardResult.from_plain(d, {name: z[f"{i}.{name}"] for name in ImageShardResult.ARRAYS})
                      for i, d in enumerate(meta["shards"])]
        return cls(meta["attempt"], meta["host"], shards, meta["cells"], meta.get("ran_on", ""))


def _json_scalar(value):
    if isinstance(value, np.generic):  # e.g. a count kept as a numpy integer
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON data")


class Channel(Protocol):
    def begin(self, key: str) -> int: ...
    def resume_point(self, key: str) -> dict | None: ...
    def save(self, key: str, arrays: dict) -> None: ...


class WorkerStore:
    """The results store as a pass on a worker sees it: nothing is written on the worker."""

    def __init__(self, complete_cells, channel: Channel, classifier_cache: Path | None):
        self._complete, self._channel = complete_cells, channel
        self.classifier_cache = classifier_cache
        self.shards: list[ImageShardResult] = []
        self.cells: list[str] = []   # the pass's cells, in resolution order (what it reads back)

    def complete(self, cell: str, warn: bool = True) -> bool:
        return cell in self._complete

    def pass_lock(self, evaluation: str, wait: bool = True):
        return contextlib.nullcontext()  # one writer schedules every pass: nobody else runs it

    def drop_stale_partials(self, evaluation: str, finished_cells) -> None:
        pass  # the writer drops them when it commits

    def load_partial(self, key: str) -> dict | None:
        return self._channel.resume_point(key)

    def save_partial(self, key: str, **arrays) -> None:
        self._channel.save(key, arrays)

    def drop_partial(self, key: str) -> None:
        pass

    def put_shard(self, result: ImageShardResult) -> None:
        self.shards.append(result)

    def get(self, cell: str) -> None:
        self.cells.append(cell)
        return None


def check_visible(data) -> None:
    """One line when this worker cannot read the dataset's files (no shared data root here)."""
    root = getattr(data, "root", None)
    missing = root and "://" not in str(root) and not Path(str(root)).exists()
    if not missing and len(data):
        try:
            data.load_image(0)
            return
        except OSError:
            missing = True
        except Exception:  # a decoding problem of one image is the pass's business (skipped, counted)
            return
    if missing:
        raise DatasetError(f"worker {socket.gethostname()} cannot read {data.spec.label} at {root}: give the workers "
                           "the same data root (a shared filesystem or a copy on each node) and rerun")


def run_task(spec: TaskSpec, complete_cells, channel: Channel, classifier_cache: Path | None,
             where: str = "") -> TaskResult:
    """Run one task on this worker: build the unit's models, run its shard of the pass (all of
    them in one pass: each image decoded once, views shared where the pixels are the same),
    return the predictions. ``where``: the scheduler's name for this worker (job, node)."""
    from ..evaluation import EvalConfig, Job, evaluate_many
    from ..groups import load_models

    attempt = channel.begin(spec.key)
    data = spec.groups[0].data
    check_visible(data)
    jobs = [Job(model, EvalConfig(resolutions=spec.resolutions, device=spec.device, variant=variant,
                                  **{**spec.options, "progress": False}), view_fn)
            for _, _, model, view_fn, variant in load_models(spec.groups, range(len(spec.groups)), spec.resolutions,
                                                             spec.device, spec.protocol)]
    store = WorkerStore(complete_cells, channel, classifier_cache)
    evaluate_many(jobs, data, store, shard=spec.shard)
    host = socket.gethostname()
    return TaskResult(attempt, host, store.shards, store.cells, f"{host} ({where})" if where else host)


# Which cells a unit's request (model name or files, data, options) wrote: a rerun that finds the
# same request with every cell complete does not send the unit again (SLURM: no element for it).
UNITS_DIR = "units"


def request_key(spec: TaskSpec) -> str | None:
    """A digest of what a unit was asked to compute, without building its model: the model name
    and the size and time of every local file it names (weights, LR tokens, SR), the data's
    identity part (its images' contents, lr0fm.identity.data_part), the resolutions and the
    options that enter a result's identity; for a hub model the commit the hub cache holds, so a
    repository updated under the same name is a new request. None for a model object."""
    from ..digests import digest
    from ..identity import data_part
    from ..models import hub_revisions

    if not all(isinstance(g.model, str) for g in spec.groups):
        return None
    group = spec.groups[0]
    names = [part for g in spec.groups for part in (*g.model.split(":"), g.lr_tokens, g.sr)]
    files = sorted({(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in names if p and os.path.exists(p)})
    limit = spec.options.get("limit")
    data = group.data if limit is None else group.data.subset(range(min(limit, len(group.data))))
    numbers = {k: spec.options.get(k) for k in ("amp", "limit", "topk", "decoder", "views")}
    hub = {repo: commit for g in spec.groups for repo, commit in sorted(hub_revisions(g.model).items())}
    return digest({"models": [[g.model, g.lr_tokens, g.sr] for g in spec.groups], "files": files, "hub": hub,
                   "data": data_part(data), "resolutions": spec.resolutions, "protocol": spec.protocol or {},
                   "options": numbers, "device": spec.device.split(":")[0]})


def recorded_unit(store, key: str | None) -> list[str] | None:
    """The cells a unit of this request wrote, when they are all complete; else None."""
    import json

    if key is None:
        return None
    path = store.root / UNITS_DIR / f"{key}.json"
    if not path.is_file():
        return None
    try:
        cells = json.loads(path.read_text())["cells"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return cells if cells and all(store.complete(c) for c in cells) else None


def commit(store, data, results: Sequence[TaskResult], engine: str, request: str | None = None) -> list[str]:
    """Merge the task results of one unit (its shards, any order) and write each of its models'
    records (lr0fm.evaluation.write_records); the cells written. A cell already complete stays
    as it is, so an attempt that reports late changes no finished record."""
    from ..evaluation.passes import write_records

    by_model: dict[str, list] = {}  # each model's shards (any order), models in the pass's order
    for s in (s for r in results for s in r.shards):
        by_model.setdefault(s.ev.id, []).append(s)
    run = {"finished": round(time.time(), 3), "engine": engine, "attempts": max(r.attempt for r in results),
           "hosts": sorted({r.host for r in results}), "ran_on": sorted({r.ran_on or r.host for r in results})}
    written = []
    for shards in by_model.values():
        written += write_records(store, data, shards, run)
    _note_unit(store, request, results)
    return written


def _note_unit(store, request: str | None, results: Sequence[TaskResult]) -> None:
    """Remember which cells this request's unit has (``recorded_unit``), atomically."""
    from ..atomic import atomic_write_bytes

    cells = results[0].cells if results else []
    if request is not None and cells:
        (store.root / UNITS_DIR).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(store.root / UNITS_DIR / f"{request}.json", json.dumps({"cells": cells}).encode())


def bundle(groups: Sequence, models_per_task: int = 1) -> list[list]:
    """The units of a run: the groups of each dataset, ``models_per_task`` models to a unit (0: all
    of a dataset's models in one unit, one pass as lr0fm.runner forms them in one process). More
    models to a unit decode each image once for all of them; fewer bound a task's GPU memory."""
    by_data: dict[int, list] = {}
    for g in groups:
        by_data.setdefault(id(g.data), []).append(g)
    size = models_per_task or len(groups) or 1
    return [same[i:i + size] for same in by_data.values() for i in range(0, len(same), size)]


def unit_costs(units: Sequence[list], resolutions, options: dict, measured: dict | None = None) -> list[tuple[float, int]]:
    """(estimated seconds, images) of each unit's pass, as the dry run estimates it
    (lr0fm.sweep_plan.estimated_pass_seconds: a model's speed in ``measured``, lr0fm calibrate's,
    else its catalog GFLOPs); a model with neither counts as 1 GFLOP per image: only the ratios
    matter for scheduling."""
    from ..sweep_plan import DEFAULT_TFLOPS, catalog_entry, estimated_pass_seconds

    tflops = DEFAULT_TFLOPS[options.get("amp") or "fp32"]
    limit = options.get("limit")
    out = []
    for unit in units:
        data = unit[0].data
        n = len(data) if limit is None else min(limit, len(data))
        prompts = len(data.spec.classnames) * len(data.spec.templates)
        seconds = 0.0
        for g in unit:
            name = g.model if isinstance(g.model, str) else None  # a model object has no catalog entry or speed
            entry = (catalog_entry(name) if name else None) or {}
            entry = {**entry, "image_gflops": entry.get("image_gflops") or 1.0}
            seconds += estimated_pass_seconds(name, entry, n, prompts, len(resolutions), tflops, None, measured or {})
        out.append((seconds, n))
    return out


def describe(unit: Sequence) -> str:
    """'MODEL[, MODEL...] on DATASET' for progress and failure lines."""
    models = []
    for group in unit:
        model = group.model if isinstance(group.model, str) else group.model.info.model_id
        models.append(model + "".join(f" +{k}={os.path.basename(str(v))}" for k, v in
                                      (("lr_tokens", group.lr_tokens), ("sr", group.sr)) if v))
    return f"{', '.join(models)} on {unit[0].data.spec.label}"


def error_line(exc: BaseException) -> str:
    """The first line of an exception, with its type."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


__all__ = ["TaskResult", "TaskSpec", "WorkerStore", "check_visible", "commit", "describe", "error_line",
           "run_task", "unit_costs"]
