"""Measured pass speeds, kept beside the results in ``RESULTS/calibration.json``.

``lr0fm calibrate`` (lr0fm.evaluation.calibrate) times the real pass of each model on this
machine and stores one entry per (model, device name, amp, batch size): image x resolution pairs
per second through the whole pass (reading, decoding, views, forward, top-k), the fixed seconds
a pass costs whatever its size (workers starting, set-up), and prompts per second of the text
classifier. The sweep plan (``lr0fm sweep --estimate``, ``--dry-run --gpus N``) estimates a
pass from them where they exist::

    fixed_s + images x resolutions / pairs_per_s + prompts / prompts_per_s

and from the catalog's GFLOPs at an assumed throughput elsewhere, saying which is which.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .errors import InputError

FILE = "calibration.json"
FORMAT = 1


@dataclass(frozen=True)
class Speed:
    model: str                # as the sweep names it (catalog name or backend spec)
    device: str               # cpu, cuda, mps
    device_name: str          # e.g. "NVIDIA H200", or the CPU's model name and core count
    amp: str                  # fp32, bf16, fp16
    batch_size: int
    pairs_per_s: float        # image x resolution pairs per second of a pass, once started
    fixed_s: float            # seconds a pass costs whatever its size
    prompts_per_s: float | None  # the text classifier's prompts per second (None: not measured)
    images: int               # images of the longer timed pass
    resolutions: int          # resolutions per image while timed
    workers: int
    lr0fm: str
    torch: str
    measured_at: str          # UTC, ISO 8601

    def key(self) -> tuple:
        return (self.model, self.device, self.device_name, self.amp, self.batch_size)

    def seconds(self, images: int, resolutions: int, prompts: int | None = None) -> float:
        """Estimated seconds of a pass over ``images`` at ``resolutions``, building a classifier of
        ``prompts`` prompts (its text part is left out where the prompt speed was not measured)."""
        text = (prompts or 0) / self.prompts_per_s if self.prompts_per_s else 0.0
        return self.fixed_s + images * resolutions / self.pairs_per_s + text

    def describe(self) -> str:
        return (f"{self.pairs_per_s:,.0f} pairs/s + {self.fixed_s:.1f} s per pass on {self.device_name} "
                f"({self.amp}, batch {self.batch_size}, lr0fm {self.lr0fm}, {self.measured_at[:10]})")


def amp_name(amp: str | None) -> str:
    return amp or "fp32"


def device_type(device: str | None) -> str:
    return (device or "cpu").split(":")[0]


def path(root: str | os.PathLike) -> Path:
    return Path(root) / FILE


def load(root: str | os.PathLike) -> list[Speed]:
    """The speeds measured for a results folder (none without a calibration file)."""
    p = path(root)
    try:
        raw = json.loads(p.read_text())
        names = {f.name for f in fields(Speed)}
        return [Speed(**{k: v for k, v in entry.items() if k in names}) for entry in raw["speeds"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{p} cannot be read ({type(e).__name__}: {str(e)[:120]}); rerun lr0fm calibrate "
                         "or remove the file") from None


def save(root: str | os.PathLike, measured: list[Speed]) -> Path:
    """Add ``measured`` to the folder's calibration file, replacing entries of the same key."""
    from .atomic import atomic_write_bytes

    keep = {s.key(): s for s in load(root)}
    keep.update({s.key(): s for s in measured})
    data = {"format": FORMAT, "speeds": [asdict(s) for s in sorted(keep.values(), key=lambda s: s.key())]}
    atomic_write_bytes(path(root), (json.dumps(data, indent=1) + "\n").encode())
    return path(root)


def lookup(speeds: list[Speed], model: str, device: str | None, amp: str | None, batch_size: int,
           device_name: str | None = None) -> Speed | None:
    """The speed of a model for a run's device type, amp and batch size: measured on ``device_name``
    where there is one, else the latest measured on a device of that type (None: not measured)."""
    same = [s for s in speeds if (s.model, s.device, s.amp, s.batch_size) ==
            (model, device_type(device), amp_name(amp), batch_size)]
    here = [s for s in same if s.device_name == device_name]
    return max(here or same, key=lambda s: s.measured_at, default=None)


def device_name(device: str) -> str:
    """What the device is: the GPU's name, or the CPU's model and its cores."""
    import platform

    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type != "cpu":
        return dev.type
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cpus)"


def local_device_name(device: str | None) -> str | None:
    """This machine's device of that kind, by name; None where it has none (a login node planning a GPU sweep)."""
    kind = device_type(device)
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            return None
    elif kind != "cpu":
        return None
    try:
        return device_name(device or "cpu")
    except (RuntimeError, AssertionError, ValueError):  # an index this machine does not have
        return None


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


__all__ = ["FILE", "Speed", "amp_name", "device_name", "device_type", "load", "local_device_name", "lookup", "now",
           "path", "save"]
