"""The in-process engine: every pass in this process, or split over one node's ranks under torchrun.

In one process all models of a dataset run in one pass (lr0fm.evaluation.evaluate_many): each
image is decoded once and its views made once per group of models with the same view pixels, so a
model zoo costs about the sum of its forwards (every model is held in memory meanwhile). Under
torchrun the groups, or -- when there are fewer groups than ranks -- their images, are split over
the ranks (lr0fm.distributed.plan_cells); each pass is told its image block explicitly. Two
processes on one results folder never run the same pass at once (the store's pass lock).
"""
from __future__ import annotations

from typing import Sequence

from .. import distributed as dist
from ..groups import load_models


class InProcessEngine:
    name = "local"

    def device(self, device: str) -> str:
        return device

    def run(self, groups: Sequence, resolutions, store, device: str = "cpu", protocol: dict | None = None,
            **options) -> list[dict]:
        from ..evaluation import EvalConfig, Job, check_readable, evaluate_many

        for data in {id(g.data): g.data for g in groups}.values():
            check_readable(data)  # data without one readable image: one line before any model is built
        mine, split_images = dist.plan_cells(groups)
        if dist.active():  # one group at a time: ranks split groups or images
            def loaded(todo):
                return ([entry] for entry in load_models(groups, todo, resolutions, device, protocol))
        else:  # every model built once; one pass per dataset
            def loaded(todo):
                return _by_dataset(load_models(groups, todo, resolutions, device, protocol))
        done, busy = [], []
        # a pass another process is running is deferred: this one takes other work first, then waits
        for wait, todo in ((False, mine), (True, busy)):
            for entries in loaded(list(todo)):
                jobs = [Job(model, EvalConfig(resolutions=resolutions, device=device, variant=variant, **options),
                            view_fn) for _, _, model, view_fn, variant in entries]
                results = evaluate_many(jobs, entries[0][1].data, store, wait=wait or split_images,
                                        split_over_ranks=split_images)
                for (i, *_), records in zip(entries, results):
                    (busy if records is None else done).append(i if records is None else (i, records))
        if split_images or not dist.active():
            return [r for _, records in sorted(done, key=lambda p: p[0]) for r in records]
        return [r for records in dist.gather_ordered(done) for r in records]


def _by_dataset(entries) -> list[list]:
    """Loaded groups (all models kept) bundled per dataset, in first-seen order."""
    bundles: dict[int, list] = {}
    for entry in entries:
        bundles.setdefault(id(entry[1].data), []).append(entry)
    return list(bundles.values())


__all__ = ["InProcessEngine"]
