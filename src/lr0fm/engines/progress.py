"""The driver's progress line: units and cells done / running / failed, and an ETA."""
from __future__ import annotations

import sys
import time


class Progress:
    """Counts units (by estimated cost, for the ETA) and cells; prints at most every ``every`` s."""

    def __init__(self, engine: str, units: dict[int, float], show: bool = True, every: float = 5.0):
        self.engine, self.cost, self.show, self.every = engine, units, show, every
        self.started, self.last = time.time(), 0.0
        self.done: set[int] = set()
        self.failed: set[int] = set()
        self.cells = 0
        self.running = 0

    def finish(self, unit: int, cells: int = 0, failed: bool = False) -> None:
        (self.failed if failed else self.done).add(unit)
        self.cells += cells
        self.update(force=True)

    def eta(self) -> float | None:
        spent = sum(self.cost[u] for u in self.done | self.failed)
        total = sum(self.cost.values())
        if spent <= 0:
            return None
        return (time.time() - self.started) * (total - spent) / spent

    def line(self) -> str:
        left = len(self.cost) - len(self.done) - len(self.failed)
        eta = self.eta()
        eta_text = "-" if eta is None else f"{eta / 60:.1f} min" if eta >= 60 else f"{eta:.0f} s"
        return (f"lr0fm {self.engine}: units {len(self.done)} done, {min(self.running, left)} running, "
                f"{len(self.failed)} failed, {left} left of {len(self.cost)}; {self.cells} cells written; "
                f"ETA {eta_text}")

    def update(self, force: bool = False) -> None:
        now = time.time()
        if self.show and (force or now - self.last >= self.every):
            self.last = now
            print(self.line(), file=sys.stderr, flush=True)
