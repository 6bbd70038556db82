"""lr0fm sweep: a YAML grid (or a preset) of models x datasets x resolutions."""
from __future__ import annotations

import argparse

from ..errors import InputError
from ..options import SWEEP_KEYS, add_arguments
from . import add_command


def cmd_sweep(args) -> int:
    import sys
    import time

    from .. import distributed as dist  # torch: imported when a sweep runs, not for other commands
    from ..runner import cell_status, run_groups
    from ..sweep import expand, load_config
    from ..report import text_report
    from ..store import ResultsStore
    from ..sweep_plan import preset_names, preset_path, print_plan, runnable, select

    if bool(args.config) == bool(args.preset):
        raise InputError("give a sweep config file or --preset NAME (one of them; presets: "
                         f"{', '.join(preset_names())})")
    config = load_config(args.config or preset_path(args.preset))
    config = select(config, models=args.models, datasets=args.datasets, resolutions=args.resolutions)
    # the command line's run options override the config's keys of those names (checked again with them)
    given = {k: getattr(args, k) for k in SWEEP_KEYS if k != "resolutions" and getattr(args, k, None) is not None}
    if given:
        config = config.with_run(**given)
    store = ResultsStore(args.out or config.out)
    from ..engines import engine_from_args, plan_makespan, print_makespan
    gpus = args.gpus is not None
    if args.estimate or (args.dry_run and (args.preset or gpus)):  # a plan: no model built, no image read
        if gpus:  # the makespan on N GPUs with the engines' scheduling
            per_task = args.gpus_per_task or (args.slurm_gpus_per_task if args.engine == "slurm" else None)
            plan = plan_makespan(config, store, args.gpus, per_task, args.throughput, args.images_per_second,
                                 split=not args.no_shards, models_per_task=args.models_per_task)
            if args.json:
                return print_makespan(plan, as_json=True) or 0
        if dist.is_main():
            print_plan(config, store, f"preset {args.preset}" if args.preset else f"sweep {args.config}",
                       tflops=args.throughput, images_per_second=args.images_per_second)
            if gpus:
                print_makespan(plan)
        return 0
    if args.throughput is not None or args.images_per_second is not None:
        raise InputError("--throughput / --images-per-second set the estimate: add --estimate "
                         "(or --dry-run with --preset)")
    engine = engine_from_args(args)  # its options' checks, before any dataset is read or model built
    groups = expand(config)
    models, cannot = runnable(config.models)
    if cannot and dist.is_main():
        print(f"lr0fm sweep: skipping {', '.join(cannot)}: lr0fm cannot run them (catalog/models.yaml notes say why)",
              file=sys.stderr)
    if not models:
        raise InputError("none of the sweep's models can run in lr0fm; choose others (lr0fm models --paper)")
    groups = [g for g in groups if g.model in models]
    run = config.run
    options = dict(protocol=run.protocol_options(), **run.pass_options())
    # workers check their device; the driver may have none
    device = dist.check_device(run.device, run.amp) if engine is None else engine.device(run.device)
    if args.dry_run:
        if dist.is_main():
            rows = cell_status(groups, config.resolutions, store, device=device, **options)
            for row in rows:
                variant = ",".join(f"{k}={v}" for k, v in sorted(row["variant"].items())) or "-"
                print(f"{'done' if row['done'] else 'pending':<8}{row['model']}  {row['dataset']}/{row['split']}  "
                      f"{row['resolution']}  {variant}  {row['cell']}")
            n_done = sum(r["done"] for r in rows)
            print(f"{len(rows)} cells: {n_done} done, {len(rows) - n_done} pending  (results: {store.root})")
        return 0
    device = dist.init(device) if engine is None else device
    started = time.time()
    try:
        records = run_groups(groups, config.resolutions, store, device=device, engine=engine, **options)
        if dist.is_main():
            print(text_report(records))
            if options.get("profile"):
                from ..evaluation.stages import stage_table
                print(stage_table(records, since=started))
            print(f"results: {store.root}")
    finally:
        dist.shutdown()
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:


    # --out (before or after 'sweep') is the global option; it overrides the config's 'out'
    p = add_command(subparsers, "sweep", help="run a YAML grid of models x datasets x resolutions (resumable, torchrun-ready)",
                              description=sweep_file_doc(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="sweep YAML file (or --preset)")
    p.add_argument("--preset", metavar="NAME", default=None,
                   help="a sweep shipped with lr0fm instead of a file: lr0fm = the paper's 66 models x 15 datasets "
                        "x 5 resolutions with the paper protocol")
    p.add_argument("--dry-run", action="store_true",
                   help="list the cells and which are done, building each model (with --preset: the --estimate "
                        "plan); run nothing")
    p.add_argument("--estimate", action="store_true",
                   help="count the cells, name missing datasets and estimate device time per model, building no "
                        "model and reading no image; run nothing")
    p.add_argument("--throughput", type=float, metavar="TFLOPS", default=None,
                   help="sustained TFLOPS for the estimate (default: 40 fp32, 190 bf16/fp16; see lr0fm.sweep_plan)")
    p.add_argument("--images-per-second", type=float, metavar="N", default=None,
                   help="images/s your input pipeline decodes: the estimate's floor per pass")
    p.add_argument("--models", action="append", metavar="FILTER",
                   help="keep models by name, family or backend: NAME,NAME or FIELD=V1,V2 "
                        "(e.g. family=OpenCLIP, backend=open_clip); repeatable (all must match)")
    p.add_argument("--datasets", metavar="KEY,KEY", default=None, help="keep only these datasets of the sweep")
    p.add_argument("--resolutions", metavar="R,R", default=None, help="keep only these resolutions of the sweep")
    p.add_argument("--device", default=None, help="run on this device (overrides the config's 'device')")
    # the run options (lr0fm.options.RunOptions), each overriding the config's key of that name
    add_arguments(p, parts=("run",), defaults=False, exclude=("resolutions", "device"))
    from ..engines import add_engine_args
    add_engine_args(p, plan=True)
    p.set_defaults(func=cmd_sweep)


def sweep_file_doc() -> str:
    """The sweep file's format (lr0fm.sweep's docstring) for --help; a light import."""
    from .. import sweep
    return sweep.__doc__
