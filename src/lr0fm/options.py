"""The run options of an evaluation: how a pass runs (batch size, device, workers, ...).

Checked once here for ``lr0fm eval``, sweeps and the Python API."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .protocol import HR, parse_resolutions


@dataclass
class EvalConfig:
    resolutions: Sequence[int | str] = (16, 32, 64, 128, HR)
    batch_size: int = 32
    workers: int | None = None
    device: str = "cpu"
    amp: str | None = None            # None | "bf16" | "fp16"
    limit: int | None = None          # first N images only (quick looks; recorded)
    topk: int = 5
    checkpoint_every: int = 1000      # images between saves of the resume point
    progress: bool = True
    variant: dict = field(default_factory=dict)  # e.g. {"lr_tokens": HASH} or {"sr": NAME}
    # where views are made: "pil" (in the workers) or "device" (lr0fm.gpu_resize, the same pixels);
    # None: device on CUDA, pil on CPU. Recorded with the run, not in the identity (same numbers).
    views: str | None = None
    # who decodes JPEGs: "pil" (workers) or "device" (torchvision.io.decode_jpeg in batches on the
    # model's device; other formats stay on PIL); None: device when views are made on CUDA.
    # Part of the identity: decoders may differ by a few levels.
    decoder: str | None = None

    def __post_init__(self) -> None:
        """The run options' checks, in one place for `lr0fm eval`, sweeps and the Python API."""
        from .errors import InputError

        self.resolutions = parse_resolutions(self.resolutions)
        for name, least in (("batch_size", 1), ("limit", 1), ("workers", 0), ("checkpoint_every", 1)):
            value = getattr(self, name)
            if value is not None and value < least:
                raise InputError(f"--{name.replace('_', '-')} {value} must be at least {least}")
        if self.amp not in (None, "bf16", "fp16"):
            raise InputError(f"--amp {self.amp!r} unknown; use bf16 or fp16 (or leave it out for fp32)")
        for name in ("views", "decoder"):
            if getattr(self, name) not in (None, "pil", "device"):
                raise InputError(f"--{name} {getattr(self, name)!r} unknown; use pil or device")
