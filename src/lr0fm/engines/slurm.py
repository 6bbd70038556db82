"""SLURM job arrays through submitit: one array element per unit, each commits its own cells.

The submitting process plans the units (longest first), takes a snapshot of the complete cells
and submits one array (``--slurm-partition``, ``--slurm-time``, ``--slurm-gpus-per-task``,
``--slurm-array-parallelism``, ``--slurm-arg KEY=VALUE`` for any other sbatch setting). Each
element builds its model, runs its pass with its resume point on the results folder and writes
its records itself: one writer per cell (no two elements share a cell), atomic renames onto the
shared results folder, no lock. A preempted or timed-out element is requeued by submitit and
continues from its last resume point. Rerunning the command submits only the units whose cells
are not all written (lr0fm.engines.units.recorded_unit: the results folder remembers which cells
each unit's request wrote). ``--slurm-cluster local|debug`` runs the array
on this machine with submitit's local (subprocesses) or debug (in this process) executor.
Units are not split into image shards here (that needs one writer across elements: Ray does it).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from ..errors import InputError, UnitsFailed
from . import schedule
from .progress import Progress
from .units import (TaskSpec, bundle, commit, describe, error_line, recorded_unit, request_key, run_task,
                    unit_costs)

INSTALL = "--engine slurm needs submitit, which is not installed: pip install 'lr0fm[slurm]'"


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise InputError(INSTALL) from None
    return submitit


class _FolderChannel:
    """Resume points on the shared results folder (this element is their only writer)."""

    def __init__(self, store):
        self.store = store

    def begin(self, key: str) -> int:
        return 1 + int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)

    def resume_point(self, key: str):
        return self.store.load_partial(key)

    def save(self, key: str, arrays: dict) -> None:
        self.store.save_partial(key, **arrays)


class _Element:
    """One array element: run a unit and commit its cells. submitit calls ``checkpoint`` on
    preemption or timeout and requeues the element; its resume point is on the results folder."""

    def __init__(self, spec: TaskSpec, complete: frozenset, root: str, request: str | None = None):
        self.spec, self.complete, self.root, self.request = spec, complete, root, request

    def __call__(self) -> list[str]:
        from ..store import ResultsStore

        store = ResultsStore(self.root)
        result = run_task(self.spec, self.complete, _FolderChannel(store), store.classifier_cache)
        commit(store, self.spec.groups[0].data, [result], "slurm", request=self.request)
        return result.cells

    def checkpoint(self, *args, **kwargs):
        import submitit
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class SlurmEngine:
    name = "slurm"

    def __init__(self, cluster: str = "slurm", partition: str | None = None, time_min: int = 240,
                 gpus_per_task: int = 1, parallelism: int = 64, extra: Sequence[str] = (), folder: str | None = None,
                 models_per_task: int = 1):
        for flag, value in (("--slurm-time", time_min), ("--slurm-array-parallelism", parallelism)):
            if value < 1:
                raise InputError(f"{flag} {value} must be at least 1")
        if models_per_task < 0:
            raise InputError(f"--models-per-task {models_per_task} must be at least 0 (0: all of a dataset's models)")
        self.models_per_task = models_per_task
        if gpus_per_task < 0:
            raise InputError(f"--slurm-gpus-per-task {gpus_per_task} must be at least 0")
        self.extra = {}
        for item in extra:
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise InputError(f"--slurm-arg {item!r}: give KEY=VALUE (an sbatch setting, e.g. account=abc)")
            self.extra[key.strip().replace("-", "_")] = value
        self.cluster, self.partition, self.time_min = cluster, partition, time_min
        self.gpus_per_task, self.parallelism, self.folder = gpus_per_task, parallelism, folder
        import_submitit()  # the extra's one line before anything is read or written

    def device(self, device: str) -> str:
        """Each element sees its own GPUs (SLURM / submitit set CUDA_VISIBLE_DEVICES)."""
        return "cuda" if device.startswith("cuda") else device

    def _executor(self, submitit, folder: Path):
        if self.cluster == "slurm" and not _has_slurm():
            raise InputError("--engine slurm: no SLURM here (sbatch not found); run on the cluster's login node, or "
                             "use --slurm-cluster local to try the array on this machine")
        executor = submitit.AutoExecutor(folder=str(folder), cluster=None if self.cluster == "slurm" else self.cluster)
        params = {"timeout_min": self.time_min}
        if self.cluster == "slurm":
            params.update(slurm_array_parallelism=self.parallelism, slurm_gpus_per_task=self.gpus_per_task,
                          slurm_ntasks_per_node=1,
                          **({"slurm_partition": self.partition} if self.partition else {}),
                          **({"slurm_additional_parameters": self.extra} if self.extra else {}))
        executor.update_parameters(**params)
        return executor

    def run(self, groups: Sequence, resolutions, store, device: str = "cpu", protocol: dict | None = None,
            **options) -> list[dict]:
        from .ray import _complete_cells

        submitit = import_submitit()
        folder = Path(self.folder) if self.folder else store.root / "slurm"
        executor = self._executor(submitit, folder)
        units = bundle(groups, self.models_per_task)
        costs = unit_costs(units, resolutions, options)
        order = [t.unit for t in schedule.tasks([c for c, _ in costs], [n for _, n in costs], 1, split=False)]
        complete = _complete_cells(store)
        run_options = {k: v for k, v in options.items() if k != "progress"}
        specs = {u: TaskSpec(f"u{u}", units[u], list(resolutions), self.device(device), protocol, run_options,
                             schedule.ImageShard(0, 1)) for u in order}
        requests = {u: request_key(spec) for u, spec in specs.items()}
        # a unit whose request wrote cells that are all complete is not sent again (RESULTS/units)
        cells: dict[int, list[str]] = {u: c for u in order if (c := recorded_unit(store, requests[u])) is not None}
        todo = [u for u in order if u not in cells]
        if todo:
            with executor.batch():  # one job array, longest unit first
                jobs = [executor.submit(_Element(specs[u], complete, str(store.root), requests[u])) for u in todo]
        progress = Progress(f"slurm ({self.cluster})", {u: costs[u][0] for u in todo}, options.get("progress", True))
        if self.cluster != "debug" and todo:
            progress.update(force=True)
        failed: dict[int, str] = {}
        waiting = dict(zip(todo, jobs)) if todo else {}
        while waiting:
            for u, job in list(waiting.items()):
                if self.cluster != "debug" and not job.done():
                    continue
                del waiting[u]
                try:
                    cells[u] = job.result()
                except Exception as e:  # noqa: BLE001 -- reported with its unit at the end
                    failed[u] = _failure(e)
                    progress.finish(u, failed=True)
                    continue
                progress.finish(u, len(cells[u]))
            progress.running = len(waiting)
            progress.update()
            if waiting:
                time.sleep(0.5)
        if failed:
            lines = [f"  {describe(units[u])}: {why}" for u, why in sorted(failed.items())]
            raise UnitsFailed(f"{len(failed)} of {len(order)} units failed (the other units' cells are written; "
                              f"logs in {folder}; fix the cause and rerun the same command):\n" + "\n".join(lines))
        return [store.get(c) for u in sorted(cells) for c in cells[u]]


def _has_slurm() -> bool:
    import shutil
    return shutil.which("sbatch") is not None


def _failure(exc: Exception) -> str:
    """One line: submitit's FailedJobError carries the element's traceback; keep its last line."""
    text = str(exc).strip().splitlines()
    tail = [line for line in text if line and not line.startswith((" ", "Traceback", "---", "has failed"))]
    return tail[-1][:300] if tail else error_line(exc)


__all__ = ["INSTALL", "SlurmEngine", "import_submitit"]
