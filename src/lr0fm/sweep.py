"""Sweeps: models x datasets x resolutions (x LR-token checkpoints x SR models) from a YAML file.

    lr0fm sweep sweep.yaml [--dry-run] [--out DIR]
    torchrun --nproc_per_node 4 -m lr0fm sweep sweep.yaml
    lr0fm sweep --preset lr0fm --dry-run [--models family=OpenCLIP] [--datasets dtd] [--resolutions 16,hr]

A preset is a config shipped with lr0fm (lr0fm = the paper's grid); filters and the estimate are
lr0fm.sweep_plan's.

A config (relative paths are taken from the config file's folder)::

    models: [open_clip:ViT-B-32:openai, conse-effnet-lite0]
    datasets: [tuxpaint, {key: imagefolder, data_root: imgs, templates: t.txt}]
    resolutions: [16, 32, 64, 128, hr]
    lr_tokens: [null, tokens.safetensors]   # optional; null = without tokens
    protocol: paper                         # optional: native (default) or paper; and any of
                                            # resize_mode, input_size, interpolation (overrides)
    sr: [null, bicubic]                     # optional; null = no super-resolution
    limit: 1000                             # and any of batch_size, workers, device, amp,
                                            # checkpoint_every, views, decoder, data_root, split, out
    download: true                          # optional (also per dataset): a paper dataset whose
                                            # files are missing is read from its hub copy

Every cell is a results-store record, so finished cells are skipped and an interrupted sweep
resumes (inside a group, from its last partial save) when run again. ``run_groups`` is also
what ``lr0fm eval`` runs, so both split work the same way under torchrun (lr0fm.distributed).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import distributed as dist
from .errors import InputError

# config key -> EvalConfig field, for the options a sweep passes through
EVAL_OPTIONS = ("batch_size", "workers", "device", "amp", "limit", "checkpoint_every", "views", "decoder", "topk")
# dataset entry keys passed to get_dataset as options (download: a paper dataset missing under
# data_root is read from its hub copy; true at top level applies to every dataset)
DATASET_OPTIONS = ("download", "image_column", "label_column")
DATASET_KEYS = ("key", "data_root", "split", "classnames", "templates", "name", *DATASET_OPTIONS)
# config key -> lr0fm.models.choose_protocol argument
PROTOCOL_OPTIONS = ("protocol", "resize_mode", "input_size", "interpolation")
CONFIG_KEYS = {"models", "datasets", "resolutions", "lr_tokens", "sr", "data_root", "split", "out", "progress", "download",
               *EVAL_OPTIONS, *PROTOCOL_OPTIONS}


@dataclass
class Group:
    """One pass over a dataset: a model (with its variant) at every resolution of the sweep."""

    model: Any                # a model name, or a ZeroShotModel built by the caller (lr0fm.evaluate)
    data: Any                 # LabeledImages
    lr_tokens: str | None = None
    sr: str | None = None
    trust_checkpoint: bool = False  # pickled weights: unpickle without restrictions (a file the user trusts)



def _loaded_models(groups: Sequence[Group], indices: Sequence[int], resolutions, device: str,
                   protocol: dict | None = None):
    """Yield (index, group, model, view_fn, variant), building each (model, variant) once in a row.
    ``protocol``: lr0fm.models.choose_protocol arguments (native/paper, overrides)."""
    from .variants import apply_variants
    from .models import choose_protocol, create_model

    key, built = None, None
    for i in indices:
        g = groups[i]
        if (g.model, g.lr_tokens, g.sr) != key:
            built = None  # free the previous model before building the next
            if isinstance(g.model, str):
                model = create_model(g.model, device=device, trust_checkpoint=g.trust_checkpoint)
            else:
                model = g.model
            if protocol:
                model = choose_protocol(model, **protocol)
            view_fn, variant = apply_variants(model, resolutions, g.lr_tokens, g.sr, device)
            key, built = (g.model, g.lr_tokens, g.sr), (model, view_fn, variant)
        yield (i, g, *built)


def run_groups(groups: Sequence[Group], resolutions, store, device: str = "cpu", protocol: dict | None = None,
               **options) -> list[dict]:
    """Evaluate every group (skipping finished cells); the records of all groups, in order, on every rank.

    In one process, all models of a dataset run in one pass (``evaluate_many``): each image is
    decoded once and its views are made once per group of models with the same view pixels, so a
    model zoo costs about the sum of its forwards (every model is held in memory meanwhile).
    Under torchrun the groups (or, when there are fewer groups than ranks, their images) are
    split over the ranks; ``options`` are EvalConfig fields.
    """
    from .evaluator import EvalConfig, Job, evaluate_many

    mine, shard_images = dist.plan_cells(groups)
    done, busy = [], []
    with dist.sharding(shard_images):
        if dist.active():  # one group at a time: ranks split groups or images
            loaded = lambda todo: ([entry] for entry in _loaded_models(groups, todo, resolutions, device, protocol))  # noqa: E731
        else:  # every model built once; one pass per dataset
            loaded = lambda todo: _by_dataset(_loaded_models(groups, todo, resolutions, device, protocol))  # noqa: E731
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


# -- config ----------------------------------------------------------------------------------
@dataclass
class SweepConfig:
    models: list[str]
    datasets: list[dict]
    resolutions: list
    lr_tokens: list
    sr: list
    options: dict
    out: str | None


def _as_list(value, name: str) -> list:
    if value is None:
        return [None]
    items = value if isinstance(value, list) else [value]
    if not items:
        raise InputError(f"sweep config: '{name}' is an empty list; give at least one entry or leave it out")
    return items


def _path(value, base: Path, must_exist: bool = False):
    """A config path relative to the config's folder (non-paths like 'bicubic' pass unchanged)."""
    if value is None:
        return None
    p = Path(str(value)).expanduser()
    if not p.is_absolute() and (not must_exist or (base / p).exists()):
        p = base / p
    return str(p) if (not must_exist or p.exists()) else str(value)


def load_config(path: str | Path) -> SweepConfig:
    import yaml
    from .protocol import parse_resolutions

    path = Path(path)
    if not path.is_file():
        raise InputError(f"sweep config {path} does not exist; give a YAML file (see 'lr0fm sweep --help')")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise InputError(f"sweep config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise InputError(f"sweep config {path} must be a mapping with at least 'models' and 'datasets'")
    unknown = sorted(set(raw) - CONFIG_KEYS)
    if unknown:
        raise InputError(f"sweep config {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(CONFIG_KEYS))}")
    for key in ("models", "datasets"):
        if not raw.get(key):
            raise InputError(f"sweep config {path} needs a non-empty '{key}' list")
    base = path.parent
    datasets = []
    for d in _as_list(raw["datasets"], "datasets"):
        d = {"key": d} if isinstance(d, str) else dict(d or {})
        if "key" not in d or set(d) - set(DATASET_KEYS):
            raise InputError(f"sweep config {path}: a dataset entry must be a key or a mapping with 'key' and any of "
                             f"{', '.join(DATASET_KEYS[1:])}; got {d}")
        d.setdefault("data_root", raw.get("data_root"))
        d.setdefault("split", raw.get("split"))
        d.setdefault("download", raw.get("download"))
        for k in ("data_root", "classnames", "templates"):
            d[k] = _path(d.get(k), base)
        datasets.append(d)
    options = {k: raw[k] for k in EVAL_OPTIONS if raw.get(k) is not None}
    options["progress"] = bool(raw.get("progress", True))
    options["protocol"] = {k: raw[k] for k in PROTOCOL_OPTIONS if raw.get(k) is not None}
    return SweepConfig(
        models=[str(m) for m in _as_list(raw["models"], "models")], datasets=datasets,
        resolutions=parse_resolutions(raw.get("resolutions", "16,32,64,128,hr")),
        lr_tokens=[_path(t, base) for t in _as_list(raw.get("lr_tokens"), "lr_tokens")],
        sr=[_path(s, base, must_exist=True) for s in _as_list(raw.get("sr"), "sr")],
        options=options, out=_path(raw.get("out"), base))


def expand(config: SweepConfig) -> list[Group]:
    """The sweep's groups, model-major (consecutive groups share a model build)."""
    from .datasets import get_dataset

    # Validate every dataset before any model is built or anything is written.
    datasets = [get_dataset(d["key"], root=d["data_root"], split=d["split"], classnames=d.get("classnames"),
                            templates=d.get("templates"), name=d.get("name"),
                            **{k: d[k] for k in DATASET_OPTIONS if d.get(k)}) for d in config.datasets]
    return [Group(m, data, t, s) for m in config.models for t in config.lr_tokens for s in config.sr
            for data in datasets]


def cell_status(groups: Sequence[Group], resolutions, store, device: str = "cpu", protocol: dict | None = None,
                **options) -> list[dict]:
    """One row per cell: model, dataset, split, resolution, variant, cell id, done (no image is read)."""
    from .evaluator import EvalConfig, plan

    rows = []
    for _, g, model, view_fn, variant in _loaded_models(groups, range(len(groups)), resolutions, "cpu", protocol):
        cfg = EvalConfig(resolutions=resolutions, device=device, variant=variant, **options)
        cfg, _, _, _, cells, _ = plan(model, g.data, cfg, view_fn)
        for r in resolutions:
            rows.append({"model": g.model, "dataset": g.data.spec.label, "split": g.data.spec.split, "resolution": r,
                         "variant": cfg.variant, "cell": cells[r], "done": store.complete(cells[r])})
    return rows


# -- command line ----------------------------------------------------------------------------
def cmd_sweep(args) -> int:
    import sys

    from .report import text_report
    from .store import ResultsStore
    from .sweep_plan import preset_names, preset_path, print_plan, runnable, select

    if bool(args.config) == bool(args.preset):
        raise InputError("give a sweep config file or --preset NAME (one of them; presets: "
                         f"{', '.join(preset_names())})")
    config = load_config(args.config or preset_path(args.preset))
    config = select(config, models=args.models, datasets=args.datasets, resolutions=args.resolutions)
    if args.device:
        config.options["device"] = args.device
    store = ResultsStore(args.out or config.out)
    if args.estimate or (args.dry_run and args.preset):  # a plan: no model built, no image read
        if dist.is_main():
            print_plan(config, store, f"preset {args.preset}" if args.preset else f"sweep {args.config}",
                       tflops=args.throughput, images_per_second=args.images_per_second)
        return 0
    if args.throughput is not None or args.images_per_second is not None:
        raise InputError("--throughput / --images-per-second set the estimate: add --estimate "
                         "(or --dry-run with --preset)")
    groups = expand(config)
    models, cannot = runnable(config.models)
    if cannot and dist.is_main():
        print(f"lr0fm sweep: skipping {', '.join(cannot)}: lr0fm cannot run them (catalog/models.yaml notes say why)",
              file=sys.stderr)
    if not models:
        raise InputError("none of the sweep's models can run in lr0fm; choose others (lr0fm models --paper)")
    groups = [g for g in groups if g.model in models]
    options = dict(config.options)
    device = dist.check_device(options.pop("device", "cpu"), options.get("amp"))
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
    device = dist.init(device)
    try:
        records = run_groups(groups, config.resolutions, store, device=device, **options)
        if dist.is_main():
            print(text_report(records))
            print(f"results: {store.root}")
    finally:
        dist.shutdown()
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from .cli import add_command

    # --out (before or after 'sweep') is the global option; it overrides the config's 'out'
    p = add_command(subparsers, "sweep", help="run a YAML grid of models x datasets x resolutions (resumable, torchrun-ready)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.set_defaults(func=cmd_sweep)


__all__ = ["Group", "SweepConfig", "add_commands", "cell_status", "expand", "load_config", "run_groups"]
