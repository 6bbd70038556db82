"""The runner: a request (models x datasets x variants) -> groups -> passes, below every front end.

``lr0fm eval``, ``lr0fm sweep`` and ``lr0fm.evaluate`` build ``Group``s and call ``run_groups``;
each group is one (model, variant) on one dataset at every requested resolution. An engine
(lr0fm.engines: this process or torchrun's ranks, Ray tasks, SLURM arrays) runs their passes.
"""
from __future__ import annotations

from typing import Sequence

from .groups import Group, check_groups, load_models


def run_groups(groups: Sequence[Group], resolutions, store, device: str = "cpu", protocol: dict | None = None,
               engine=None, **options) -> list[dict]:
    """Evaluate every group (skipping finished cells) on ``engine`` (lr0fm.engines: Ray tasks, SLURM
    arrays; None: this process, or one node's ranks under torchrun); the records of all groups, in
    order. ``options`` are EvalConfig fields."""
    from .engines.local import InProcessEngine

    check_groups(groups, protocol)  # every named model against the options, before any is built
    return (engine or InProcessEngine()).run(groups, resolutions, store, device=device, protocol=protocol, **options)


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
