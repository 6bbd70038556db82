"""Engines: where the passes of ``lr0fm eval`` / ``lr0fm sweep`` / ``lr0fm.evaluate`` run.

* ``local`` (default): this process (``torchrun`` splits one node's GPUs; lr0fm.distributed);
* ``ray``: Ray tasks on a local Ray or a cluster, the driver the one writer (lr0fm.engines.ray);
* ``slurm``: submitit job arrays, each element commits its own cells (lr0fm.engines.slurm).

Every engine takes the runner's groups (lr0fm.runner.Group) and writes the same cells, records
and predictions as the in-process run. ``add_engine_args`` declares the options of all engines
for a command; ``engine_from_args`` turns them into an engine (None: local).
"""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import InputError

ENGINES = ("local", "ray", "slurm")


def add_engine_args(parser: argparse.ArgumentParser, plan: bool = False) -> None:
    """The engine options; ``plan``: also ``--gpus N`` / ``--json`` of ``sweep --dry-run``."""
    g = parser.add_argument_group("engine (docs/scale.md)")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="where passes run: local (this process; torchrun splits one node), ray (Ray tasks on this "
                        "machine or --address's cluster), slurm (submitit job arrays)")
    g.add_argument("--address", default=None, metavar="ADDR",
                   help="ray: an existing cluster (auto, HOST:PORT, ray://HOST:PORT); default: a local Ray")
    g.add_argument("--gpus-per-task", type=float, default=None, metavar="G",
                   help="ray: GPUs per task (default 1 where the cluster has GPUs, else one CPU per task; "
                        "fractions share a GPU between small models)")
    g.add_argument("--max-retries", type=int, default=3, metavar="N",
                   help="ray: times a task whose worker or node was lost is retried; slurm: times an element that "
                        "ended without a result (killed, node lost) is resubmitted; both from its resume point")
    g.add_argument("--models-per-task", type=int, default=1, metavar="K",
                   help="ray/slurm: models of one dataset in one task's pass (each image decoded once for all of "
                        "them); 0: all of a dataset's models, as one process runs them; more models need more GPU "
                        "memory per task (default: %(default)s)")
    g.add_argument("--no-shards", action="store_true",
                   help="ray/slurm: never split a long unit into image shards")
    g.add_argument("--slurm-cluster", choices=["slurm", "local", "debug"], default="slurm",
                   help="slurm: submitit's executor; local/debug run the array on this machine without SLURM")
    g.add_argument("--slurm-partition", default=None)
    g.add_argument("--slurm-time", type=int, default=240, metavar="MIN", help="slurm: minutes per array element")
    g.add_argument("--slurm-gpus-per-task", type=int, default=None, metavar="N",
                   help="slurm: GPUs per array element (default 1 with --device cuda, 0 on CPU)")
    g.add_argument("--slurm-array-parallelism", type=int, default=None, metavar="N",
                   help="slurm: array elements running at once, the slots long units are split over (default: the "
                        "partition's GPUs / --slurm-gpus-per-task, or its CPUs on CPU, as sinfo says; with "
                        "--slurm-cluster local|debug 1: no shards unless given)")
    g.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="slurm: any other sbatch setting submitit passes on (repeatable), e.g. account=abc")
    g.add_argument("--slurm-folder", default=None, metavar="DIR",
                   help="slurm: submitit's logs and job files (default: RESULTS/slurm)")
    if plan:
        g.add_argument("--gpus", type=int, default=None, metavar="N",
                       help="with --dry-run / --estimate: the makespan on N GPUs with the engines' scheduling "
                            "(longest first, long units split into image shards)")
        g.add_argument("--json", action="store_true", help="with --gpus: print the plan as one JSON object")


def engine_from_args(args):
    """The engine the parsed options ask for, or None for the local one (this process)."""
    engine = getattr(args, "engine", "local")
    if engine == "local":
        for flag, value, where in (("--address", args.address, "ray"), ("--gpus-per-task", args.gpus_per_task, "ray"),
                                   ("--models-per-task", None if args.models_per_task == 1 else args.models_per_task,
                                    "ray or --engine slurm")):
            if value is not None:
                raise InputError(f"{flag} applies to --engine {where}; add that or drop it")
        return None
    if engine == "ray":
        from .ray import RayEngine
        return RayEngine(args.address, args.gpus_per_task, args.max_retries, split=not args.no_shards,
                         models_per_task=args.models_per_task)
    from .slurm import SlurmEngine
    return SlurmEngine(cluster=args.slurm_cluster, partition=args.slurm_partition, time_min=args.slurm_time,
                       gpus_per_task=args.slurm_gpus_per_task, parallelism=args.slurm_array_parallelism,
                       extra=args.slurm_arg, folder=args.slurm_folder, models_per_task=args.models_per_task,
                       split=not args.no_shards, max_retries=args.max_retries)


def plan_makespan(config, store, gpus: int, gpus_per_task: float | None = None, tflops: float | None = None,
                  images_per_second: float | None = None, split: bool = True, models_per_task: int = 1) -> dict:
    """The sweep's units on ``gpus`` GPUs with the engines' scheduling (``models_per_task`` models
    of a dataset to a unit, longest first, long units split into image shards unless ``split`` is
    False): cells, total and makespan (s)."""
    from ..sweep_plan import DEFAULT_TFLOPS, measured_speeds, pass_estimates, plan_datasets, recorded_cells
    from . import schedule

    if gpus < 1:
        raise InputError(f"--gpus {gpus} must be at least 1")
    if models_per_task < 0:
        raise InputError(f"--models-per-task {models_per_task} must be at least 0 (0: all of a dataset's models)")
    tflops = tflops or DEFAULT_TFLOPS[config.options.get("amp") or "fp32"]
    datasets = plan_datasets(config)
    recorded = recorded_cells(config, datasets, store)
    measured = measured_speeds(config.models, config.options, store.root)  # lr0fm calibrate's speeds, where measured
    rows = pass_estimates(config, datasets, recorded, tflops, measured=measured)  # the decode floor: per unit, below
    units = unit_estimates(rows, models_per_task, images_per_second)
    known = [u for u in units if u["seconds"] is not None]
    slots = schedule.slots_for(gpus, gpus_per_task or 1.0)
    tasks = schedule.tasks([u["seconds"] for u in known], [u["images"] for u in known], slots, split)
    total = sum(u["seconds"] for u in known)
    span = schedule.makespan(tasks, slots)
    longest = max(known, key=lambda u: u["seconds"], default=None)
    variants = len(config.lr_tokens) * len(config.sr)
    return {"cells": len(config.models) * variants * len(config.datasets) * len(config.resolutions),
            "pending_cells": sum(r["pending"] for r in rows), "units": len(units), "units_estimated": len(known),
            "models_per_task": models_per_task, "tasks": len(tasks),
            "split_units": len({t.unit for t in tasks if t.shard.count > 1}),
            "gpus": gpus, "gpus_per_task": gpus_per_task or 1.0, "tflops": tflops, "total_s": round(total, 1),
            "makespan_s": round(span, 1), "longest_unit_s": round(longest["seconds"] if longest else 0, 1),
            "longest_unit": f"{', '.join(longest['models'])} on {longest['dataset']}" if longest else None,
            "speedup": round(total / span, 2) if span else None,
            "passes_measured": sum(r["measured"] and r["seconds"] is not None for r in rows),
            "passes_assumed": sum(not r["measured"] and r["seconds"] is not None for r in rows)}


def unit_estimates(rows: list[dict], models_per_task: int = 1, images_per_second: float | None = None) -> list[dict]:
    """The engines' units from the sweep's per-pass rows (lr0fm.sweep_plan.pass_estimates, in the
    runner's order): ``models_per_task`` rows of a dataset to a unit (0: all), as
    lr0fm.engines.units.bundle forms them; a unit's seconds are its models' (None if any is
    unknown), at least its images at ``images_per_second`` (each image is decoded once per unit)."""
    from ..sweep_plan import input_floor

    by_data: dict[str, list[dict]] = {}
    for row in rows:
        by_data.setdefault(row["dataset"], []).append(row)
    size = models_per_task or max(len(rows), 1)
    out = []
    for same in by_data.values():
        for i in range(0, len(same), size):
            part = same[i:i + size]
            images = part[0]["images"]
            seconds = None if any(r["seconds"] is None for r in part) else sum(r["seconds"] for r in part)
            if seconds is not None:
                seconds = input_floor(seconds, images, images_per_second)
            out.append({"dataset": part[0]["dataset"], "models": [r["model"] for r in part], "images": images,
                        "seconds": seconds})
    return out


def print_makespan(plan: dict, as_json: bool = False, out=None) -> None:
    out = out or sys.stdout
    if as_json:
        print(json.dumps(plan, sort_keys=True), file=out)
        return
    hours = lambda s: f"{s / 3600:,.1f} h" if s >= 3600 else f"{s / 60:,.1f} min"  # noqa: E731
    unknown = plan["units"] - plan["units_estimated"]
    per_unit = plan.get("models_per_task", 1)
    models = "models" if per_unit != 1 else "model"
    print(f"on {plan['gpus']} GPUs ({plan['gpus_per_task']:g} per task), longest first: {plan['tasks']} tasks from "
          f"{plan['units_estimated']} units ({per_unit or 'all'} {models} of a dataset each; {plan['split_units']} split "
          f"into image shards); makespan "
          f"~{plan['makespan_s']:,.0f} s ({hours(plan['makespan_s'])}) for ~{plan['total_s']:,.0f} s of device time"
          f" (speedup {plan['speedup'] or 0:g})" + (f"; {unknown} units without an estimate left out" if unknown else ""),
          file=out)
    if plan.get("longest_unit"):
        print(f"longest unit: {plan['longest_unit']} (~{hours(plan['longest_unit_s'])})", file=out)
    print(f"pass times: {plan.get('passes_measured', 0)} measured (lr0fm calibrate), {plan.get('passes_assumed', 0)} "
          f"assumed (catalog GFLOPs at {plan['tflops']:g} TFLOPS)", file=out)


__all__ = ["ENGINES", "add_engine_args", "engine_from_args", "plan_makespan", "print_makespan", "unit_estimates"]
