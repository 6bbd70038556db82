"""Ray as the engine: every unit (or image shard of one) is a Ray task; the driver is the one writer.

Without ``--address`` a Ray instance is started on this machine for the run (and stopped after);
with one (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``) the run joins that cluster; a process
that is already connected (``ray.init`` in a notebook) is used as it is.

Tasks take ``--gpus-per-task`` GPUs (default 1 where the cluster has GPUs, fractions share one)
or, on a cluster without GPUs, one CPU each. A task whose worker or node is lost is retried by
Ray (``--max-retries``); the retry fetches the resume point its earlier attempt streamed to the
driver (every ``--checkpoint-every`` images) and continues from there. An exception inside a task
is not retried: the unit is reported at the end. Only the driver writes the results folder
(records, predictions and resume points, with the store's atomic writes), so the workers need
the data and the weights but no shared filesystem for results.
"""
from __future__ import annotations

import dataclasses
import socket
from typing import Sequence

import numpy as np

from ..errors import InputError, UnitsFailed
from . import schedule
from .progress import Progress
from .units import (TaskResult, TaskSpec, bundle, commit, describe, error_line, recorded_unit, request_key,
                    run_task, unit_costs)

INSTALL = "--engine ray needs Ray, which is not installed: pip install 'lr0fm[ray]'"


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError(INSTALL) from None
    return ray


def _check_address(address: str) -> None:
    """A HOST:PORT that does not answer is one line in seconds (Ray itself waits long)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--address {address!r}: give auto, HOST:PORT or ray://HOST:PORT (a Ray head node)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise InputError(f"--address {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
                         "'ray start --head' or leave --address out for a local Ray") from None


class _Coordinator:
    """The driver's side of the workers' resume points and attempts (a Ray actor beside the driver)."""

    def __init__(self, seeds: dict):
        self.points, self.fresh, self.attempts = dict(seeds), {}, {}
        self.begun: list[str] = []

    def begin(self, key: str) -> int:
        self.attempts[key] = self.attempts.get(key, 0) + 1
        self.begun.append(key)
        return self.attempts[key]

    def resume_point(self, key: str):
        return self.points.get(key)

    def save(self, key: str, arrays: dict) -> None:
        self.points[key] = self.fresh[key] = arrays

    def drain(self) -> tuple[dict, list[str]]:
        """The resume points saved since the last drain, and the tasks begun since then."""
        out, self.fresh = self.fresh, {}
        begun, self.begun = self.begun, []
        return out, begun

    def forget(self, keys: list) -> None:
        for key in keys:
            self.points.pop(key, None)
            self.fresh.pop(key, None)


class _ActorChannel:
    """A task's calls to the coordinator. They wait for its answer off the main thread: Ray lends
    the CPU of a task blocked in ``ray.get`` on its main thread to the next task, and on CPU-only
    nodes every resume point would start one more unit than the node has CPUs."""

    def __init__(self, actor):
        import concurrent.futures
        self.actor = actor
        self.waiter = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lr0fm-coordinator")

    def _call(self, method: str, *args):
        import ray
        ref = getattr(self.actor, method).remote(*args)
        return self.waiter.submit(ray.get, ref).result()

    def begin(self, key):
        return self._call("begin", key)

    def resume_point(self, key):
        state = self._call("resume_point", key)
        # arrays from the object store are read-only views; the pass writes into its arrays
        return None if state is None else {k: np.array(v) for k, v in state.items()}

    def save(self, key, arrays):
        self._call("save", key, arrays)


def _task(spec: TaskSpec, complete: frozenset, actor) -> TaskResult:
    import gc

    import torch

    from ..filedigest import cache_dir
    channel = _ActorChannel(actor)
    try:
        return run_task(spec, complete, channel, cache_dir() / "classifiers")
    finally:
        channel.waiter.shutdown()
        gc.collect()  # the unit's model goes before the next task on this worker builds its own
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _complete_cells(store) -> frozenset:
    """The cells of the results folder that are complete (record and predictions digest)."""
    return frozenset(path.stem for path in (store.root / "records").glob("*.json") if store.complete(path.stem))


def _resume_points(store) -> dict:
    out = {}
    for path in (store.root / "partial").glob("*.npz"):
        state = store.load_partial(path.stem)
        if state is not None:
            out[path.stem] = state
    return out


class RayEngine:
    name = "ray"

    def __init__(self, address: str | None = None, gpus_per_task: float | None = None, max_retries: int = 3,
                 split: bool = True, models_per_task: int = 1):
        if gpus_per_task is not None and not gpus_per_task > 0:
            raise InputError(f"--gpus-per-task {gpus_per_task} must be a positive number (fractions share a GPU)")
        if max_retries < 0:
            raise InputError(f"--max-retries {max_retries} must be at least 0")
        if models_per_task < 0:
            raise InputError(f"--models-per-task {models_per_task} must be at least 0 (0: all of a dataset's models)")
        self.address, self.gpus_per_task, self.max_retries, self.split = address, gpus_per_task, max_retries, split
        self.models_per_task = models_per_task
        import_ray()  # the extra's one line before anything is read or written

    def device(self, device: str) -> str:
        """The device the tasks use: Ray gives each GPU task its own GPU as cuda:0."""
        return "cuda" if device.startswith("cuda") else device

    def _connect(self, ray) -> bool:
        """Connect; True when this run started the Ray instance (and stops it after)."""
        if ray.is_initialized():
            return False
        if self.address:
            _check_address(self.address)
        try:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=True,
                     logging_level="ERROR", configure_logging=True)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"--address {self.address}" if self.address else "a local Ray instance"
            raise InputError(f"cannot start or join {where}: {error_line(e)}") from None
        return True

    def run(self, groups: Sequence, resolutions, store, device: str = "cpu", protocol: dict | None = None,
            **options) -> list[dict]:
        ray = import_ray()
        started = self._connect(ray)
        try:
            return self._run(ray, groups, resolutions, store, self.device(device), protocol, options)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, groups, resolutions, store, device, protocol, options) -> list[dict]:
        show = options.get("progress", True)
        gpus = ray.cluster_resources().get("GPU", 0)
        per_task = (self.gpus_per_task or 1.0) if gpus else 0.0
        slots = schedule.slots_for(gpus, per_task) if gpus else max(1, int(ray.cluster_resources().get("CPU", 1)))
        units = bundle(groups, self.models_per_task)
        costs = unit_costs(units, resolutions, options)
        run_options = {k: v for k, v in options.items() if k != "progress"}
        requests = [request_key(TaskSpec(f"u{u}", unit, list(resolutions), device, protocol, run_options,
                                         schedule.ImageShard(0, 1))) for u, unit in enumerate(units)]
        # a unit whose request wrote cells that are all complete is not run again (RESULTS/units)
        cells: dict[int, list[str]] = {u: c for u in range(len(units))
                                       if (c := recorded_unit(store, requests[u])) is not None}
        todo = [u for u in range(len(units)) if u not in cells]
        tasks = [dataclasses.replace(t, unit=todo[t.unit]) for t in
                 schedule.tasks([costs[u][0] for u in todo], [costs[u][1] for u in todo], slots, self.split)]
        complete = ray.put(_complete_cells(store))
        coordinator = ray.remote(num_cpus=0)(_Coordinator).options(max_restarts=0).remote(_resume_points(store))
        # max_calls=0: a worker runs task after task (Ray's default for GPU tasks is a new process each,
        # about a second on a small machine plus torch's import); each task frees its GPU memory
        remote = ray.remote(max_calls=0)(_task).options(num_gpus=per_task, num_cpus=0 if per_task else 1,
                                                        max_retries=self.max_retries, retry_exceptions=False)
        refs, unit_of = {}, {}
        for t in tasks:  # longest first: Ray starts them in this order as slots free up
            spec = TaskSpec(f"u{t.unit}s{t.shard.index}of{t.shard.count}", units[t.unit], list(resolutions), device,
                            protocol, run_options, t.shard)
            refs[remote.remote(spec, complete, coordinator)] = t
            unit_of[spec.key] = t.unit
        shards_of = {u: sum(1 for t in tasks if t.unit == u) for u in {t.unit for t in tasks}}
        started: set[int] = set()  # units with a task begun on a worker
        progress = Progress("ray", {u: costs[u][0] for u in shards_of},
                            {u: len(units[u]) * len(resolutions) for u in shards_of}, show, running=lambda: started)
        results: dict[int, list[TaskResult]] = {u: [] for u in shards_of}
        failed: dict[int, str] = {}
        waiting = list(refs)
        try:
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1, timeout=1.0)
                points, begun = ray.get(coordinator.drain.remote())
                for key, arrays in points.items():
                    store.save_partial(key, **arrays)  # the driver writes every resume point
                started.update(unit_of[key] for key in begun)
                for ref in ready:
                    t = refs[ref]
                    if t.unit in failed:
                        continue
                    try:
                        results[t.unit].append(ray.get(ref))
                    except Exception as e:  # noqa: BLE001 -- reported with its unit at the end
                        failed[t.unit] = _failure(ray, e, self.max_retries)
                        progress.finish(t.unit, failed=True)
                        continue
                    if len(results[t.unit]) == shards_of[t.unit]:
                        try:
                            written = commit(store, units[t.unit][0].data, results[t.unit], "ray",
                                             request=requests[t.unit])
                        except Exception as e:  # noqa: BLE001 -- e.g. no image readable: the unit fails
                            failed[t.unit] = error_line(e)
                            progress.finish(t.unit, failed=True)
                            continue
                        cells[t.unit] = results[t.unit][0].cells
                        coordinator.forget.remote([s.partial_key for r in results[t.unit] for s in r.shards])
                        progress.finish(t.unit, len(written))
                progress.update()
        except BaseException:
            for ref in waiting:
                ray.cancel(ref, force=True)
            raise
        finally:
            ray.kill(coordinator)
        if failed:
            lines = [f"  {describe(units[u])}: {why}" for u, why in sorted(failed.items())]
            raise UnitsFailed(f"{len(failed)} of {len(shards_of)} units failed (the other units' cells are written; "
                              "fix the cause and rerun the same command):\n" + "\n".join(lines))
        return [store.get(c) for u in sorted(cells) for c in cells[u]]


def _failure(ray, exc: Exception, retries: int) -> str:
    """One line for a failed task: the exception inside it, or the worker lost too often."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        return error_line(cause)
    if isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)):
        return f"its worker was lost {retries + 1} times ({type(exc).__name__}); see the Ray logs"
    return error_line(exc)


__all__ = ["INSTALL", "RayEngine", "import_ray"]
