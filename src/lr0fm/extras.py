"""Optional backends: the pip extra of lr0fm that installs each, and one error line when it is missing.

The plain install runs the offline default (ConSE: EfficientNet-Lite + MiniLM through transformers),
open_clip and transformers models, and reporting. What only some commands need is an extra
(pyproject.toml [project.optional-dependencies]); the engines name theirs (ray, slurm) themselves.
"""
from __future__ import annotations

import importlib

from .errors import InputError

# importable module -> the extra that installs it
EXTRA_OF = {
    "datasets": "hub-datasets",    # hfds: datasets (and the paper datasets' hub copies in that format)
    "webdataset": "hub-datasets",  # wds: datasets
    "diffusers": "synth",          # lr0fm synth
    "nltk": "wordnet",             # lr0fm analyze predictions (WordNet similarity)
    "spandrel": "sr",              # --sr WEIGHTS_FILE (super-resolution networks)
}


def require(module: str, what: str, error: type[Exception] = InputError):
    """The imported ``module`` (a key of EXTRA_OF), or ``error`` with one line: ``what`` needs it
    and the pip command that installs it. ``error`` is the caller's kind (DatasetError for a
    dataset, ...), so that callers which tell kinds apart keep doing so."""
    install = f"pip install 'lr0fm[{EXTRA_OF[module]}]'"
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name == module:
            raise error(f"{what} needs {module}, which is not installed: {install}") from None
        # installed, but something it imports is missing or broken
        raise error(f"{what} needs {module}, which is installed but fails to import ({str(e).splitlines()[0]}); "
                    f"reinstall it: {install}") from None
