"""The runner: a request (models x datasets x variants) -> groups -> passes, below every front end.

``lr0fm eval``, ``lr0fm sweep`` and ``lr0fm.evaluate`` build ``Group``s and call ``run_groups``;
each group is one (model, variant) on one dataset at every requested resolution. In one process
all models of a dataset run in one pass (lr0fm.evaluation.evaluate_many); under torchrun the
groups, or their images, are split over the ranks (lr0fm.distributed). Engines that run passes
elsewhere (Ray, SLURM arrays: lr0fm.engines) take the same groups.
"""
from __future__ import annotations

from typing import Sequence

from . import distributed as dist
from .groups import Group, check_groups, load_models


def run_groups(groups: Sequence[Group], resolutions, store, device: str = "cpu", protocol: dict | None = None,
               engine=None, **options) -> list[dict]:
    """Evaluate every group (skipping finished cells); the records of all groups, in order, on every rank.

    In one process, all models of a dataset run in one pass (``evaluate_many``): each image is
    decoded once and its views are made once per group of models with the same view pixels, so a
    model zoo costs about the sum of its forwards (every model is held in memory meanwhile).
    Under torchrun the groups (or, when there are fewer groups than ranks, their images) are
    split over the ranks; ``options`` are EvalConfig fields. ``engine`` (lr0fm.engines): run the
    passes there instead (Ray tasks, SLURM arrays); None is this process.
    """
    from .evaluation import EvalConfig, Job, check_readable, evaluate_many

    check_groups(groups, protocol)  # every named model against the options, before any is built
    if engine is not None:  # its workers check the data they are given (they may see other files)
        return engine.run(groups, resolutions, store, device=device, protocol=protocol, **options)
    for data in {id(g.data): g.data for g in groups}.values():
        check_readable(data)  # data without one readable image: one line before any model is built

    mine, shard_images = dist.plan_cells(groups)
    done, busy = [], []
    with dist.sharding(shard_images):
        if dist.active():  # one group at a time: ranks split groups or images
            loaded = lambda todo: ([entry] for entry in load_models(groups, todo, resolutions, device, protocol))  # noqa: E731
        else:  # every model built once; one pass per dataset
            loaded = lambda todo: _by_dataset(load_models(groups, todo, resolutions, device, protocol))  # noqa: E731
        # a pass another process is running is deferred: this one takes other work first, then waits
        for wait, todo in ((False, mine), (True, busy)):
            for entries in loaded(list(todo)):
                jobs = [Job(model, EvalConfig(resolutions=resolutions, device=device, variant=variant, **options),
                            view_fn) for _, _, model, view_fn, variant in entries]
                results = evaluate_many(jobs, entries[0][1].data, store, wait=wait or shard_images)
                for (i, *_), records in zip(entries, results):
                    (busy if records is None else done).append(i if records is None else (i, records))
    if shard_images or not dist.active():
        return [r for _, records in sorted(done, key=lambda p: p[0]) for r in records]
    return [r for records in dist.gather_ordered(done) for r in records]


def _by_dataset(entries) -> list[list]:
    """Loaded groups (all models kept) bundled per dataset, in first-seen order."""
    bundles: dict[int, list] = {}
    for entry in entries:
        bundles.setdefault(id(entry[1].data), []).append(entry)
    return list(bundles.values())


def cell_status(groups: Sequence[Group], resolutions, store, device: str = "cpu", protocol: dict | None = None,
                **options) -> list[dict]:
    """One row per cell: model, dataset, split, resolution, variant, cell id, done (no image is read)."""
    from .evaluation import EvalConfig, plan

    check_groups(groups, protocol)
    rows = []
    for _, g, model, view_fn, variant in load_models(groups, range(len(groups)), resolutions, "cpu", protocol):
        cfg = EvalConfig(resolutions=resolutions, device=device, variant=variant, **options)
        p = plan(model, g.data, cfg, view_fn)
        for r in resolutions:
            rows.append({"model": g.model, "dataset": g.data.spec.label, "split": g.data.spec.split, "resolution": r,
                         "variant": cfg.variant, "cell": p.cells[r], "done": store.complete(p.cells[r])})
    return rows
