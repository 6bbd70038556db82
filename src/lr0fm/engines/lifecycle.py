"""The life of a unit of work, written once for every cluster engine: plan -> submit -> collect -> commit.

* **plan**: the runner's groups become units (``models_per_task`` models of one dataset, one
  pass), each with its cost (the sweep's estimate) and request key (what was asked, without
  building a model); a unit whose request wrote all its cells before is done. Long units are
  split into image shards over the engine's slots, longest first (lr0fm.engines.schedule). Every
  task has a key stable across runs (``REQUEST.IofK``): its lease, its attempts and its result
  file are named by it.
* **submit**: a task whose lease another live process holds (a second driver, or the elements of
  an earlier submission) is not submitted; it is waited for. The engine's session runs the rest.
* **collect**: the session reports each task's result, or one line for a task that failed. A lost
  worker is retried by the engine from the resume point it left with the driver.
* **commit**: when every shard of a unit is in, the driver -- the one writer -- merges them into
  the unit's records (lr0fm.engines.units.commit) and lets the results go, so the driver's memory
  holds only the units in flight.

An engine gives a *session* (``open``): ``slots()``, ``submit(specs)``, ``poll()`` -> outcomes,
``running()`` and ``close()``. Where the tasks hold their own leases (SLURM elements, which
outlive the submitting process), ``leases_in_worker`` is True and the driver only reads them;
otherwise (Ray, whose tasks end with their driver) the driver takes each task's lease before it
submits it and keeps it alive until the unit is committed.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

from ..errors import UnitsFailed
from . import schedule
from .lease import Leases
from .progress import Progress
from .units import (UNITS_DIR, TaskResult, TaskSpec, bundle, commit, describe, recorded_unit, request_key,
                    unit_costs)


@dataclass
class Outcome:
    """What became of one task: its result, or the one line that says why its unit failed."""

    key: str
    result: TaskResult | None = None
    error: str | None = None
    cancelled: bool = False       # the user or an admin cancelled it (not resubmitted)
    busy: bool = False            # it found its lease held by another live process: nothing computed


class Session(Protocol):
    interval: float

    def slots(self) -> int: ...
    def submit(self, specs: Sequence[TaskSpec]) -> None: ...
    def poll(self) -> list[Outcome]: ...
    def running(self) -> set[str]: ...
    def close(self, cancel: bool) -> None: ...


@dataclass
class Unit:
    index: int
    groups: list
    seconds: float
    images: int
    request: str | None
    key: str                                   # the request, or a key of this run for a model object
    cells: list[str] | None = None             # every cell of the unit, once known
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    results: dict[str, TaskResult] = field(default_factory=dict)   # released at commit
    state: str = "todo"                        # todo, done, failed


def task_key(unit_key: str, shard) -> str:
    """The key of one task of a unit: the unit's key and its image shard (``unit_of_task`` reads it back)."""
    return f"{unit_key}.{shard.index}of{shard.count}"


def unit_of_task(key: str) -> str:
    """The key of the unit a task key belongs to (``task_key``)."""
    return key.rsplit(".", 1)[0]


def result_path(root: Path, key: str) -> Path:
    """Where a task that runs apart from its driver (a SLURM element) leaves its result."""
    return Path(root) / UNITS_DIR / f"{key}.npz"


def plan_units(groups: Sequence, resolutions, store, device: str, protocol: dict | None, options: dict,
               models_per_task: int = 1) -> list[Unit]:
    """The run's units, each with its cost and request key; a unit whose request wrote every one of
    its cells before is done (``cells`` set)."""
    from ..sweep_plan import measured_speeds

    units = bundle(groups, models_per_task)
    # costed as the dry run costs them, so --dry-run --gpus N shows the split and order this run forms
    named = [g.model for g in groups if isinstance(g.model, str)]
    costs = unit_costs(units, resolutions, options, measured_speeds(named, {**options, "device": device}, store.root))
    run = uuid.uuid4().hex[:12]
    out = []
    for u, (groups_of_unit, (seconds, images)) in enumerate(zip(units, costs)):
        request = request_key(TaskSpec("", groups_of_unit, list(resolutions), device, protocol, options,
                                       schedule.ImageShard(0, 1)))
        unit = Unit(u, groups_of_unit, seconds, images, request, request or f"run-{run}-u{u}")
        unit.cells = recorded_unit(store, request)
        unit.state = "done" if unit.cells is not None else "todo"
        out.append(unit)
    return out


class Lifecycle:
    """One run of units on one engine session; ``run`` returns the records of every unit, in order."""

    def __init__(self, engine: str, session: Session, store, units: list[Unit], resolutions, device: str,
                 protocol: dict | None, options: dict, split: bool = True, leases_in_worker: bool = False,
                 show: bool = True):
        self.engine, self.session, self.store, self.units = engine, session, store, units
        self.resolutions, self.device, self.protocol, self.options = list(resolutions), device, protocol, options
        self.split, self.leases_in_worker = split, leases_in_worker
        self.leases = Leases(store.root)
        self.failed: dict[int, str] = {}
        self.cancelled: set[int] = set()
        self.foreign: dict[str, int] = {}          # tasks another process holds: task key -> unit
        self.specs: dict[str, TaskSpec] = {}       # every task of this run by its key
        todo = [u for u in units if u.state == "todo"]
        self.progress = Progress(engine, {u.index: u.seconds for u in todo},
                                 {u.index: len(u.groups) * len(self.resolutions) for u in todo}, show,
                                 running=self._running_units)

    # -- plan ------------------------------------------------------------------------------
    def _tasks(self, todo: list[Unit]) -> list[TaskSpec]:
        """The tasks of the units to do, longest first, long units split into image shards."""
        plan = schedule.tasks([u.seconds for u in todo], [u.images for u in todo], self.session.slots(), self.split)
        specs = []
        for t in plan:
            unit = todo[t.unit]
            key = task_key(unit.key, t.shard)
            spec = TaskSpec(key, unit.groups, self.resolutions, self.device, self.protocol, self.options, t.shard,
                            unit.index)
            unit.tasks[key] = spec
            self.specs[key] = spec
            specs.append(spec)
        return specs

    # -- submit ----------------------------------------------------------------------------
    def _units_held_elsewhere(self) -> set[str]:
        """The keys of the units another live process runs a task of now, whatever split it chose
        (read once per batch of claims: the leases folder is listed and read once, not per task)."""
        return {unit_of_task(key) for key in self.leases.held_by_others()}

    def _claim(self, spec: TaskSpec, held_elsewhere: set[str]) -> bool:
        """Whether this driver may run ``spec`` now (False: another live process holds a task of its
        unit, ``_units_held_elsewhere``)."""
        if self.units[spec.unit].key in held_elsewhere:
            return False
        return self.leases_in_worker or self.leases.acquire(spec.key)

    def _submit(self, specs: list[TaskSpec]) -> None:
        mine = []
        held_elsewhere = self._units_held_elsewhere()
        for spec in specs:
            if self._collect_left_result(spec):
                continue
            if self._claim(spec, held_elsewhere):
                mine.append(spec)
            else:
                self.foreign[spec.key] = spec.unit
        if mine:
            self.session.submit(mine)

    def _collect_left_result(self, spec: TaskSpec) -> bool:
        """A result an earlier run's element left (its submitter gone) is taken as it is."""
        path = result_path(self.store.root, spec.key)
        if not path.is_file():
            return False
        try:
            result = TaskResult.from_file(path)
        except Exception:  # noqa: BLE001 -- a damaged file only costs that task again
            path.unlink(missing_ok=True)
            return False
        self._collected(spec.unit, spec.key, result)
        return True

    # -- collect ---------------------------------------------------------------------------
    def _collected(self, u: int, key: str, result: TaskResult) -> None:
        unit = self.units[u]
        if unit.state != "todo":
            return
        unit.results[key] = result
        if len(unit.results) == len(unit.tasks):
            self._commit(unit)

    def _commit(self, unit: Unit) -> None:
        try:
            written = commit(self.store, unit.groups[0].data, list(unit.results.values()), self.engine,
                             request=unit.request)
        except Exception as e:  # noqa: BLE001 -- e.g. no image readable: the unit fails, the others go on
            from .units import error_line
            self._fail(unit, error_line(e))
            return
        unit.cells, unit.state = next(iter(unit.results.values())).cells, "done"
        self._release(unit)
        self.progress.finish(unit.index, len(written))

    def _release(self, unit: Unit) -> None:
        """Let the unit's results, leases and result files go (bounded driver memory)."""
        unit.results.clear()
        for key in unit.tasks:
            if not self.leases_in_worker:
                self.leases.release(key)
            result_path(self.store.root, key).unlink(missing_ok=True)
            self.foreign.pop(key, None)

    def _fail(self, unit: Unit, why: str, cancelled: bool = False) -> None:
        if unit.state != "todo":
            return
        unit.state = "failed"
        self.failed[unit.index] = why
        if cancelled:
            self.cancelled.add(unit.index)
        unit.results.clear()
        for key in unit.tasks:
            if not self.leases_in_worker:
                self.leases.release(key)
            self.foreign.pop(key, None)
        self.progress.finish(unit.index, failed=True)

    def _handle(self, outcome: Outcome) -> None:
        spec = self._spec(outcome.key)
        if spec is None:
            return
        unit = self.units[spec.unit]
        if outcome.result is not None:
            self._collected(spec.unit, outcome.key, outcome.result)
        elif outcome.busy:
            self.foreign[outcome.key] = spec.unit
        else:
            self._fail(unit, outcome.error or "failed", outcome.cancelled)

    def _spec(self, key: str) -> TaskSpec | None:
        return self.specs.get(key)

    def _check_foreign(self) -> None:
        """Tasks another process holds: done when their unit's cells are written or their result
        file is there; taken over when their lease is gone (that process ended without them)."""
        held_elsewhere = self._units_held_elsewhere() if self.foreign else set()
        for key, u in list(self.foreign.items()):
            unit = self.units[u]
            if unit.state != "todo":
                self.foreign.pop(key, None)
                continue
            cells = recorded_unit(self.store, unit.request)
            if cells is not None:
                unit.cells, unit.state = cells, "done"
                self._release(unit)
                self.progress.finish(u, 0)
                continue
            spec = unit.tasks[key]
            if self._collect_left_result(spec):
                self.foreign.pop(key, None)
                continue
            if self._claim(spec, held_elsewhere):
                self.foreign.pop(key, None)
                self.session.submit([spec])

    def _running_units(self) -> set[int]:
        running = self.session.running()
        return {u.index for u in self.units if u.state == "todo" and running & set(u.tasks)}

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> list[dict]:
        todo = [u for u in self.units if u.state == "todo"]
        cancel = True
        try:
            self._submit(self._tasks(todo))
            self.progress.update(force=bool(todo))
            while any(u.state == "todo" for u in self.units):
                for outcome in self.session.poll():
                    self._handle(outcome)
                self._check_foreign()
                self.progress.update()
            cancel = False
        finally:
            self.leases.release_all()
            self.session.close(cancel)
        if self.failed:
            raise UnitsFailed(self._failure_text())
        return [self.store.get(c) for unit in self.units for c in (unit.cells or [])]

    def _failure_text(self) -> str:
        todo = sum(1 for u in self.units if u.tasks)
        if self.cancelled and len(self.cancelled) == len(self.failed) == todo:
            return (f"all {todo} units were cancelled (scancel) before they finished; the cells written so far stay; "
                    "rerun the same command to submit the rest")
        lines = [f"  {describe(self.units[u].groups)}: {why}" for u, why in sorted(self.failed.items())]
        return (f"{len(self.failed)} of {todo} units failed (the other units' cells are written; fix the cause and "
                "rerun the same command):\n" + "\n".join(lines))


__all__ = ["Lifecycle", "Outcome", "Session", "Unit", "plan_units", "result_path", "task_key", "unit_of_task"]
