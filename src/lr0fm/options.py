"""The options of a run, declared once: ``RunOptions``.

Each field's metadata (help, choices, flags, where it goes) generates the options of ``lr0fm eval``
and ``lr0fm sweep`` (``add_arguments``), the keys a sweep file may set (``SWEEP_KEYS``) and the
checks of ``lr0fm.evaluate(**options)`` (``RunOptions.from_mapping``). Where a value goes:

* ``run``: how a pass runs (``EvalConfig``, the pass's own config). Only ``amp``, ``limit``,
  ``topk`` and ``decoder`` change numbers, so only they enter a result's identity;
* ``protocol``: how views are made (``lr0fm.models.choose_protocol``), in the identity through the
  protocol;
* ``variant``: interventions on the model (LR tokens, super-resolution), in the identity as the
  variant; ``trust_checkpoint`` only allows a file to load.

Adding an option: one field here (and its use where it goes).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

from .errors import InputError
from .protocol import (DEFAULT_RESOLUTIONS, INTERPOLATIONS, RESIZE_MODES, RGB_ORDERS, check_input_size,
                       parse_resolutions)

PARTS = ("run", "protocol", "variant")


def option(default: Any, help: str, part: str, *, flags: Sequence[str] = (), choices: Sequence | None = None,
           type: Any = None, metavar: str | None = None, cli: bool = True, sweep: bool = True,
           kind: str | None = None) -> Any:
    """A dataclass field of RunOptions with what the front ends need to offer it."""
    assert part in PARTS
    return field(default=default, metadata={"help": help, "part": part, "flags": tuple(flags), "choices": choices,
                                            "type": type, "metavar": metavar, "cli": cli, "sweep": sweep,
                                            "kind": kind})


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number of pixels, got {text!r}") from None
    return parse


@dataclass
class RunOptions:
    # -- run: how a pass runs ------------------------------------------------------------------
    resolutions: Any = option("16,32,64,128,hr", "LR sizes in px and 'hr' (default: %(default)s)", "run",
                              flags=("--resolutions", "-r"))
    batch_size: int = option(32, "images per forward batch (default: %(default)s)", "run", type=int)
    workers: int | None = option(None, "DataLoader workers (default: cores - 1)", "run", type=int)
    device: str = option("cpu", "cpu, cuda, cuda:N or mps (default: %(default)s)", "run",
                         kind="a device such as 'cpu' or 'cuda:0'")
    amp: str | None = option(None, "autocast precision, part of the results' identity; on CPU too where this torch "
                             "autocasts to it (checked before the run; refused in one line otherwise)", "run",
                             choices=("bf16", "fp16"))
    limit: int | None = option(None, "only the first N images (recorded with results)", "run", type=int)
    topk: int = option(5, "predictions kept per image (top-5 accuracy needs 5)", "run", type=int, cli=False)
    checkpoint_every: int = option(1000, "images between resume-point saves (default: %(default)s)", "run", type=int)
    progress: bool = option(True, "show a progress bar", "run", flags=("--no-progress",))
    views: str | None = option(None, "where LR views are made: pil (decode workers) or device (batched on the "
                               "model's device, the same pixels); default: device on CUDA, pil on CPU", "run",
                               choices=("pil", "device"))
    decoder: str | None = option(None, "who decodes JPEGs: pil (workers) or device (torchvision, batched; part of "
                                 "the result identity); default: device when views are made on CUDA", "run",
                                 choices=("pil", "device"))
    profile: bool = option(False, "print each pass's stage times at the end (read, decode, views, forward, scoring, "
                           "top-k copy, resume points; recorded in run.stages either way; on CUDA the device stages "
                           "are timed only with this)", "run")
    profile_trace: str | None = option(None, "write a torch.profiler trace of a few batches of each pass to this "
                                       "folder (TensorBoard / Perfetto JSON)", "run", metavar="DIR", kind="a folder path")
    # -- protocol: how views are made ------------------------------------------------------------
    protocol: str = option("native", "native: the model's own preprocessing; paper: what the LR0.FM authors ran for "
                           "this backbone (lr0fm models --paper); paper:FAMILY: that family's protocol for any "
                           "model (e.g. paper:OpenCLIP for your own OpenCLIP fine-tune)", "protocol",
                           metavar="native|paper|paper:FAMILY", kind="a protocol name")
    resize_mode: str | None = option(None, "override the resize mode", "protocol", choices=RESIZE_MODES)
    input_size: int | None = option(None, "override the model input size S (px)", "protocol",
                                    type=_positive_int("--input-size"), kind="a whole number of pixels")
    interpolation: str | None = option(None, "override the resampling filter of the down and up steps", "protocol",
                                       choices=INTERPOLATIONS)
    rgb_order: str | None = option(None, "when images become RGB: first (lr0fm's native order: transparency on "
                                   "white, then resize) or last (the LR0.FM authors' chain: resize in the file's own "
                                   "mode, convert after)", "protocol", choices=RGB_ORDERS)
    hr_via: int | None = option(None, "make the HR view through a down step to this size (px) when it differs from "
                                "the input size, as the authors did at 224 for larger models; 0: straight",
                                "protocol", type=_positive_int("--hr-via"))
    # -- variant: interventions on the model ---------------------------------------------------
    lr_tokens: str | None = option(None, "LR-TK0 token checkpoint (.safetensors): tokens on at every resolution",
                                   "variant", sweep=False, kind="a file path")
    sr: str | None = option(None, "super-resolution model between LR image and classifier: 'bicubic' or a weights "
                            "file spandrel loads", "variant", sweep=False, kind="'bicubic' or a file path")
    trust_checkpoint: bool = option(False, "pickled weights (ALBEF/BLIP .pth, open_clip checkpoints): unpickle beyond "
                                    "tensors and plain data (runs code from the file; only for a file you trust)",
                                    "variant", sweep=False)

    def __post_init__(self) -> None:
        self.resolutions = tuple(parse_resolutions(self.resolutions))
        for f in fields(self):
            choices, value = f.metadata["choices"], getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise InputError(f"{flag(f.name)} {value!r} unknown; use one of {', '.join(choices)}")
        if self.input_size is not None:
            check_input_size(self.input_size)
        self.eval_config()  # the run part's checks (EvalConfig)

    # -- where the values go -------------------------------------------------------------------
    def part(self, name: str) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["part"] == name}

    def eval_config(self, variant: dict | None = None, device: str | None = None) -> "EvalConfig":
        run = self.part("run")
        if device is not None:
            run["device"] = device
        return EvalConfig(**run, variant=dict(variant or {}))

    def pass_options(self) -> dict:
        """The run part as lr0fm.runner.run_groups takes it (resolutions and device apart)."""
        return {k: v for k, v in self.part("run").items() if k not in ("resolutions", "device")}

    def protocol_options(self) -> dict:
        """lr0fm.models.choose_protocol's arguments (those set)."""
        return {k: v for k, v in self.part("protocol").items() if v is not None}

    # -- front ends ----------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str, keys: Sequence[str] | None = None) -> "RunOptions":
        """From a sweep file's or the API's keywords; an unknown key is one line naming the known ones."""
        known = list(keys if keys is not None else (f.name for f in fields(cls)))
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InputError(f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in values.items() if v is not None})

    @classmethod
    def check_kinds(cls, values: Mapping[str, Any], caller: str) -> None:
        """TypeError for an unknown option or a value of the wrong kind (from the fields' types; a
        bool is not a number; None only where it is the default), as a Python API reports them."""
        import numbers
        import typing

        hints = typing.get_type_hints(cls)
        kinds = {int: (numbers.Integral, "a whole number"), str: (str, "text"), bool: (bool, "True or False")}
        by_name = {f.name: f for f in fields(cls) if f.name != "resolutions"}
        for name, value in values.items():
            if name not in by_name:
                raise TypeError(f"{caller} got an unexpected argument {name!r}; known: {', '.join(sorted(by_name))}")
            wanted = [kinds[k] for k in typing.get_args(hints[name]) or (hints[name],) if k in kinds]
            if not wanted or (value is None and by_name[name].default is None):
                continue
            if not any(isinstance(value, k) and (k is bool or not isinstance(value, bool)) for k, _ in wanted):
                what = by_name[name].metadata["kind"] or " or ".join(w for _, w in wanted)
                raise TypeError(f"{caller} argument {name!r} must be {what}, not {type(value).__name__} {value!r:.60}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "RunOptions":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, parts: Sequence[str] = PARTS, defaults: bool = True,
                  exclude: Sequence[str] = ()) -> None:
    """RunOptions' command-line options of the given parts (but ``exclude``). ``defaults=False``:
    every option defaults to None (a sweep's command line overrides only what is given)."""
    for f in fields(RunOptions):
        m = f.metadata
        if not m["cli"] or m["part"] not in parts or f.name in exclude:
            continue
        flags = m["flags"] or (flag(f.name),)
        kwargs: dict = {"dest": f.name, "help": m["help"]}
        if isinstance(f.default, bool):
            kwargs["action"] = "store_false" if f.default else "store_true"
            kwargs["default"] = f.default if defaults else None
        else:
            kwargs["default"] = f.default if defaults else None
            for key in ("choices", "type", "metavar"):
                if m[key] is not None:
                    kwargs[key] = m[key]
        if not defaults:
            kwargs["help"] = kwargs["help"].replace(" (default: %(default)s)", "")
        parser.add_argument(*flags, **kwargs)


# the keys a sweep file may set besides its grid (models, datasets, lr_tokens, sr, ...)
SWEEP_KEYS = tuple(f.name for f in fields(RunOptions) if f.metadata["sweep"])


@dataclass
class EvalConfig:
    """The run part of the options as one pass uses it (and the variant it evaluates)."""

    resolutions: Sequence[int | str] = DEFAULT_RESOLUTIONS
    batch_size: int = 32
    workers: int | None = None
    device: str = "cpu"
    amp: str | None = None            # None | "bf16" | "fp16"
    limit: int | None = None          # first N images only (quick looks; recorded)
    topk: int = 5
    checkpoint_every: int = 1000      # images between saves of the resume point
    progress: bool = True
    variant: dict = field(default_factory=dict)  # e.g. {"lr_tokens": HASH} or {"sr": NAME}
    # where views are made: "pil" (in the workers) or "device" (lr0fm.tensor_views, the same pixels);
    # None: device on CUDA, pil on CPU. Recorded with the run, not in the identity (same numbers).
    views: str | None = None
    # who decodes JPEGs: "pil" (workers) or "device" (torchvision.io.decode_jpeg in batches on the
    # model's device; other formats stay on PIL); None: device when views are made on CUDA.
    # Part of the identity: decoders may differ by a few levels.
    decoder: str | None = None
    # stage times: device stages timed with CUDA events too, and printed at the end (lr0fm.evaluation.stages)
    profile: bool = False
    profile_trace: str | None = None  # a folder for a torch.profiler trace of each pass

    def __post_init__(self) -> None:
        """The run options' checks, in one place for `lr0fm eval`, sweeps and the Python API."""
        self.resolutions = parse_resolutions(self.resolutions)
        for name, least in (("batch_size", 1), ("limit", 1), ("workers", 0), ("checkpoint_every", 1), ("topk", 1)):
            value = getattr(self, name)
            if value is not None and value < least:
                raise InputError(f"{flag(name)} {value} must be at least {least}")
        if self.amp not in (None, "bf16", "fp16"):
            raise InputError(f"--amp {self.amp!r} unknown; use bf16 or fp16 (or leave it out for fp32)")
        for name in ("views", "decoder"):
            if getattr(self, name) not in (None, "pil", "device"):
                raise InputError(f"--{name} {getattr(self, name)!r} unknown; use pil or device")
