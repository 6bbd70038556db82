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


def check_groups(groups: Sequence[Group], protocol: dict | None = None) -> None:
    """The options against every named model, before any is built (lr0fm.models.check_model_options):
    one line for an unknown name, a paper protocol of no paper backbone, a fixed input size."""
    from .models import check_model_options
    from .options import ProtocolChoice

    choice = ProtocolChoice(**(protocol or {}))
    for name in dict.fromkeys(g.model for g in groups if isinstance(g.model, str)):
        check_model_options(name, choice)


def load_models(groups: Sequence[Group], indices: Sequence[int], resolutions, device: str,
                   protocol: dict | None = None):
    """Yield (index, group, model, view_fn, variant), building each (model, variant) once in a row.
    ``protocol``: the ProtocolChoice fields (protocol name, overrides) lr0fm.models.choose_protocol applies."""
    from .variants import apply_variants
    from .models import choose_protocol, create_model
    from .options import ProtocolChoice

    choice = ProtocolChoice(**protocol) if protocol else None  # checked before any model is built
    key, built = None, None
    for i in indices:
        g = groups[i]
        if (g.model, g.lr_tokens, g.sr) != key:
            built = None  # free the previous model before building the next
            if isinstance(g.model, str):
                model = create_model(g.model, device=device, trust_checkpoint=g.trust_checkpoint)
            else:
                model = g.model
            if choice is not None:
                model = choose_protocol(model, choice)
            view_fn, variant = apply_variants(model, resolutions, g.lr_tokens, g.sr, device)
            key, built = (g.model, g.lr_tokens, g.sr), (model, view_fn, variant)
        yield (i, g, *built)
