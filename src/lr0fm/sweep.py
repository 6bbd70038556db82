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
    protocol: paper                         # optional: native (default), paper or paper:FAMILY
    sr: [null, bicubic]                     # optional; null = no super-resolution
    limit: 1000                             # optional: any run option (below)
    data_root: data                         # optional (also per dataset), as are split and out
    download: true                          # optional (also per dataset): a paper dataset whose
                                            # files are missing is read from its hub copy

{options}

Every cell is a results-store record, so finished cells are skipped and an interrupted sweep
resumes (inside a group, from its last partial save) when run again. ``run_groups`` is also
what ``lr0fm eval`` runs, so both split work the same way under torchrun (lr0fm.distributed).
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import InputError
from .groups import Group
from .options import SWEEP_KEYS, RunOptions, check_lr_tokens, check_sr, option_list

if __doc__:  # the keys' list from their one declaration (python -OO drops docstrings)
    __doc__ = __doc__.replace("{options}", textwrap.fill(
        "Besides the grid, a config may set the options of lr0fm.options.RunOptions, checked as lr0fm eval checks "
        f"them: how passes run, {option_list('run', sweep=True)}; how views are made (the protocol and its "
        f"overrides), {option_list('protocol', sweep=True)}.", width=96))

# dataset entry keys passed to get_dataset as options (download: a paper dataset missing under
# data_root is read from its hub copy; true at top level applies to every dataset)
DATASET_OPTIONS = ("download", "image_column", "label_column")
DATASET_KEYS = ("key", "data_root", "split", "classnames", "templates", "name", *DATASET_OPTIONS)
# the grid and its defaults; every other key is a run option (lr0fm.options.SWEEP_KEYS)
GRID_KEYS = ("models", "datasets", "lr_tokens", "sr", "data_root", "split", "out", "download")
CONFIG_KEYS = {*GRID_KEYS, *SWEEP_KEYS}


# -- config ----------------------------------------------------------------------------------
@dataclass
class SweepConfig:
    models: list[str]
    datasets: list[dict]
    lr_tokens: list
    sr: list
    run: RunOptions               # the run options, resolutions included (checked when made)
    out: str | None

    @property
    def resolutions(self) -> tuple:
        return self.run.resolutions

    def with_run(self, **changes) -> "SweepConfig":
        """This sweep with run options changed (checked again, as the config's own keys were)."""
        return replace(self, run=replace(self.run, **changes))

    @property
    def options(self) -> dict:
        """The run options as lr0fm.runner.run_groups takes them, with ``device``."""
        return {**self.run.pass_options(), "device": self.run.device, "protocol": self.run.protocol_options()}


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


def _model_paths(name: str, base: Path) -> str:
    """A model name whose parts are files or folders beside the config (an architecture JSON, a
    checkpoint, a save_pretrained folder: open_clip:ARCH.json:ckpt.pt, hf:./finetune) names them
    there; hub names and tags pass unchanged."""
    parts, base = str(name).split(":"), base.resolve()  # absolute: workers may start elsewhere
    return ":".join(str(base / p) if p and not Path(p).expanduser().is_absolute() and (base / p).exists() else p
                    for p in parts)


def load_config(path: str | Path) -> SweepConfig:
    import yaml

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
        for k in ("key", "split", "name"):  # YAML reads split: 2017 as a number; get_dataset takes text
            if d.get(k) is not None and not isinstance(d[k], str):
                raise InputError(f"sweep config {path}: dataset {k} {d[k]!r} must be text; quote it, e.g. "
                                 f"{k}: \"{d[k]}\"")
        d.setdefault("download", raw.get("download"))
        for k in ("data_root", "classnames", "templates"):
            d[k] = _path(d.get(k), base)
        datasets.append(d)
    run = RunOptions.from_mapping({k: raw[k] for k in SWEEP_KEYS if k in raw}, f"sweep config {path}")
    lr_tokens = [_path(t, base) for t in _as_list(raw.get("lr_tokens"), "lr_tokens")]
    sr = [_path(s, base, must_exist=True) for s in _as_list(raw.get("sr"), "sr")]
    for check, values in ((check_lr_tokens, lr_tokens), (check_sr, sr)):  # before any model is built
        for value in values:
            if value is not None:
                check(value)
    return SweepConfig(models=[_model_paths(m, base) for m in _as_list(raw["models"], "models")], datasets=datasets,
                       lr_tokens=lr_tokens, sr=sr, run=run, out=_path(raw.get("out"), base))


def expand(config: SweepConfig) -> list[Group]:
    """The sweep's groups, model-major (consecutive groups share a model build)."""
    from .datasets import get_dataset

    # Validate every dataset before any model is built or anything is written.
    datasets = [get_dataset(d["key"], root=d["data_root"], split=d["split"], classnames=d.get("classnames"),
                            templates=d.get("templates"), name=d.get("name"),
                            **{k: d[k] for k in DATASET_OPTIONS if d.get(k)}) for d in config.datasets]
    return [Group(m, data, t, s) for m in config.models for t in config.lr_tokens for s in config.sr
            for data in datasets]


# -- command line ----------------------------------------------------------------------------


__all__ = ["SweepConfig", "expand", "load_config"]
