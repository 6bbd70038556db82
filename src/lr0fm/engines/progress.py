"""The driver's progress line: units and cells done / running / failed, and an ETA."""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterable


class Progress:
    """Counts units (weighted by estimated cost, for the ETA) and their cells; prints at most every
    ``every`` s. ``running`` gives the units started and not finished; it is asked only when a line
    is printed (on SLURM it asks the scheduler, through submitit's cached watcher)."""

    def __init__(self, engine: str, costs: dict[int, float], cells: dict[int, int], show: bool = True,
                 every: float = 5.0, running: Callable[[], Iterable[int]] = tuple):
        self.engine, self.cost, self.unit_cells, self.show, self.every = engine, costs, cells, show, every
        self.running = running
        self.started, self.last = time.time(), 0.0
        self.done: set[int] = set()
        self.failed: set[int] = set()
        self.written = 0

    def finish(self, unit: int, written: int = 0, failed: bool = False) -> None:
        (self.failed if failed else self.done).add(unit)
        self.written += written
        self.update(force=True)

    def eta(self) -> float | None:
        spent = sum(self.cost[u] for u in self.done | self.failed)
        total = sum(self.cost.values())
        if spent <= 0:
            return None
        return (time.time() - self.started) * (total - spent) / spent

    def line(self) -> str:
        running = set(self.running()) - self.done - self.failed
        waiting = len(self.cost) - len(self.done) - len(self.failed) - len(running)
        eta = self.eta()
        eta_text = "-" if eta is None else f"{eta / 60:.1f} min" if eta >= 60 else f"{eta:.0f} s"
        return (f"lr0fm {self.engine}: units {len(self.done)} done, {len(running)} running, {len(self.failed)} failed, "
                f"{waiting} waiting ({len(self.cost)} in all); cells {self.written} written, {self.cells(running)} "
                f"running, {self.cells(self.failed)} failed ({self.cells(self.cost)} in all); ETA {eta_text}")

    def cells(self, units) -> int:
        return sum(self.unit_cells.get(u, 0) for u in units)

    def update(self, force: bool = False) -> None:
        now = time.time()
        if self.show and (force or now - self.last >= self.every):
            self.last = now
            print(self.line(), file=sys.stderr, flush=True)
