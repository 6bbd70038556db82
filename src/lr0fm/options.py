"""The options of a run, declared once: ``RunOptions``.

Each field's metadata (help, choices, bounds, flags, where it goes) generates the options of
``lr0fm eval`` and ``lr0fm sweep`` (``add_arguments``), the keys a sweep file may set
(``SWEEP_KEYS``), the checks of ``lr0fm.evaluate(**options)`` (``RunOptions.from_mapping``) and
the lists of them in the API's and the sweep file's docs (``option_list``). Where a value goes:

* ``run``: how a pass runs: ``EvalConfig``, the run fields as one pass takes them. Only ``amp``,
  ``limit``, ``topk`` and ``decoder`` change numbers, so only they enter a result's identity;
* ``protocol``: how views are made: ``ProtocolChoice``, the protocol fields, which
  ``lr0fm.models.choose_protocol`` applies to a model (each override sets the ``Protocol`` field
  its ``sets`` names); in the identity through the protocol;
* ``variant``: interventions on the model (LR tokens, super-resolution), in the identity as the
  variant; ``trust_checkpoint`` only allows a file to load.

Every value is checked when the object is made, before any model is built or image read: a bad
one is one line (InputError or ProtocolError). Adding an option: one field here (and its use
where it goes: a protocol option's ``sets`` names its Protocol field).
"""
from __future__ import annotations

import argparse
import numbers
import os
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import InputError, ProtocolError
from .protocol import (INTERPOLATIONS, RESIZE_MODES, RGB_ORDERS, check_hr_via, check_input_size,
                       parse_resolutions)

PARTS = ("run", "protocol", "variant")


def option(default: Any, help: str, part: str, *, flags: Sequence[str] = (), choices: Sequence | None = None,
           type: Any = None, metavar: str | None = None, cli: bool = True, sweep: bool = True,
           kind: str | None = None, least: int | None = None, check: Callable[[Any], Any] | None = None,
           sets: str | tuple[str, Callable[[Any], Any]] | None = None) -> Any:
    """A dataclass field of RunOptions with what the front ends need to offer and check it:
    ``least``, the smallest whole number it takes; ``check``, a function of a given value that
    returns it as kept (normalised) or raises one line; ``sets`` (protocol part), the Protocol
    field a given value overrides, or (field, function of the value)."""
    assert part in PARTS
    return field(default=default, metadata={"help": help, "part": part, "flags": tuple(flags), "choices": choices,
                                            "type": type, "metavar": metavar, "cli": cli, "sweep": sweep,
                                            "kind": kind, "least": least, "check": check, "sets": sets})


def _whole_number(name: str):
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number of pixels, got {text!r}") from None
    return parse


def check_protocol_name(name: str) -> str:
    """native, paper or paper:FAMILY with a family of the paper's catalog; else one line naming them."""
    from .catalog import paper_families

    kind, sep, family = str(name).partition(":")
    families = paper_families()
    if kind == "paper" and sep and family:
        if family.lower() not in families:
            raise ProtocolError(f"--protocol paper:{family}: no such family in the paper's catalog; use one of "
                                f"{', '.join(sorted(families.values()))}")
    elif name not in ("native", "paper"):
        raise ProtocolError(f"--protocol {name!r} unknown; use native, paper or paper:FAMILY (FAMILY one of "
                            f"{', '.join(sorted(families.values()))})")
    return name


def check_lr_tokens(path: str) -> str:
    if not Path(path).expanduser().is_file():
        raise InputError(f"--lr-tokens {path}: no such file; give a token checkpoint (.safetensors) from "
                         "'lr0fm train-tokens'")
    return path


# extensions of the SR weights spandrel's ModelLoader reads
SR_WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")


def check_sr(spec: str) -> str:
    """``--sr``: 'bicubic' or an existing weights file (lr0fm.sr loads it); else one line."""
    if spec.strip().lower() != "bicubic" and not Path(spec).expanduser().is_file():
        raise InputError(f"--sr {spec!r}: neither 'bicubic' nor an existing weights file "
                         f"({', '.join(SR_WEIGHT_SUFFIXES)} that spandrel loads)")
    return spec


def check_trace_folder(folder: str) -> str:
    """``--profile-trace``: a folder that is or can be made (an existing file is not); nothing made yet."""
    path = Path(folder).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"--profile-trace {folder}: {existing} is a file; give a writable folder for the trace")
    if existing is not None and not os.access(existing, os.W_OK):
        raise InputError(f"--profile-trace {folder}: {existing} is not writable; give a writable folder")
    return str(folder)


def _check(self) -> None:
    """Every field's checks (choices, bounds, its ``check``), in field order: the first bad value
    is one line. Frozen objects: a normalised value is set in place."""
    for f in fields(self):
        m, value = f.metadata, getattr(self, f.name)
        if value is None or not m:
            continue
        if m["choices"] and value not in m["choices"]:
            raise InputError(f"{flag(f.name)} {value!r} unknown; use one of {', '.join(m['choices'])}")
        if m["least"] is not None:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise InputError(f"{flag(f.name)} {value!r} must be a whole number")
            if value < m["least"]:
                raise InputError(f"{flag(f.name)} {value} must be at least {m['least']}")
        if m["check"] is not None:
            object.__setattr__(self, f.name, m["check"](value))


@dataclass(frozen=True)
class RunOptions:
    """Every option of a run, checked when made (``lr0fm eval``'s flags, a sweep file's keys,
    ``lr0fm.evaluate``'s keywords); ``dataclasses.replace`` checks a changed one again."""

    # -- run: how a pass runs ------------------------------------------------------------------
    resolutions: Any = option("16,32,64,128,hr", "LR sizes in px and 'hr' (default: %(default)s)", "run",
                              flags=("--resolutions", "-r"), check=lambda r: tuple(parse_resolutions(r)))
    batch_size: int = option(32, "images per forward batch (default: %(default)s)", "run", type=int, least=1)
    workers: int | None = option(None, "DataLoader workers (default: cores - 1)", "run", type=int, least=0)
    device: str = option("cpu", "cpu, cuda, cuda:N or mps (default: %(default)s)", "run",
                         kind="a device such as 'cpu' or 'cuda:0'")
    amp: str | None = option(None, "autocast precision, part of the results' identity; on CPU too where this torch "
                             "autocasts to it (checked before the run; refused in one line otherwise)", "run",
                             choices=("bf16", "fp16"))
    limit: int | None = option(None, "only the first N images (recorded with results)", "run", type=int, least=1)
    topk: int = option(5, "predictions kept per image (top-5 accuracy needs 5)", "run", type=int, cli=False, least=1)
    checkpoint_every: int = option(1000, "images between resume-point saves (default: %(default)s)", "run", type=int,
                                   least=1)
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
                                       "folder (TensorBoard / Perfetto JSON)", "run", metavar="DIR", kind="a folder path",
                                       check=check_trace_folder)
    # -- protocol: how views are made ------------------------------------------------------------
    protocol: str = option("native", "native: the model's own preprocessing; paper: what the LR0.FM authors ran for "
                           "this backbone (lr0fm models --paper); paper:FAMILY: that family's protocol for any "
                           "model (e.g. paper:OpenCLIP for your own OpenCLIP fine-tune)", "protocol",
                           metavar="native|paper|paper:FAMILY", kind="a protocol name", check=check_protocol_name)
    resize_mode: str | None = option(None, "override the resize mode", "protocol", choices=RESIZE_MODES, sets="mode")
    input_size: int | None = option(None, "override the model input size S (px; only a model whose input size is "
                                    "not fixed, e.g. a CNN)", "protocol", type=_whole_number("--input-size"),
                                    kind="a whole number of pixels", check=check_input_size, sets="input_size")
    interpolation: str | None = option(None, "override the resampling filter of the down and up steps", "protocol",
                                       choices=INTERPOLATIONS, sets="interpolation")
    rgb_order: str | None = option(None, "when images become RGB: first (lr0fm's native order: transparency on "
                                   "white, then resize) or last (the LR0.FM authors' chain: resize in the file's own "
                                   "mode, convert after)", "protocol", choices=RGB_ORDERS,
                                   sets=("rgb_last", lambda order: order == "last"))
    hr_via: int | None = option(None, "make the HR view through a down step to this size (px) when it differs from "
                                "the input size, as the authors did at 224 for larger models; 0: straight",
                                "protocol", type=_whole_number("--hr-via"), kind="a whole number of pixels",
                                check=check_hr_via, sets=("hr_via", lambda size: size or None))
    # -- variant: interventions on the model ---------------------------------------------------
    lr_tokens: str | None = option(None, "LR-TK0 token checkpoint (.safetensors): tokens on at every resolution",
                                   "variant", sweep=False, kind="a file path", check=check_lr_tokens)
    sr: str | None = option(None, "super-resolution model between LR image and classifier: 'bicubic' or a weights "
                            "file spandrel loads", "variant", sweep=False, kind="'bicubic' or a file path",
                            check=check_sr)
    trust_checkpoint: bool = option(False, "pickled weights (ALBEF/BLIP .pth, open_clip checkpoints): unpickle beyond "
                                    "tensors and plain data (runs code from the file; only for a file you trust)",
                                    "variant", sweep=False)

    __post_init__ = _check

    # -- where the values go -------------------------------------------------------------------
    def part(self, name: str) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["part"] == name}

    def pass_options(self) -> dict:
        """The run part as lr0fm.runner.run_groups takes it (resolutions and device apart)."""
        return {k: v for k, v in self.part("run").items() if k not in ("resolutions", "device")}

    def protocol_choice(self) -> "ProtocolChoice":
        return ProtocolChoice(**self.part("protocol"))

    def protocol_options(self) -> dict:
        """The protocol as lr0fm.runner.run_groups takes it: the protocol name and the overrides given."""
        return self.protocol_choice().given()

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


def _part(name: str, extra: Sequence[tuple] = ()) -> type:
    """A frozen dataclass of RunOptions' fields of one part (the same defaults, metadata and
    checks), plus ``extra`` fields: what the derived option objects below are made of."""
    spec = [(f.name, f.type, field(default=f.default, metadata=f.metadata))
            for f in fields(RunOptions) if f.metadata["part"] == name]
    return make_dataclass(f"{name.title()}Part", [*spec, *extra], frozen=True,
                          namespace={"__post_init__": _check, "__module__": __name__})


class EvalConfig(_part("run", extra=[("variant", "dict", field(default_factory=dict))])):
    """The run part of the options as one pass uses it, and the variant it evaluates
    (``{"lr_tokens": DIGEST}``, ``{"sr": ID}``). Where views are made (``views``) is recorded with
    the run, not in the identity (same pixels); who decodes (``decoder``) is in it."""


class ProtocolChoice(_part("protocol")):
    """How a model's views are made: the protocol name (native, paper, paper:FAMILY) and the
    overrides of RunOptions' protocol part (None: not given)."""

    def given(self) -> dict:
        """The protocol name and every override that was given (one at its default, e.g. a False
        switch, is not given: it changes neither the protocol nor its ``source``, so no identity)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name == "protocol" or getattr(self, f.name) != f.default}

    def overrides(self) -> dict:
        """The Protocol fields the given overrides set (each option's ``sets``)."""
        out = {}
        for f in fields(self):
            value, sets = getattr(self, f.name), f.metadata["sets"]
            if sets is not None and value != f.default:
                target, convert = (sets, lambda v: v) if isinstance(sets, str) else sets
                out[target] = convert(value)
        return out


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def option_list(part: str | None = None, sweep: bool | None = None, exclude: Sequence[str] = ()) -> str:
    """RunOptions' field names as a docstring lists them: ``a``, ``b``, ... (of one part, only
    those a sweep file may set, but ``exclude``)."""
    return ", ".join(f"``{f.name}``" for f in fields(RunOptions)
                     if (part is None or f.metadata["part"] == part) and (sweep is None or f.metadata["sweep"] == sweep)
                     and f.name not in exclude)


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
