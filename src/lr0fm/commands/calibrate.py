"""lr0fm calibrate: each model's pass speed measured here, for the sweep plan (lr0fm.speeds)."""
from __future__ import annotations

from ..errors import InputError
from ..options import EvalConfig, RunOptions, add_arguments
from . import add_command, csv_list

# run options that do not change a pass's speed, or that calibrate sets itself
NOT_HERE = ("limit", "progress", "profile", "profile_trace")


def cmd_calibrate(args) -> int:
    import tempfile
    from pathlib import Path

    from .. import distributed as dist
    from ..evaluation.calibrate import calibrate, generate_jpegs, image_files
    from ..models import choose_protocol, create_model
    from ..speeds import device_name, save
    from ..store import ResultsStore

    if bool(args.model) + bool(args.config) + bool(args.preset) != 1:
        raise InputError("give the models to calibrate: -m M1,M2, a sweep config file or --preset NAME (one of them)")
    if args.models and args.model:
        raise InputError("--models filters a sweep config's or preset's models; with -m name the models themselves")
    if not args.seconds > 0:
        raise InputError(f"--seconds {args.seconds} must be a positive number")
    options, protocol, out = {}, {}, args.out
    if args.model:
        models = csv_list(args.model)
        resolutions = None
    else:
        from ..sweep import load_config
        from ..sweep_plan import preset_path, runnable, select

        config = select(load_config(args.config or preset_path(args.preset)), models=args.models)
        models = runnable(config.models)[0]
        if not models:
            raise InputError("none of the sweep's models can run in lr0fm; nothing to calibrate")
        options = {k: v for k, v in config.options.items() if k not in ("protocol", *NOT_HERE)}
        protocol = config.options.get("protocol") or {}
        resolutions, out = config.resolutions, args.out or config.out
    given = {f: getattr(args, f) for f in RunOptions.__dataclass_fields__ if getattr(args, f, None) is not None}
    if resolutions is not None and "resolutions" not in given:
        given["resolutions"] = resolutions
    run = RunOptions.from_mapping({**options, **given}, "lr0fm calibrate")
    cfg = EvalConfig(resolutions=run.resolutions, device=dist.check_device(run.device, run.amp), **run.pass_options())
    store = ResultsStore(out)
    images = image_files(args.images) if args.images else None
    where = device_name(cfg.device)
    print(f"calibrating {len(models)} model(s) on {where} ({cfg.device}, {cfg.amp or 'fp32'}, batch {cfg.batch_size}, "
          f"{len(cfg.resolutions)} resolutions; {'images of ' + args.images if images else 'generated JPEGs'}), "
          f"a long pass of about {args.seconds:g} s each", flush=True)
    with tempfile.TemporaryDirectory(prefix="lr0fm-calibrate-jpegs-") as tmp:
        images = images or generate_jpegs(Path(tmp), 256)
        for name in models:
            model = create_model(name, device=cfg.device, trust_checkpoint=run.trust_checkpoint)
            if protocol:
                model = choose_protocol(model, **protocol)
            speed = calibrate(model, name, cfg, images, args.seconds,
                              log=(lambda text: print(f"    {text}", flush=True)) if args.verbose else None)
            del model
            path = save(store.root, [speed])  # after each model: a long calibration keeps what it measured
            text = f"{speed.prompts_per_s:,.1f} prompts/s" if speed.prompts_per_s else "text not measured"
            print(f"  {name}: {speed.pairs_per_s:,.1f} image x resolution pairs/s, {speed.fixed_s:.2f} s fixed per "
                  f"pass, {text}", flush=True)
    print(f"saved to {path}: lr0fm sweep --estimate and --dry-run --gpus N use these speeds for {cfg.device} "
          f"{cfg.amp or 'fp32'} batch {cfg.batch_size}")
    return 0


def add_commands(sub) -> None:
    p = add_command(sub, "calibrate", help="measure each model's pass speed here (for lr0fm sweep's estimates)",
                    description="Times the real pass (reading, decoding, views, forward, top-k) of each model on this "
                                "machine, after a warm-up, and stores the speeds in RESULTS/calibration.json, keyed "
                                "by model, device name, amp and batch size. `lr0fm sweep --estimate` and "
                                "`--dry-run --gpus N` use them where they exist (docs/performance.md).")
    p.add_argument("config", nargs="?", help="a sweep YAML file: its models, with its run options")
    p.add_argument("--model", "-m", default=None, help="model name(s), comma-separated (instead of a sweep config)")
    p.add_argument("--preset", metavar="NAME", default=None, help="a sweep shipped with lr0fm (lr0fm sweep --preset)")
    p.add_argument("--models", action="append", metavar="FILTER",
                   help="with a config or preset: keep models by name, family or backend (as lr0fm sweep --models)")
    p.add_argument("--images", metavar="DIR", default=None,
                   help="time on these image files (cycled as often as needed; default: generated 500x375 JPEGs)")
    p.add_argument("--seconds", type=float, default=20.0,
                   help="about how long the long timed pass of each model takes (default: %(default)s)")
    p.add_argument("--trust-checkpoint", action="store_true", default=None,
                   help="pickled weights: unpickle beyond tensors (only for a file you trust)")
    # the run options that set a pass's speed, each overriding the config's key of that name
    add_arguments(p, parts=("run",), defaults=False, exclude=NOT_HERE)
    p.set_defaults(func=cmd_calibrate)

