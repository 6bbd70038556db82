"""Scheduling units of work over GPUs: longest first, with long units split into image shards.

A *unit* is one pass: one model (with its variant) over one dataset at every pending
resolution. Its cost is the sweep's own estimate (lr0fm.sweep_plan.estimated_pass_seconds: the
speed lr0fm calibrate measured, else the catalog GFLOPs). A unit that
costs more than the average load per slot (total / slots) is split into ``ceil(cost / average)``
contiguous image shards, so the longest unit does not set the makespan; then every task goes,
longest first, to the slot that frees up first (what Ray and a SLURM array do with tasks
submitted in that order). ``makespan`` simulates exactly that, for ``sweep --dry-run --gpus N``.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Sequence

from ..evaluation.passes import ImageShard


@dataclass(frozen=True)
class Task:
    """One piece of work for one slot: shard ``shard`` of unit ``unit``."""

    unit: int
    shard: ImageShard
    cost: float


def shard_counts(costs: Sequence[float], images: Sequence[int], slots: int, split: bool = True) -> list[int]:
    """How many image shards each unit is cut into (1: not split)."""
    if not split or slots <= 1 or not costs:
        return [1] * len(costs)
    average = sum(costs) / slots
    return [max(1, min(int(images[i]) or 1, slots, math.ceil(c / average - 1e-9))) if average > 0 and c > average
            else 1 for i, c in enumerate(costs)]


def tasks(costs: Sequence[float], images: Sequence[int], slots: int, split: bool = True) -> list[Task]:
    """The tasks of ``costs`` (one per unit, in seconds or any common unit), longest first."""
    out = [Task(u, ImageShard(i, k), costs[u] / k)
           for u, k in enumerate(shard_counts(costs, images, slots, split)) for i in range(k)]
    return sorted(out, key=lambda t: (-t.cost, t.unit, t.shard.index))


def makespan(task_list: Sequence[Task], slots: int) -> float:
    """When the last task ends if each task, in order, starts on the first free slot."""
    if not task_list:
        return 0.0
    free = [0.0] * max(1, slots)
    for t in task_list:
        heapq.heapreplace(free, free[0] + t.cost)
    return max(free)


def slots_for(gpus: float, gpus_per_task: float) -> int:
    """Tasks that run at once on ``gpus`` GPUs with ``gpus_per_task`` each (fractions share a GPU)."""
    return max(1, int(math.floor(gpus / gpus_per_task + 1e-9))) if gpus_per_task > 0 else max(1, int(gpus))


__all__ = ["Task", "makespan", "shard_counts", "slots_for", "tasks"]
