"""Planning a sweep before running it: shipped presets, filters, and a device-time estimate.

    lr0fm sweep --preset lr0fm --dry-run        # the paper's 66 x 15 x 5 grid; builds nothing
    lr0fm sweep --preset lr0fm --dry-run --models family=OpenCLIP --datasets dtd,pets --resolutions 16,hr
    lr0fm sweep my.yaml --estimate --throughput 120

A *preset* is a sweep config shipped with lr0fm (``catalog/sweeps/NAME.yaml``). *Filters* cut a
config's models (by name, family or backend), datasets and resolutions before anything else.

The *plan* (``--dry-run`` of a preset, ``--estimate`` of any config) builds no model and reads no
image. Cells are counted from the config. Each dataset is looked up (its file lists, not its
images); a missing one is named with what to download and its hub copy (its card, catalog/datasets/)
and counted with the paper's image count. Done/pending comes from the stored records, matched by
model, dataset, split, resolution, protocol, limit and amp: a cell's exact id also digests the
model's weights and every image, which only ``lr0fm sweep CONFIG --dry-run`` computes (it builds
each model). A run always skips exactly the finished cells.

Estimated device time of a (model, dataset) pass over its pending resolutions::

    (images x resolutions x image_gflops + prompts x text_gflops) / throughput

GFLOPs per image and per prompt come from catalog/models.yaml; prompts = classes x templates
(the text classifier is built once per model and dataset); throughput is ``--throughput TFLOPS``
(measure yours: benchmarks/throughput.py) or ``DEFAULT_TFLOPS`` for the config's amp.
``--images-per-second N`` (images your input pipeline decodes per second) makes a pass take at
least images / N seconds. Every LR view is resized back to the model's input size, so a view
costs the same at every resolution.

Measured speeds replace that where they exist: ``lr0fm calibrate`` times each model's real pass on
a machine and keeps the speeds in ``RESULTS/calibration.json`` (lr0fm.speeds), keyed by model,
device name, amp and batch size; a model measured for the sweep's device type, amp and batch size
(on this machine's device of that type where it was measured there, else the latest) is
estimated as ``fixed + images x resolutions / pairs_per_s + prompts / prompts_per_s``, and the
plan says which models are measured and which assumed.
"""
from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from .catalog import dataset_sources, model_catalog, paper_families
from .datasets import DatasetError
from .errors import InputError

PRESETS_DIR = "catalog/sweeps"
# Sustained TFLOPS assumed without --throughput. bf16/fp16: measured -- open_clip ViT-B-32's image
# tower on one H200, bf16, batch 256: 21,455 images/s x 8.82 GFLOPs (docs/performance.md). fp32: an
# assumption, not measured: ~60% of an H100/H200's 67 TFLOPS fp32 peak (torch leaves TF32 matmuls off).
DEFAULT_TFLOPS = {"fp32": 40.0, "bf16": 190.0, "fp16": 190.0}
MODEL_FIELDS = ("name", "family", "backend")


# -- presets ---------------------------------------------------------------------------------
def preset_names() -> list[str]:
    from . import resources
    return sorted(p.stem for p in resources.path(PRESETS_DIR).glob("*.yaml"))


def preset_path(name: str) -> Path:
    from . import resources
    if name not in preset_names():
        raise InputError(f"unknown sweep preset {name!r}; presets: {', '.join(preset_names())}")
    return resources.path(f"{PRESETS_DIR}/{name}.yaml")


# -- filters ---------------------------------------------------------------------------------
def catalog_entry(model: str) -> dict | None:
    """The catalog row of a model given by catalog name or by its backend spec (open_clip:ARCH:TAG)."""
    catalog = model_catalog()
    if model in catalog:
        return catalog[model]
    return next((e for e in catalog.values() if f"{e['backend']}:{e.get('backend_id')}" == model), None)


def model_fields(model: str) -> dict:
    """name, family and backend of a sweep's model, without building it (None where unknown)."""
    entry = catalog_entry(model)
    if entry is not None:
        return {"name": model, "family": entry["family"], "backend": entry["backend"]}
    from .models import ModelError, resolve
    try:
        backend = resolve(model)[0]
    except ModelError:  # an unknown name fails when the sweep runs, with its own message
        backend = None
    return {"name": model, "family": None, "backend": backend}


def filter_models(models: list[str], specs: list[str]) -> list[str]:
    """Keep the models matching every spec: ``FIELD=V1,V2`` (FIELD: name, family, backend; any of
    the values, case-insensitive) or ``V1,V2`` (names). A value no model has is an error."""
    fields = {m: model_fields(m) for m in models}
    for spec in specs:
        field, eq, values = spec.partition("=")
        field, values = (field.strip(), values) if eq else ("name", spec)
        if field not in MODEL_FIELDS:
            raise InputError(f"--models {spec}: unknown field {field!r}; use {'=, '.join(MODEL_FIELDS)}= "
                             "or a comma-separated list of names")
        wanted = [v.strip() for v in values.split(",") if v.strip()]
        if not wanted:
            raise InputError(f"--models {spec}: give at least one value, e.g. --models family=OpenCLIP")
        present = {str(f[field]): str(f[field]).lower() for f in fields.values() if f[field] is not None}
        for value in wanted:
            if value.lower() not in present.values():
                close = difflib.get_close_matches(value, list(present), n=3, cutoff=0.5)
                hint = (f"did you mean {', '.join(close)}?" if close else
                        f"its {len(present)} models are listed by --dry-run" if field == "name" else
                        f"the sweep's {field} values: {', '.join(sorted(set(present)))}")
                raise InputError(f"--models {spec}: no model of the sweep has {field} {value!r}; {hint}")
        lowered = {v.lower() for v in wanted}
        models = [m for m in models if str(fields[m][field]).lower() in lowered]
    if not models:
        raise InputError(f"--models {' --models '.join(specs)}: no model of the sweep matches all of them")
    return models


def select(config, models: list[str] | None = None, datasets: str | None = None,
           resolutions: str | None = None):
    """The config cut to the filtered models, datasets (by key or name) and resolutions, in the config's order."""
    from .protocol import parse_resolutions

    if models:
        config = replace(config, models=filter_models(config.models, models))
    if datasets:
        wanted = [d.strip() for d in datasets.split(",") if d.strip()]
        known = [d.get("name") or d["key"] for d in config.datasets]
        unknown = [w for w in wanted if not any(w in (d["key"], d.get("name")) for d in config.datasets)]
        if unknown or not wanted:
            raise InputError(f"--datasets {datasets}: {', '.join(unknown) or 'nothing given'} not in the sweep; "
                             f"its datasets: {', '.join(known)}")
        config = replace(config, datasets=[d for d in config.datasets if d["key"] in wanted or d.get("name") in wanted])
    if resolutions:
        wanted = parse_resolutions(resolutions)
        unknown = [str(r) for r in wanted if r not in config.resolutions]
        if unknown:
            raise InputError(f"--resolutions {resolutions}: {', '.join(unknown)} not in the sweep; its resolutions: "
                             f"{','.join(map(str, config.resolutions))}")
        config = config.with_run(resolutions=[r for r in config.resolutions if r in wanted])
    return config


def runnable(models: list[str]) -> tuple[list[str], list[str]]:
    """(models lr0fm can run, catalog models it cannot: backend 'unsupported')."""
    cannot = [m for m in models if (catalog_entry(m) or {}).get("backend") == "unsupported"]
    return [m for m in models if m not in cannot], cannot


# -- the plan --------------------------------------------------------------------------------
@dataclass
class DatasetPlan:
    key: str
    label: str                # what records call it
    split: str | None         # None: not known before the dataset is found
    found: bool | None        # None: a hub repo, fetched when the sweep runs
    images: int | None        # the local copy's count, else the paper's, else None (after the config's limit)
    prompts: int | None       # classes x templates
    problem: str = ""         # why it is missing: the loader's one line


@dataclass
class ModelPlan:
    model: str
    cells: int
    pending: int | None       # cells without a stored record (None: not known, see recorded_cells)
    image_views: int | None   # images x resolutions of the pending cells (None: a dataset's count unknown)
    image_gflops: float | None
    seconds: float | None
    note: str = ""
    measured: object = None   # its lr0fm.speeds.Speed where the seconds come from a calibration


def _is_hub_repo(key: str) -> bool:
    from .datasets import SOURCE_PREFIXES
    prefix, colon, source = key.partition(":")
    return bool(colon) and prefix in SOURCE_PREFIXES and not Path(source).expanduser().exists()


def plan_datasets(config) -> list[DatasetPlan]:
    """Look each dataset up (file lists only; hub repos are not fetched); never raises for a missing one."""
    from .datasets import REGISTRY, SOURCE_PREFIXES, get_dataset, unknown_dataset_message
    from .datasets.base import load_classnames_templates

    limit = config.run.limit
    cap = (lambda n: n if n is None or limit is None else min(n, limit))  # noqa: E731
    plans = []
    for d in config.datasets:
        key, label = d["key"], d.get("name") or d["key"]
        if key not in REGISTRY and key.partition(":")[0] not in SOURCE_PREFIXES:
            raise DatasetError(unknown_dataset_message(key))
        if _is_hub_repo(key):
            plans.append(DatasetPlan(key, label, d.get("split"), None, None, None))
            continue
        try:
            data = get_dataset(key, root=d["data_root"], split=d["split"], classnames=d.get("classnames"),
                               templates=d.get("templates"), name=d.get("name"))
        except DatasetError as e:
            try:
                names, templates = load_classnames_templates(key, d.get("classnames"), d.get("templates"))
                prompts = len(names) * len(templates)
            except (DatasetError, OSError):
                prompts = None
            images = dataset_sources().get(key, {}).get("paper_images")
            plans.append(DatasetPlan(key, label, d.get("split"), False, cap(images), prompts, str(e)))
        else:
            spec = data.spec
            plans.append(DatasetPlan(key, spec.label, spec.split, True, cap(len(data)),
                                     len(spec.classnames) * len(spec.templates)))
    return plans


def recorded_cells(config, datasets: list[DatasetPlan], store) -> set[tuple] | None:
    """(model, dataset label, resolution) of the config's cells with a stored record of the same model,
    dataset, split, resolution, protocol, limit and amp. None for LR-token / SR variants, whose
    records differ only by digests."""
    if any(t is not None for t in config.lr_tokens) or any(s is not None for s in config.sr):
        return None
    choice = config.run.protocol_choice()
    overrides = choice.overrides()  # the Protocol fields the options set
    asked = choice.protocol
    if asked.lower().startswith("paper:"):  # the family as the catalog spells it, as records do
        asked = "paper:" + paper_families()[asked.split(":", 1)[1].lower()]
    splits = {d.label: d.split for d in datasets}
    limit, amp = config.run.limit, config.run.amp or "fp32"
    models = set(config.models)
    found = set()
    from .identity import protocol_choice
    from .records import amp_of, limit_of, protocol_of, split_of, variant_of

    for r in store.records():
        p = protocol_of(r)
        if ((r.get("model") in models or r.get("model_id") in models) and r.get("dataset") in splits
                and splits[r["dataset"]] in (None, split_of(r)) and r.get("resolution") in config.resolutions
                and protocol_choice(p) == (asked, bool(overrides))
                and all(p.get(k) == v for k, v in overrides.items())
                and limit_of(r) == limit and amp_of(r) == amp
                and not {"lr_tokens", "sr"} & set(variant_of(r))):
            model = r["model"] if r.get("model") in models else r["model_id"]
            found.add((model, r["dataset"], r["resolution"]))
    return found


def pass_seconds(images: int, prompts: int | None, resolutions: int, image_gflops: float,
                 text_gflops: float | None, tflops: float) -> float:
    """Estimated device seconds of one pass of a model over ``images`` at ``resolutions`` views each."""
    flops = images * resolutions * image_gflops + (prompts or 0) * (text_gflops or 0)
    return flops / (tflops * 1e3)  # GFLOPs / (TFLOPS * 1000 GFLOPs per TFLOP)


def input_floor(seconds: float, images: int, images_per_second: float | None) -> float:
    """``seconds``, but at least the time to read and decode ``images`` at ``images_per_second``
    (--images-per-second; each image is decoded once per pass, whatever its models and views)."""
    return max(seconds, images / images_per_second) if images_per_second else seconds


def measured_speeds(models, options: dict, root) -> dict:
    """model -> its measured lr0fm.speeds.Speed for a run's ``options`` (device, amp, batch size):
    the models ``lr0fm calibrate`` measured in the results folder ``root``. The dry run and the
    engines' scheduling (lr0fm.engines.units.unit_costs) both cost passes from these."""
    from . import speeds
    from .options import RunOptions

    found = speeds.load(root)
    if not found:
        return {}
    device, amp = options.get("device"), options.get("amp")
    batch = options.get("batch_size") or RunOptions.__dataclass_fields__["batch_size"].default
    here = speeds.local_device_name(device)
    out = {}
    for model in models:
        speed = speeds.lookup(found, model, device, amp, batch, here)
        if speed is not None:
            out[model] = speed
    return out


def estimated_pass_seconds(model: str | None, entry: dict, images: int | None, prompts: int | None, resolutions: int,
                           tflops: float, images_per_second: float | None, measured: dict) -> float | None:
    """A pass's estimated seconds: from the model's measured speed, else from its catalog GFLOPs
    (None: neither, or the image count is unknown)."""
    if images is None:
        return None
    if model in measured:
        seconds = measured[model].seconds(images, resolutions, prompts)
    elif entry.get("image_gflops") is not None:
        seconds = pass_seconds(images, prompts, resolutions, entry["image_gflops"], entry.get("text_gflops"), tflops)
    else:
        return None
    return input_floor(seconds, images, images_per_second)


def pass_estimates(config, datasets: list[DatasetPlan], recorded: set[tuple] | None, tflops: float,
                   images_per_second: float | None = None, measured: dict | None = None) -> list[dict]:
    """One row per (model, variant, dataset) pass with pending cells: model, dataset, images,
    pending (cells), seconds (None: no GFLOPs in the catalog or image count unknown), measured
    (the seconds come from the model's speed in ``measured``, lr0fm calibrate's). The units
    lr0fm.engines schedules."""
    measured = measured or {}
    _, cannot = runnable(config.models)
    rows = []
    for model in config.models:
        if model in cannot:
            continue
        entry = catalog_entry(model) or {}
        for _ in range(len(config.lr_tokens) * len(config.sr)):
            for d in datasets:
                pending = [r for r in config.resolutions if recorded is None or (model, d.label, r) not in recorded]
                if not pending:
                    continue
                rows.append({"model": model, "dataset": d.label, "images": d.images, "pending": len(pending),
                             "seconds": estimated_pass_seconds(model, entry, d.images, d.prompts, len(pending), tflops,
                                                               images_per_second, measured),
                             "measured": model in measured})
    return rows


def estimate(config, datasets: list[DatasetPlan], recorded: set[tuple] | None, tflops: float,
             images_per_second: float | None = None, measured: dict | None = None) -> list[ModelPlan]:
    """Per model: cells, pending cells and the estimated seconds of its pending passes (from its
    speed in ``measured`` where it has one)."""
    measured = measured or {}
    variants = len(config.lr_tokens) * len(config.sr)
    _, cannot = runnable(config.models)
    plans = []
    for model in config.models:
        entry = catalog_entry(model) or {}
        image_gflops = entry.get("image_gflops")
        pending_total, views_total, seconds = 0, 0, 0.0
        for d in datasets:
            pending = [r for r in config.resolutions if recorded is None or (model, d.label, r) not in recorded]
            pending_total += len(pending) * variants
            if not pending:
                continue
            if d.images is None:
                views_total = None
            elif views_total is not None:
                views_total += d.images * len(pending) * variants
            one = estimated_pass_seconds(model, entry, d.images, d.prompts, len(pending), tflops, images_per_second,
                                         measured)
            seconds = None if seconds is None or one is None else seconds + one * variants
        if model in cannot:
            note = "cannot run in lr0fm (backend unsupported); a run skips it"
        elif model in measured:
            note = "measured: " + measured[model].describe() + (
                "; a dataset's image count is unknown" if any(d.images is None for d in datasets) else "")
        elif image_gflops is None:
            note = "no GFLOPs in the catalog" if entry else "not a catalog model: no GFLOPs"
        elif any(d.images is None for d in datasets):
            note = "a dataset's image count is unknown"
        else:
            note = ""
        n_cells = variants * len(datasets) * len(config.resolutions)
        plans.append(ModelPlan(model, n_cells, None if recorded is None else pending_total, views_total,
                               image_gflops, seconds, note, measured.get(model)))
    return plans


def _hub_hint(key: str) -> str:
    source = dataset_sources().get(key)
    if not source:
        return ""
    if not source.get("repo"):
        return "; no hub copy"
    same = {True: "the paper's images", False: "other images than the paper's"}.get(
        source.get("matches_paper"), "same images as the paper: not established")
    return f"; hub copy: {source['format']}:{source['repo']} split {source['split']} ({same})"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:,.1f} min"


def print_plan(config, store, title: str, tflops: float | None = None, images_per_second: float | None = None,
               out=None) -> list[ModelPlan]:
    """Print the plan of a sweep (cells, datasets, estimate per model) and return the per-model rows."""
    from .datasets import DATA_ROOT_ENV, default_data_root

    out = out or sys.stdout
    for flag, value in (("--throughput", tflops), ("--images-per-second", images_per_second)):
        if value is not None and not value > 0:
            raise InputError(f"{flag} {value} must be a positive number")
    amp = config.run.amp or "fp32"
    default = tflops is None
    tflops = DEFAULT_TFLOPS[amp] if default else tflops
    datasets = plan_datasets(config)
    recorded = recorded_cells(config, datasets, store)
    measured = measured_speeds(config.models, config.options, store.root)
    rows = estimate(config, datasets, recorded, tflops, images_per_second, measured)
    n_cells = sum(r.cells for r in rows)
    variants = len(config.lr_tokens) * len(config.sr)
    shape = " x ".join([f"{len(config.models)} models", *([f"{variants} variants"] if variants > 1 else []),
                        f"{len(config.datasets)} datasets", f"{len(config.resolutions)} resolutions"])
    protocol = config.run.protocol_options()
    protocol = " ".join([protocol.pop("protocol"), *(f"{k}={v}" for k, v in protocol.items())])
    print(f"{title}: {shape} = {n_cells} cells (protocol {protocol}); nothing built, no image read", file=out)
    if recorded is None:
        print("done/pending: not known for LR-token / SR variants without building the models", file=out)
    else:
        done = n_cells - sum(r.pending for r in rows)
        print(f"done/pending: {done} done, {n_cells - done} pending (stored records in {store.root} matched by "
              "model, dataset, split, resolution, protocol, limit and amp; a run checks weights and images "
              "and skips exactly the finished cells)", file=out)
    missing = [d for d in datasets if d.found is False]
    hub = [d for d in datasets if d.found is None]
    print(f"datasets: {sum(bool(d.found) for d in datasets)} of {len(datasets)} found"
          + (f", {len(hub)} hub repos fetched when the sweep runs" if hub else "")
          + (f" (default root ${DATA_ROOT_ENV}/<key> = {default_data_root()}/<key>)" if missing else ""), file=out)
    for d in missing:
        count = f"{d.images:,} images in the paper" if d.images is not None else "image count unknown"
        print(f"  missing {d.label} ({count}){_hub_hint(d.key)}\n    {d.problem}", file=out)
    source = ("default for " + amp + (": measured on one H200, bf16" if amp != "fp32" else ": an assumption")
              + "; give yours with --throughput") if default else "given"
    print(f"estimated device time at {tflops:g} TFLOPS ({source})"
          + (f", at least images / {images_per_second:g} per second per pass" if images_per_second else
             "; compute only (--images-per-second N adds your input pipeline's limit)") + ":", file=out)
    n_measured = sum(r.measured is not None for r in rows)
    from .speeds import path as speeds_path
    print(f"speeds: {n_measured} of {len(rows)} models measured (lr0fm calibrate, {speeds_path(store.root)}: "
          f"the whole pass on that device), {len(rows) - n_measured} assumed (catalog GFLOPs at the TFLOPS above)",
          file=out)
    width = max([len("model"), *(len(r.model) for r in rows)])
    print(f"  {'model':<{width}}  {'cells':>6} {'pending':>7} {'images x res':>13} {'GFLOPs/img':>10} "
          f"{'est. seconds':>13} {'speed':>8}", file=out)
    for r in rows:
        pending = "?" if r.pending is None else str(r.pending)
        views = "?" if r.image_views is None else f"{r.image_views:,}"
        gflops = "-" if r.image_gflops is None else f"{r.image_gflops:g}"
        seconds = "?" if r.seconds is None else f"{r.seconds:,.1f}" if r.seconds >= 1 else f"{r.seconds:.2g}"
        speed = "measured" if r.measured is not None else "assumed" if r.seconds is not None else "-"
        print(f"  {r.model:<{width}}  {r.cells:>6} {pending:>7} {views:>13} {gflops:>10} {seconds:>13} {speed:>8}"
              + (f"  {r.note}" if r.note else ""), file=out)
    known = [r.seconds for r in rows if r.seconds is not None]
    views = sum(r.image_views or 0 for r in rows)
    unknown = len(rows) - len(known)
    total = sum(known)
    print(f"total: {n_cells} cells, {views:,} image views, ~{total:,.0f} s ({_duration(total)})"
          + (f" for {len(known)} of {len(rows)} models ({unknown} without an estimate)" if unknown else ""), file=out)
    return rows


__all__ = ["DEFAULT_TFLOPS", "DatasetPlan", "ModelPlan", "catalog_entry", "estimate", "estimated_pass_seconds",
           "filter_models", "input_floor", "measured_speeds", "model_fields", "pass_estimates", "pass_seconds",
           "plan_datasets", "preset_names", "preset_path", "print_plan", "recorded_cells", "runnable", "select"]
