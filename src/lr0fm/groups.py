"""What the runner and every engine evaluate: a ``Group`` (one model, with its variant, on one
dataset at every requested resolution) and ``load_models``, which builds each group's model once
with its protocol and variant (LR tokens, SR)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass
class Group:
    """One pass over a dataset: a model (with its variant) at every resolution of the sweep."""

    model: Any                # a model name, or a ZeroShotModel built by the caller (lr0fm.evaluate)
    data: Any                 # LabeledImages
    lr_tokens: str | None = None
    sr: str | None = None
    trust_checkpoint: bool = False  # pickled weights: unpickle without restrictions (a file the user trusts)


def load_models(groups: Sequence[Group], indices: Sequence[int], resolutions, device: str,
                   protocol: dict | None = None):
    """Yield (index, group, model, view_fn, variant), building each (model, variant) once in a row.
    ``protocol``: lr0fm.models.choose_protocol arguments (native/paper, overrides)."""
    from .variants import apply_variants
    from .models import choose_protocol, create_model
    from .protocol import check_input_size

    if protocol and protocol.get("input_size") is not None:
        check_input_size(protocol["input_size"])  # before any model is built
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
