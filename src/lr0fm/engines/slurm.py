"""SLURM job arrays through submitit: one array element per task (a unit, or one image shard of it).

The submitting process plans the units (lr0fm.engines.lifecycle: longest first, long units split
over the array's slots) and submits one array (``--slurm-partition``, ``--slurm-time``,
``--slurm-gpus-per-task`` -- by default 1 for ``--device cuda``, 0 on CPU --,
``--slurm-array-parallelism`` -- by default the partition's size as ``sinfo`` gives it --,
``--slurm-arg KEY=VALUE`` for any other sbatch setting). Each element takes its task's lease on the
shared results folder, builds its models, runs its pass with its resume point on the folder and
leaves its predictions there (``RESULTS/units/TASK.npz``, atomic rename); the submitting process,
the one writer, merges them into the records. Elements outlive their submitter: rerunning the
command takes the results they left, waits for the ones still running (their leases) and submits
only the rest, so no unit is computed twice.

The submitting process asks SLURM for the state of all its elements in one ``sacct`` call per poll
(every few seconds; a progress line at least every 5 s) and never waits on one element:

* ``scontrol requeue`` or a node failure that SLURM requeues: the element is left to SLURM (state
  REQUEUED/PENDING); it runs again once, from its resume point (the SIGTERM that stops it is not
  passed to its data workers);
* preemption or a job past ``--slurm-time``: submitit checkpoints and requeues it; it continues
  from its resume point;
* killed, out of memory, node lost without a requeue (no result): resubmitted up to
  ``--max-retries`` times, from its resume point;
* ``scancel``: not resubmitted; its unit is listed at the end (exit 2), and a cancelled array ends
  the run within seconds, in one line.

``--slurm-cluster local|debug`` runs the array on this machine with submitit's local (subprocesses)
or debug (in this process) executor.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from .lease import Leases
from .lifecycle import Lifecycle, Outcome, plan_units, result_path, unit_of_task
from .units import TaskSpec, error_line, recorded_unit, run_task

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
    """One array element: run one task and leave its result on the results folder for the
    submitting process. submitit calls ``checkpoint`` on preemption or timeout and requeues the
    element; its resume point is on the results folder, and the pickled element carries the count
    of its attempts."""

    def __init__(self, spec: TaskSpec, root: str, submitter: int | None = None):
        self.spec, self.root, self.submitter = spec, root, submitter
        self.attempts = 0

    def __call__(self) -> str:
        from ..atomic import atomic_write_bytes
        from ..store import ResultsStore

        # a requeue by SLURM itself (scontrol requeue, node failure) reruns the submitted element: count it too
        self.attempts = max(self.attempts + 1, 1 + int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0))
        if self.submitter:
            _end_with(self.submitter)
        job = _job_id()
        with Leases(self.root, tag=job) as leases:
            if not leases.acquire(self.spec.key):
                return "busy"  # another element (an earlier submission's) runs this task
            store = ResultsStore(self.root)
            if (result_path(store.root, self.spec.key).is_file()
                    or recorded_unit(store, unit_of_task(self.spec.key)) is not None):
                return "busy"  # an element of another submission has done it already
            # which cells are complete: the shared results folder says it (no snapshot in every element)
            result = run_task(self.spec, _CompleteOn(store), _FolderChannel(store, self.attempts), store.classifier_cache,
                              where=f"slurm job {job}" if job else "")
            atomic_write_bytes(result_path(store.root, self.spec.key), result.to_bytes())
        return "done"

    def checkpoint(self, *args, **kwargs):
        import submitit
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class _CompleteOn:
    """``cell in`` it: the cell is complete in ``store`` (as the worker's pass asks)."""

    def __init__(self, store):
        self.store = store

    def __contains__(self, cell: str) -> bool:
        return self.store.complete(cell, warn=False)


def _job_id() -> str | None:
    """This element's SLURM job (ARRAYJOB_INDEX), or None outside SLURM."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{index}" if array and index else os.environ.get("SLURM_JOB_ID")


class SlurmEngine:
    name = "slurm"

    def __init__(self, cluster: str = "slurm", partition: str | None = None, time_min: int = 240,
                 gpus_per_task: int | None = None, parallelism: int | None = None, extra: Sequence[str] = (),
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
        if gpus_per_task is not None and gpus_per_task < 0:
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
        # on SLURM the partition's size by default; submitit's local executor starts every element at
        # once, so there a unit is split only when --slurm-array-parallelism asks for it
        self.parallelism = parallelism
        import_submitit()  # the extra's one line before anything is read or written

    def device(self, device: str) -> str:
        """Each element sees its own GPUs (SLURM / submitit set CUDA_VISIBLE_DEVICES)."""
        return "cuda" if device.startswith("cuda") else device

    def _executor(self, submitit, folder: Path, gpus: int, slots: int):
        executor = submitit.AutoExecutor(folder=str(folder), cluster=None if self.cluster == "slurm" else self.cluster)
        params = {"timeout_min": self.time_min}
        if self.cluster == "slurm":
            # the checkpoint signal before the time limit: submitit's 90 s, or a quarter of a shorter limit
            params.update(slurm_array_parallelism=slots, slurm_ntasks_per_node=1,
                          slurm_signal_delay_s=min(90, max(10, self.time_min * 60 // 4)),
                          **({"slurm_gpus_per_task": gpus} if gpus else {}),
                          **({"slurm_partition": self.partition} if self.partition else {}),
                          **({"slurm_additional_parameters": self.extra} if self.extra else {}))
        executor.update_parameters(**params)
        return executor

    def run(self, groups: Sequence, resolutions, store, device: str = "cpu", protocol: dict | None = None,
            **options) -> list[dict]:
        submitit = import_submitit()
        if self.cluster == "slurm" and not _has_slurm():
            raise InputError("--engine slurm: no SLURM here (sbatch not found); run on the cluster's login node, or "
                             "use --slurm-cluster local to try the array on this machine")
        gpus = self.gpus_per_task if self.gpus_per_task is not None else (1 if device.startswith("cuda") else 0)
        slots = self.parallelism or (partition_slots(self.partition, gpus) if self.cluster == "slurm" else 1)
        folder = Path(self.folder) if self.folder else store.root / "slurm"
        executor = self._executor(submitit, folder, gpus, slots)
        device = self.device(device)
        run_options = {k: v for k, v in options.items() if k != "progress"}
        units = plan_units(groups, resolutions, store, device, protocol, run_options, self.models_per_task)
        session = _SlurmSession(self, submitit, executor, store, slots)
        return Lifecycle(f"slurm ({self.cluster})", session, store, units, resolutions, device, protocol, run_options,
                         self.split, leases_in_worker=True, show=options.get("progress", True)).run()


# SLURM states in which an element may still run (or run again): everything else has ended
_UNFINISHED = ("PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED", "COMPLETING",
               "CONFIGURING", "PREEMPTED", "SIGNALING", "STAGE_OUT", "READY", "UNKNOWN")
_GRACE_S = 10.0  # an ended element's result may reach a shared folder a little after sacct says so


class _SlurmSession:
    """The submitting process's side of an array: submit, one state query per poll, outcomes."""

    def __init__(self, engine: SlurmEngine, submitit, executor, store, slots: int):
        self.engine, self.submitit, self.executor, self.store = engine, submitit, executor, store
        self._slots = slots
        self.real = engine.cluster == "slurm"
        self.interval = 5.0 if self.real else 0.5
        self.jobs: dict[str, dict] = {}   # task key -> {job, element, submissions, ended (first seen ended)}

    def slots(self) -> int:
        return self._slots

    def submit(self, specs) -> None:
        submitter = os.getpid() if self.engine.cluster == "local" else None
        self._send([_Element(spec, str(self.store.root), submitter) for spec in specs])

    def _send(self, elements: list) -> None:
        with self.executor.batch():  # one job array
            jobs = [self.executor.submit(element) for element in elements]
        for element, job in zip(elements, jobs):
            spec = element.spec
            previous = self.jobs.get(spec.key, {})
            self.jobs[spec.key] = {"job": job, "element": element, "submissions": previous.get("submissions", 0) + 1,
                                   "ended": None}

    def _states(self) -> dict[str, str]:
        """Every element's state: one sacct call for all of them (submitit's watcher) on SLURM."""
        if not self.jobs:
            return {}
        if self.real:
            watcher = next(iter(self.jobs.values()))["job"].watcher
            watcher.update()
            return {k: watcher.get_state(e["job"].job_id, mode="cache") for k, e in self.jobs.items()}
        return {k: ("RUNNING" if not e["job"].done() else "COMPLETED") for k, e in self.jobs.items()}

    def poll(self) -> list[Outcome]:
        time.sleep(self.interval)
        out = []
        states = self._states()
        self._last = states
        for key, entry in list(self.jobs.items()):
            job, state = entry["job"], states.get(key, "UNKNOWN")
            # an answer: submitit's result file (the debug executor keeps it in memory: done() runs it)
            if job.paths.result_pickle.exists() or (self.engine.cluster == "debug" and job.done()):
                del self.jobs[key]
                out.append(self._finished(key, job))
            elif state.split()[0] not in _UNFINISHED:
                entry["ended"] = entry["ended"] or time.time()
                if time.time() - entry["ended"] < _GRACE_S:
                    continue
                del self.jobs[key]
                outcome = self._ended(key, entry, state)
                if outcome is not None:
                    out.append(outcome)
        return out

    def _finished(self, key: str, job) -> Outcome:
        """The element returned (or raised): its result file, 'busy', or its exception in one line."""
        from .units import TaskResult
        try:
            answer = job.result()
        except Exception as e:  # noqa: BLE001 -- an exception of the element: its unit fails
            return Outcome(key, error=_failure(e))
        if answer == "busy":
            return Outcome(key, busy=True)
        try:
            return Outcome(key, result=TaskResult.from_file(result_path(self.store.root, key)))
        except OSError:  # another submitter on this folder took it (and commits it): wait for its cells
            return Outcome(key, busy=True)

    def _ended(self, key: str, entry: dict, state: str) -> Outcome | None:
        """An element that ended without a result: cancelled (reported), or lost (resubmitted)."""
        job = entry["job"]
        if state.startswith("CANCELLED"):
            return Outcome(key, error=f"its element {job.job_id} was cancelled ({state}); not resubmitted",
                           cancelled=True)
        if entry["submissions"] <= self.engine.max_retries:
            # killed, out of memory, its node lost: again, from the resume point it left on the results folder
            entry["element"].attempts = entry["submissions"]  # its process died with its own count
            self.jobs[key] = entry  # keeps the count of its submissions
            self._send([entry["element"]])
            return None
        times = f" {entry['submissions']} times" if entry["submissions"] > 1 else ""
        return Outcome(key, error=f"its element ended without a result{times} (state {state}: killed, out of memory "
                                  f"or its node lost); its log: {job.paths.stderr}")

    def running(self) -> set[str]:
        states = getattr(self, "_last", {})
        return {k for k, state in states.items() if state.startswith("RUNNING") and k in self.jobs}

    def close(self, cancel: bool) -> None:
        # elements outlive their submitter, even one stopped by an error or Ctrl-C: they hold their
        # leases and leave their results, which the same command takes up again (scancel stops them)
        self.jobs.clear()


def partition_slots(partition: str | None, gpus_per_task: int) -> int:
    """Elements the partition runs at once: its nodes' GPUs / --slurm-gpus-per-task, or on CPU
    (0 GPUs per task) its CPUs (one element each), as ``sinfo`` says; the default partition when
    none is given."""
    try:
        text = subprocess.run(["sinfo", "-h", "-N", "-o", "%P|%n|%c|%G"], capture_output=True, text=True,
                              timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise InputError(f"--engine slurm: sinfo failed ({error_line(e)}); give --slurm-array-parallelism") from None
    nodes: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        part, node, cpus, gres = (line.split("|") + ["", "", "", ""])[:4]
        default = part.endswith("*")
        if (partition and part.rstrip("*") != partition) or (not partition and not default):
            continue
        gpus = sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:(,]+)?:(\d+)", gres))
        nodes[node] = (int(cpus or 0), gpus)
    if not nodes:
        where = f"partition {partition}" if partition else "a default partition"
        raise InputError(f"--engine slurm: sinfo lists no node of {where}; give --slurm-partition (sinfo -s lists them)")
    if gpus_per_task:
        return max(1, sum(g // gpus_per_task for _, g in nodes.values()))
    return max(1, sum(c for c, _ in nodes.values()))


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


def _failure(exc: Exception) -> str:
    """One line, as the Ray engine gives it (``Type: message``): submitit's FailedJobError carries
    the element's traceback between dashed lines; its exception is after the last frame line."""
    text = str(exc)
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
