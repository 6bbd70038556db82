"""lr0fm: low-resolution robustness of zero-shot vision-language foundation models.

The Python API (docs/api.md)::

    import lr0fm
    model = lr0fm.create_model("conse-effnet-lite0")
    lr0fm.evaluate(model, "tuxpaint", resolutions=[16, 32, "hr"])
    df = lr0fm.load_results()
    lr0fm.sar(df), lr0fm.war(df)

Names are imported on first use, so ``import lr0fm`` does not import torch.
"""
from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (import time)

from .version import __version__  # noqa: E402

# public name -> the module that defines it (the objects the CLI uses)
_PUBLIC = {
    "list_models": "lr0fm.api", "create_model": "lr0fm.models", "list_datasets": "lr0fm.api",
    "get_dataset": "lr0fm.datasets", "evaluate": "lr0fm.api", "load_results": "lr0fm.api",
    "gamma": "lr0fm.api", "Gamma": "lr0fm.api", "sar": "lr0fm.api", "war": "lr0fm.api",
    "effective_resolution": "lr0fm.api",
    "LowResolution": "lr0fm.transforms",
}
__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:  # pragma: no cover
    from .api import Gamma, effective_resolution, evaluate, gamma, list_datasets, list_models, load_results, sar, war
    from .datasets import get_dataset
    from .transforms import LowResolution
    from .models import create_model


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lr0fm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
