"""Ray as the engine: every unit (or image shard of one) is a Ray task; the driver is the one writer.

Without ``--address`` a Ray instance of its own is started on this machine for the run and stopped
after, whatever ``RAY_ADDRESS`` or a running cluster says; with one (``auto``, ``HOST:PORT``,
``ray://HOST:PORT``) the run joins that cluster and only disconnects from it at the end; a process
that is already connected (``ray.init`` in a notebook) is used as it is.

Tasks take ``--gpus-per-task`` GPUs (default 1 where the cluster has GPUs, fractions share one)
or, on a cluster without GPUs, one CPU each. A task whose worker or node is lost is retried by
Ray (``--max-retries``); the retry fetches the resume point its earlier attempt streamed to the
driver (every ``--checkpoint-every`` images) and continues from there. An exception inside a task
is not retried: the unit is reported at the end. Only the driver's node writes the results folder
(records and predictions by the driver, resume points by its coordinator, an actor pinned to the
driver's node), so the workers need the data and the weights but no shared filesystem for results,
and no state lives only on a worker node: losing any node but the driver's loses at most the
images since each of its tasks' last resume point. The unit lifecycle is lr0fm.engines.lifecycle.
"""
from __future__ import annotations

import os
import socket
import sys
from typing import Sequence

import numpy as np

from ..errors import InputError
from . import schedule
from .lifecycle import Lifecycle, Outcome, plan_units
from .units import TaskResult, TaskSpec, error_line, run_task

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


# The driver's settings the workers of a cluster must share (its own local Ray's workers inherit
# the driver's environment anyway): lr0fm's own (LR0FM_CACHE, LR0FM_DATA, ...) and the hub's
# offline mode and cache.
FORWARDED_PREFIXES = ("LR0FM_", "HF_HUB_OFFLINE", "HF_HOME", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def forwarded_env() -> dict:
    """The environment variables the driver hands to its tasks on a cluster (Ray runtime_env)."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}


class _Coordinator:
    """The driver's side of the workers' resume points and attempts: an actor pinned to the driver's
    node, so it writes the resume points into the driver's results folder and nothing of the run
    lives only on a worker node. Resume points are read from the folder when a task asks for them
    (not all held in memory)."""

    def __init__(self, root: str):
        from ..store import ResultsStore
        self.store = ResultsStore(root)
        self.attempts: dict[str, int] = {}
        self.begun: list[str] = []

    def begin(self, key: str) -> int:
        self.attempts[key] = self.attempts.get(key, 0) + 1
        self.begun.append(key)
        return self.attempts[key]

    def resume_point(self, key: str):
        return self.store.load_partial(key)

    def save(self, key: str, arrays: dict) -> None:
        self.store.save_partial(key, **arrays)

    def drain(self) -> list[str]:
        """The tasks begun since the last drain."""
        begun, self.begun = self.begun, []
        return begun


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

    import ray
    import torch

    from ..filedigest import cache_dir
    channel = _ActorChannel(actor)
    try:
        node = ray.get_runtime_context().get_node_id()
        return run_task(spec, complete, channel, cache_dir() / "classifiers", where=f"ray node {node[:12]}")
    finally:
        channel.waiter.shutdown()
        gc.collect()  # the unit's model goes before the next task on this worker builds its own
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _complete_cells(store) -> frozenset:
    """The cells of the results folder that are complete (record and predictions digest)."""
    return frozenset(path.stem for path in (store.root / "records").glob("*.json") if store.complete(path.stem))


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
        """Connect; True when this run started its own Ray instance (and stops it after). Without
        --address the instance is always a new local one (``address="local"``): ``ray.init()``
        would join whatever RAY_ADDRESS or a running cluster on this machine names."""
        if ray.is_initialized():
            return False
        if self.address:
            _check_address(self.address)
        try:
            ray.init(address=self.address or "local", include_dashboard=False, log_to_driver=True,
                     logging_level="ERROR", configure_logging=True,
                     runtime_env={"env_vars": forwarded_env()} if self.address else None)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"--address {self.address}" if self.address else "a local Ray instance"
            raise InputError(f"cannot start or join {where}: {error_line(e)}") from None
        return True

    def run(self, groups: Sequence, resolutions, store, device: str = "cpu", protocol: dict | None = None,
            **options) -> list[dict]:
        ray = import_ray()
        started = self._connect(ray)
        try:
            device = self.device(device)
            show = options.get("progress", True)
            run_options = {k: v for k, v in options.items() if k != "progress"}
            units = plan_units(groups, resolutions, store, device, protocol, run_options, self.models_per_task)
            session = _RaySession(ray, self, store)
            if show:
                print(f"lr0fm ray: {len([n for n in ray.nodes() if n['Alive']])} nodes, {session.slots()} slots; "
                      f"driver and coordinator on node {session.node[:12]}", file=sys.stderr, flush=True)
            return Lifecycle("ray", session, store, units, resolutions, device, protocol, run_options, self.split,
                             show=show).run()
        finally:
            if started:
                ray.shutdown()  # stops the instance this run started; with --address only disconnects


class _RaySession:
    """The Ray side of a run: tasks submitted as Ray tasks, outcomes as they end."""

    interval = 1.0

    def __init__(self, ray, engine: RayEngine, store):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray, self.engine, self.store = ray, engine, store
        resources = ray.cluster_resources()
        self.gpus = resources.get("GPU", 0)
        self.per_task = (engine.gpus_per_task or 1.0) if self.gpus else 0.0
        self._slots = (schedule.slots_for(self.gpus, self.per_task) if self.gpus
                       else max(1, int(resources.get("CPU", 1))))
        self.node = ray.get_runtime_context().get_node_id()
        # the coordinator lives on the driver's node: losing any other node loses none of the run's state
        self.coordinator = ray.remote(num_cpus=0)(_Coordinator).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=self.node, soft=False),
            max_restarts=-1, max_task_retries=-1).remote(str(store.root))
        self.complete = ray.put(_complete_cells(store))
        # max_calls=0: a worker runs task after task (Ray's default for GPU tasks is a new process each,
        # about a second on a small machine plus torch's import); each task frees its GPU memory
        self.remote = ray.remote(max_calls=0)(_task).options(num_gpus=self.per_task,
                                                             num_cpus=0 if self.per_task else 1,
                                                             max_retries=engine.max_retries, retry_exceptions=False)
        self.refs: dict = {}           # task ref -> task key
        self.begun: set[str] = set()

    def slots(self) -> int:
        return self._slots

    def submit(self, specs) -> None:
        for spec in specs:  # longest first: Ray starts them in this order as slots free up
            self.refs[self.remote.remote(spec, self.complete, self.coordinator)] = spec.key

    def poll(self) -> list[Outcome]:
        if not self.refs:
            import time
            time.sleep(self.interval)
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=self.interval)
        try:
            self.begun.update(self.ray.get(self.coordinator.drain.remote(), timeout=30))
        except Exception:  # noqa: BLE001 -- the coordinator restarting: progress only
            pass
        out = []
        for ref in ready:
            key = self.refs.pop(ref)
            try:
                out.append(Outcome(key, result=self.ray.get(ref)))
            except Exception as e:  # noqa: BLE001 -- reported with its unit at the end
                out.append(Outcome(key, error=_failure(self.ray, e, self.engine.max_retries)))
            del ref  # the object store may free the result once the driver holds no reference
        return out

    def running(self) -> set[str]:
        return self.begun & set(self.refs.values())

    def close(self, cancel: bool) -> None:
        if cancel:
            for ref in self.refs:
                self.ray.cancel(ref, force=True)
        self.refs.clear()
        self.ray.kill(self.coordinator)


def _failure(ray, exc: Exception, retries: int) -> str:
    """One line for a failed task: the exception inside it, or the worker lost too often."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        return error_line(cause)
    if isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                        ray.exceptions.ObjectLostError)):
        return f"its worker was lost {retries + 1} times ({type(exc).__name__}); see the Ray logs"
    return error_line(exc)


__all__ = ["INSTALL", "RayEngine", "import_ray"]
