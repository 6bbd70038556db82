"""SLURM job arrays through submitit: one array element per unit, each commits its own cells.

The submitting process plans the units (longest first), takes a snapshot of the complete cells
and submits one array (``--slurm-partition``, ``--slurm-time``, ``--slurm-gpus-per-task``,
``--slurm-array-parallelism``, ``--slurm-arg KEY=VALUE`` for any other sbatch setting). Each
element builds its model, runs its pass with its resume point on the results folder and writes
its records itself: one writer per cell (no two elements share a cell), atomic renames onto the
shared results folder, no lock. A preempted or timed-out element is requeued by submitit and
continues from its last resume point; an element that ends without a result (killed, out of
memory, its node lost) is resubmitted by the submitting process up to ``--max-retries`` times and
continues from its last resume point too. Rerunning the command submits only the units whose cells
are not all written (lr0fm.engines.units.recorded_unit: the results folder remembers which cells
each unit's request wrote). ``--slurm-cluster local|debug`` runs the array
on this machine with submitit's local (subprocesses) or debug (in this process) executor.

A unit longer than the average load per element slot (``--slurm-array-parallelism``) is split
into image shards, one element each; a shard element writes its predictions under
``RESULTS/units/REQUEST.shards/`` (atomic rename) and the submitting process, the one writer of
that unit's cells, merges them into the records one pass writes. If the submitting process is
gone, rerunning the command merges the shards already there and submits only the missing ones.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Sequence

from ..errors import InputError, UnitsFailed
from . import schedule
from .progress import Progress
from .units import (UNITS_DIR, TaskResult, TaskSpec, bundle, commit, describe, error_line, recorded_unit,
                    request_key, run_task, unit_costs)

DEFAULT_PARALLELISM = 64
INSTALL = "--engine slurm needs submitit, which is not installed: pip install 'lr0fm[slurm]'"


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise InputError(INSTALL) from None
    return submitit


class _FolderChannel:
    """Resume points on the shared results folder (this element is their only writer)."""

    def __init__(self, store, attempt: int):
        self.store, self.attempt = store, attempt

    def begin(self, key: str) -> int:
        return self.attempt

    def resume_point(self, key: str):
        return self.store.load_partial(key)

    def save(self, key: str, arrays: dict) -> None:
        self.store.save_partial(key, **arrays)


class _Element:
    """One array element: run a unit (or one image shard of it) and commit its cells (or write its
    shard for the submitting process to merge). submitit calls ``checkpoint`` on preemption or
    timeout and requeues the element; its resume point is on the results folder, and the pickled
    element carries the count of its attempts."""

    def __init__(self, spec: TaskSpec, complete: frozenset, root: str, request: str | None = None,
                 shard_file: str | None = None, submitter: int | None = None):
        self.spec, self.complete, self.root, self.request = spec, complete, root, request
        self.shard_file, self.attempts, self.submitter = shard_file, 0, submitter

    def __call__(self) -> list[str]:
        from ..store import ResultsStore, atomic_write_bytes

        # a requeue by SLURM itself (node failure) reruns the submitted element: count it too
        self.attempts = max(self.attempts + 1, 1 + int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0))
        if self.submitter:
            _end_with(self.submitter)
        store = ResultsStore(self.root)
        result = run_task(self.spec, self.complete, _FolderChannel(store, self.attempts), store.classifier_cache)
        if self.shard_file:  # one shard of a split unit: the submitting process merges the unit's shards
            atomic_write_bytes(Path(self.shard_file), result.to_bytes())
            return []
        commit(store, self.spec.groups[0].data, [result], "slurm", request=self.request)
        return result.cells

    def checkpoint(self, *args, **kwargs):
        import submitit
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class SlurmEngine:
    name = "slurm"

    def __init__(self, cluster: str = "slurm", partition: str | None = None, time_min: int = 240,
                 gpus_per_task: int = 1, parallelism: int | None = None, extra: Sequence[str] = (),
                 folder: str | None = None, models_per_task: int = 1, split: bool = True, max_retries: int = 3):
        for flag, value in (("--slurm-time", time_min), ("--slurm-array-parallelism", parallelism or 1)):
            if value < 1:
                raise InputError(f"{flag} {value} must be at least 1")
        if models_per_task < 0:
            raise InputError(f"--models-per-task {models_per_task} must be at least 0 (0: all of a dataset's models)")
        self.models_per_task = models_per_task
        if max_retries < 0:
            raise InputError(f"--max-retries {max_retries} must be at least 0")
        self.max_retries = max_retries
        if gpus_per_task < 0:
            raise InputError(f"--slurm-gpus-per-task {gpus_per_task} must be at least 0")
        self.extra = {}
        for item in extra:
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise InputError(f"--slurm-arg {item!r}: give KEY=VALUE (an sbatch setting, e.g. account=abc)")
            self.extra[key.strip().replace("-", "_")] = value
        self.cluster, self.partition, self.time_min = cluster, partition, time_min
        self.gpus_per_task, self.folder, self.split = gpus_per_task, folder, split
        # elements at once: what the array asks SLURM for, and the slots long units are split over;
        # submitit's local executor starts every element at once, so there a unit is split only
        # when --slurm-array-parallelism asks for it
        self.parallelism = parallelism or (DEFAULT_PARALLELISM if cluster == "slurm" else 1)
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
        run_options = {k: v for k, v in options.items() if k != "progress"}
        device = self.device(device)

        def spec(u: int, shard: schedule.ImageShard) -> TaskSpec:
            return TaskSpec(f"u{u}s{shard.index}of{shard.count}", units[u], list(resolutions), device, protocol,
                            run_options, shard)

        requests = {u: request_key(spec(u, schedule.ImageShard(0, 1))) for u in range(len(units))}
        # a unit whose request wrote cells that are all complete is not sent again (RESULTS/units)
        cells: dict[int, list[str]] = {u: c for u in range(len(units))
                                       if (c := recorded_unit(store, requests[u])) is not None}
        todo = [u for u in range(len(units)) if u not in cells]
        tasks = [dataclasses.replace(t, unit=todo[t.unit]) for t in  # longest first, long units in shards
                 schedule.tasks([costs[u][0] for u in todo], [costs[u][1] for u in todo], self.parallelism,
                                self.split)]
        shards = {u: _ShardFolder(store, requests[u], count) for u, count in
                  ((t.unit, t.shard.count) for t in tasks if t.shard.count > 1)}
        # shards an earlier run's elements finished are not sent again
        tasks = [t for t in tasks if t.shard.count == 1 or not shards[t.unit].has(t.shard.index)]
        complete = _complete_cells(store)
        submitter = os.getpid() if self.cluster == "local" else None
        elements = [_Element(spec(t.unit, t.shard), complete, str(store.root), requests[t.unit],
                             shards[t.unit].path(t.shard.index) if t.unit in shards else None, submitter)
                    for t in tasks]
        jobs = []
        if tasks:
            with executor.batch():  # one job array
                jobs = [executor.submit(element) for element in elements]
        submissions = [1] * len(tasks)
        waiting = dict(zip(range(len(tasks)), jobs))
        progress = Progress(f"slurm ({self.cluster})", {u: costs[u][0] for u in todo},
                            {u: len(units[u]) * len(resolutions) for u in todo}, options.get("progress", True),
                            running=lambda: {tasks[i].unit for i, job in waiting.items() if _running(job)})
        if self.cluster != "debug" and tasks:
            progress.update(force=True)
        failed: dict[int, str] = {}

        def merge(u: int) -> None:  # the submitting process writes a split unit's cells
            try:
                results = shards[u].load()
                written = commit(store, units[u][0].data, results, "slurm", request=requests[u])
            except Exception as e:  # noqa: BLE001 -- e.g. no image readable: the unit fails
                failed[u] = error_line(e)
                progress.finish(u, failed=True)
                return
            cells[u] = results[0].cells
            shards[u].remove()
            progress.finish(u, len(written))

        for u in [u for u in shards if shards[u].ready()]:  # every shard there already
            merge(u)
        while waiting:
            for i, job in list(waiting.items()):
                if self.cluster != "debug" and not job.done():
                    continue
                del waiting[i]
                u = tasks[i].unit
                try:
                    done = job.result()
                except Exception as e:  # noqa: BLE001 -- reported with its unit at the end
                    if _lost(submitit, e) and submissions[i] <= self.max_retries and u not in failed:
                        # killed or its node lost: again, from the resume point it left on the results folder
                        elements[i].attempts = submissions[i]  # its process died with its own count
                        submissions[i] += 1
                        waiting[i] = executor.submit(elements[i])
                        continue
                    if u not in failed:
                        failed[u] = _failure(e, submissions[i], job)
                        progress.finish(u, failed=True)
                    continue
                if u in failed:
                    continue
                if u not in shards:
                    cells[u] = done
                    progress.finish(u, len(done))
                elif shards[u].ready():
                    merge(u)
            progress.update()
            if waiting:
                time.sleep(0.5)
        if failed:
            lines = [f"  {describe(units[u])}: {why}" for u, why in sorted(failed.items())]
            raise UnitsFailed(f"{len(failed)} of {len(todo)} units failed (the other units' cells are written; "
                              f"logs in {folder}; fix the cause and rerun the same command):\n" + "\n".join(lines))
        return [store.get(c) for u in sorted(cells) for c in cells[u]]


class _ShardFolder:
    """The image shards of one split unit on the results folder (``RESULTS/units/REQUEST.shards``):
    each shard element writes its own file; the submitting process merges them when all are there.
    A unit without a request (a model object) gets a folder of this run only."""

    def __init__(self, store, request: str | None, count: int):
        self.dir = store.root / UNITS_DIR / f"{request or 'run-' + uuid.uuid4().hex}.shards"
        self.count = count

    def path(self, index: int) -> str:
        return str(self.dir / f"{index}of{self.count}.npz")

    def has(self, index: int) -> bool:
        return Path(self.path(index)).is_file()

    def ready(self) -> bool:
        return all(self.has(i) for i in range(self.count))

    def load(self) -> list[TaskResult]:
        results = [TaskResult.from_file(self.path(i)) for i in range(self.count)]  # this or an earlier run's
        pending = {tuple((s.ev.id, tuple(s.pending)) for s in r.shards) for r in results}
        if len(pending) > 1:  # shards of runs that saw different complete cells: compute them again
            self.remove()
            raise RuntimeError("its shards came from runs with different finished cells and were dropped; rerun")
        return results

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _end_with(pid: int) -> None:
    """--slurm-cluster local: the element ends when the submitting process is gone (SIGKILL, so
    nothing is half-written; the resume point stays for the rerun). On a real cluster elements
    outlive their submitter, and a rerun finds their cells."""
    import signal
    import threading

    def watch():
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="lr0fm-end-with-submitter", daemon=True).start()


def _has_slurm() -> bool:
    import shutil
    return shutil.which("sbatch") is not None


def _running(job) -> bool:
    """The element has started (SLURM's state, cached by submitit's watcher; a local subprocess)."""
    try:
        return job.state.startswith("RUNNING")
    except Exception:  # noqa: BLE001 -- the state is for the progress line only
        return False


def _lost(submitit, exc: Exception) -> bool:
    """The element ended without a result (killed, out of memory, its node lost), not cancelled
    by the user (scancel) and not an exception of its own (FailedJobError)."""
    return isinstance(exc, submitit.core.utils.UncompletedJobError) and "CANCELLED" not in str(exc)


def _failure(exc: Exception, submissions: int = 1, job=None) -> str:
    """One line, as the Ray engine gives it (``Type: message``): submitit's FailedJobError carries
    the element's traceback between dashed lines; its exception is after the last frame line. An
    element that ended without a result says so, with its state and log."""
    text = str(exc)
    if type(exc).__name__ == "UncompletedJobError":
        state = re.search(r"\(state: ([^)]*)\)", text)
        times = f" {submissions} times" if submissions > 1 else ""
        log = f"; its log: {job.paths.stderr}" if job is not None else ""
        return (f"its element ended without a result{times} (state {state.group(1) if state else 'unknown'}: killed, "
                f"out of memory, its node lost or cancelled){log}")
    blocks = [b for b in re.split(r"^-{10,}$", text, flags=re.M) if "Traceback (most recent call last)" in b]
    if not blocks:
        return error_line(exc)
    lines = blocks[-1].strip("\n").splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith(" ")]
    rest = [line for line in lines[(frames[-1] + 1 if frames else 0):] if line.strip()]
    if not rest:
        return error_line(exc)
    kind, sep, message = rest[0].partition(": ")
    return f"{kind.rsplit('.', 1)[-1]}{sep}{message}"[:300]


__all__ = ["INSTALL", "SlurmEngine", "import_submitit"]
