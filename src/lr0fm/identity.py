"""What makes two evaluations the same: the one place that decides a result's identity.

An *evaluation* is one model run over one dataset with one protocol; a *cell* is one of its
resolutions. Everything that can change a number is part of the identity:

* model    -- backend, id, weights digest, backend kwargs, text config;
* data     -- key, split, build options, a digest of the ordered (sample id, label, content)
              list, class names, templates;
* protocol -- every view-making setting (size, mode, interpolation, mean/std, how views and
              pixels are made);
* numerics -- autocast precision, top-k;
* variant  -- LR-token checkpoint digest, SR model id (architecture and weights digest);
* limit    -- the --limit that cut the data.

What cannot change a number is not in it: data root path, device index, workers, batch size,
and display names (a dataset's ``--name`` or folder stem labels its rows, nothing more). So
moving or renaming a dataset folder keeps its results, and a different image under the same file
name does not.

The weights digest is one string per model, made by the constructors here that every backend
uses: a weights file's sha256 (``weights_from_file``), 'sha256:' + a folder digest
(``weights_from_folder``), 'hf-commit:' + a hub commit (``weights_from_hub_commit``), several
pieces joined (``combined_weights``: ConSE's image network, text encoder and ImageNet label
embeddings), or, when a model records none, 'state:' + a digest of its state dict
(``weights_from_state``, via ``weights_digest``). Results and LR-token checkpoints use that one
digest.

Cell ids, the classifier cache key, resume points and token checkpoint ids all derive from here,
as digests of one length (lr0fm.digests.DIGEST_CHARS); records carry the parts in readable form.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from .digests import ALL_FILES, DIGEST_CHARS, digest, folder_digest, tensors_digest, text_digest

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from .protocol import Protocol

# Bump when a rule changes what an unchanged description means, so that ids made under the old
# rule never match new ones. A rule that changes what is digested (a part added or dropped, a
# weights digest of another form) changes the ids by itself and needs no bump.
IDENTITY_VERSION = 2


# -- weights fingerprints: how every backend names the weights it loaded ----------------------
def weights_from_file(path: str | os.PathLike) -> str:
    """A weights file: its sha256 (64 hex characters, remembered by lr0fm.filedigest)."""
    from .filedigest import file_digest

    return file_digest(path)


def weights_from_folder(folder: str | os.PathLike, patterns: Sequence[str] = ALL_FILES) -> str:
    """A folder of weights (a save_pretrained folder): 'sha256:' + the folder digest of the files
    ``patterns`` select (lr0fm.digests.folder_digest), so a moved folder keeps it."""
    return "sha256:" + folder_digest(folder, patterns)


def weights_from_hub_commit(commit: str) -> str:
    """A hub repo at one commit (which pins every file of it): 'hf-commit:<40-hex sha>'."""
    return f"hf-commit:{commit}"


def weights_from_state(module: "nn.Module") -> str:
    """Weights that come from no file (random init, a model built in Python): 'state:' + the
    digest of the module's state dict as it is now."""
    return "state:" + tensors_digest(module.state_dict())


def combined_weights(main: str, **parts: str) -> str:
    """Weights of a model made of several pieces: ``main`` then '+name:digest' per other piece,
    in the order given (ConSE: image network, text encoder, label embeddings)."""
    return main + "".join(f"+{name}:{part}" for name, part in parts.items())


# A model's weights digest, once computed from its state dict, is kept on the model under this
# key of ``info.extra`` (a model whose weights change in place must drop it: lr0fm.api.evaluate).
STATE_DIGEST_KEY = "_state_digest"


def weights_digest(model: Any) -> str:
    """The one digest of a model's weights, which results and LR-token checkpoints are tied to:
    the fingerprint its backend recorded (``info.weights_hash``), else ``weights_from_state`` of
    the whole model (computed once and kept on the model)."""
    info = model.info
    if info.weights_hash:
        return info.weights_hash
    found = info.extra.get(STATE_DIGEST_KEY)
    if found is None:
        found = info.extra[STATE_DIGEST_KEY] = weights_from_state(model)
    return found


# -- the parts -------------------------------------------------------------------------------
def model_part(model: Any) -> dict:
    """Model identity: backend, id, weights digest (``weights_digest``), backend kwargs, text config."""
    info = model.info
    return {"backend": info.backend, "id": info.model_id, "weights": weights_digest(model),
            "kwargs": dict(getattr(info, "kwargs", {}) or {}), "text": asdict(model.text_cfg)}


def sample_fingerprints(data: Any) -> list[str]:
    """Per sample, what its content is: a file's sha256 (cached by path, size and mtime), the
    sha256 of in-memory bytes, or the dataset's source digest with the reference."""
    from .filedigest import file_digests

    refs = [ref for ref, _ in data.samples]
    out: list[str | None] = [None] * len(refs)
    paths = [(i, r) for i, r in enumerate(refs) if isinstance(r, (str, os.PathLike)) and Path(r).is_file()]
    for (i, _), d in zip(paths, file_digests([r for _, r in paths])):
        out[i] = d
    for i, ref in enumerate(refs):
        if out[i] is not None:
            continue
        if isinstance(ref, (bytes, bytearray, memoryview)):
            out[i] = hashlib.sha256(ref).hexdigest()
        elif data.source_digest:
            out[i] = f"{data.source_digest}:{ref}"
        else:  # a missing file: unreadable either way; its name still identifies the sample
            out[i] = f"missing:{ref}"
    return out  # type: ignore[return-value]


def data_part(data: Any) -> dict:
    """Data identity. The display name (``spec.name``: a folder's stem, ``--name``) is left out:
    it labels results and cannot change a number."""
    spec = data.spec
    listing = [[data.sample_id(i), data.label(i), fp] for i, fp in enumerate(sample_fingerprints(data))]
    return {"key": spec.key, "split": spec.split, "options": dict(spec.options),
            "n": len(data), "samples": digest(listing), "classnames": text_digest(spec.classnames),
            "templates": text_digest(spec.templates), "num_classes": spec.num_classes}


def protocol_part(protocol: "Protocol", views: str = "pil", decoder: str = "pil") -> dict:
    """The view-making settings. ``views`` names how views are made only when that changes
    pixels (an approximation); exact device views are the protocol itself."""
    import PIL

    part = protocol.describe()
    part["decoder"] = decoder
    # Pillow's resampler changed between major versions (13 runs some passes in another order,
    # and each pass rounds): PIL-made views are Pillow-version specific, and so are device views,
    # which reproduce the installed Pillow
    part["pillow"] = PIL.__version__.split(".")[0]
    if views != "pil":
        part["views"] = views
    return part


def protocol_choice(protocol: Mapping) -> tuple[str, bool]:
    """(the protocol asked for: native, paper or paper:FAMILY; whether options overrode it) of a
    protocol part, read from its ``source`` (lr0fm.models.choose_protocol writes it)."""
    source = str(protocol.get("source", "native"))
    return source.split("+")[0].split(" (")[0], "+override" in source


def same_views_key(protocol: "Protocol") -> str:
    """Equal for protocols whose uint8 views are the same pixels: everything that makes a view,
    without mean and std (they apply after the views, on the model's device) and the source (a
    name for the settings); models with equal keys share one set of views in a pass."""
    return repr(sorted((k, v) for k, v in protocol.describe().items() if k not in ("mean", "std", "source")))


# -- an evaluation ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    """One (model, data, protocol, numerics, variant, limit): every resolution of it shares these."""

    model: dict
    data: dict
    protocol: dict
    numerics: dict
    variant: dict
    limit: int | None

    def describe(self) -> dict:
        return {"version": IDENTITY_VERSION, **asdict(self)}

    @property
    def id(self) -> str:
        return evaluation_id(self.describe())

    def cell(self, resolution: int | str) -> str:
        return cell_id(self.id, resolution)

    def resume_key(self, pending: Iterable[int | str]) -> str:
        """The resume point of a pass over the ``pending`` resolutions (several passes of one
        evaluation over different resolution sets keep separate resume points)."""
        return f"{self.id}-{digest(list(pending))}"

    @property
    def classifier_key(self) -> str:
        """The text classifier depends on the model and the prompts only."""
        return classifier_id(self.describe())


# The ids of a description (``Evaluation.describe()``, a record's ``identity``): Evaluation uses
# these, and ``lr0fm verify`` re-derives a record's ids with them from the parts it carries.
def evaluation_id(description: Mapping) -> str:
    return digest(dict(description))


def cell_id(evaluation: str, resolution: int | str) -> str:
    return digest({"evaluation": evaluation, "resolution": resolution})


def classifier_id(description: Mapping) -> str:
    return digest({"version": description.get("version"), "model": description.get("model"),
                   "classnames": (description.get("data") or {}).get("classnames"),
                   "templates": (description.get("data") or {}).get("templates")})


def evaluation(model: Any, data: Any, protocol: "Protocol", *, amp: str | None = None,
               topk: int = 5, variant: Mapping | None = None, limit: int | None = None, views: str = "pil",
               decoder: str = "pil") -> Evaluation:
    """The identity of evaluating ``model`` on ``data`` (already cut to ``limit``)."""
    return Evaluation(model=model_part(model), data=data_part(data),
                      protocol=protocol_part(protocol, views=views, decoder=decoder),
                      numerics={"amp": amp or "fp32", "topk": min(topk, data.spec.num_classes)},
                      variant=dict(variant or {}), limit=limit)


# What two evaluations of one model row / one dataset row may differ by (reports, compare and the
# analyses tell rows apart with these, and only these).
MODEL_SIDE = ("model", "protocol", "numerics", "variant")
DATA_SIDE = ("data", "limit")


def model_side(description: Mapping, variant: bool = True) -> dict:
    """The model side of an evaluation's description (``Evaluation.describe()``, a record's
    ``identity``): weights, protocol, numerics and, unless ``variant=False``, the variant."""
    return {k: description.get(k) for k in MODEL_SIDE if variant or k != "variant"}


def data_side(description: Mapping) -> dict:
    """The data side of an evaluation's description: the data part and the --limit."""
    return {k: description.get(k) for k in DATA_SIDE}


def data_matcher(data: Any):
    """description -> whether its evaluation ran on ``data``'s images, labels and class names
    (cut to its --limit): the data part without the options that only say how the images were
    listed. The images are hashed once per limit."""
    samples: dict[int | None, str] = {}

    def matches(description: Mapping) -> bool:
        stored, limit = description.get("data") or {}, description.get("limit")
        if limit not in samples:
            samples[limit] = data_part(data if limit is None else data.subset(range(min(limit, len(data)))))
        mine = samples[limit]
        return all(stored.get(k) == mine[k] for k in ("split", "classnames", "samples"))
    return matches


def classifier_key(model: Any, classnames: Sequence[str], templates: Sequence[str]) -> str:
    """The classifier cache key without a full evaluation (same rule as Evaluation.classifier_key)."""
    return classifier_id({"version": IDENTITY_VERSION, "model": model_part(model),
                          "data": {"classnames": text_digest(classnames), "templates": text_digest(templates)}})


# -- telling evaluations apart ---------------------------------------------------------------
def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


# flattened identity key -> the short name a label uses
_SHORT = {"model.weights": "weights", "model.id": "model", "data.samples": "data", "data.templates": "templates",
          "data.classnames": "classnames", "data.n": "n", "numerics.amp": "amp", "numerics.topk": "topk",
          "protocol.mode": "mode", "protocol.input_size": "size", "protocol.interpolation": "interp",
          "protocol.views": "views", "protocol.decoder": "decoder", "data.split": "split"}


def _show(key: str, value: Any) -> str:
    if key == "limit" and value is None:
        return "all"
    text = json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else str(value)
    if len(text) > 16 and all(c in "0123456789abcdef:" for c in text.split(":")[-1]):
        text = text.split(":")[-1][:8]  # a digest: its first 8 characters tell runs apart
    return text


def differences(identities: Sequence[Mapping]) -> list[str]:
    """For evaluations that share a name, a label each naming what differs (``limit=60``,
    ``amp=bf16``, ``templates=1a2b3c4d``); an empty string when there is one evaluation."""
    flat = [_flatten(dict(i)) for i in identities]
    keys = sorted({k for f in flat for k in f})
    differing = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1]
    def label(keys):
        return [", ".join(f"{_SHORT.get(k, k)}={_show(k, f.get(k))}" for k in keys) for f in flat]

    # data.n / data.samples follow from limit: say the cause, not its consequences -- unless the
    # data differs beyond the limit (two folders cut to the same --limit), which needs them
    if "limit" in differing:
        reduced = label([k for k in differing if k not in ("data.n", "data.samples")])
        if len(set(reduced)) == len(reduced):
            return reduced
    return label(differing)


__all__ = ["DIGEST_CHARS", "Evaluation", "IDENTITY_VERSION", "STATE_DIGEST_KEY", "cell_id", "classifier_id",
           "classifier_key", "combined_weights", "data_part", "differences", "digest", "evaluation", "evaluation_id",
           "model_part", "protocol_part", "sample_fingerprints",
           "tensors_digest", "text_digest", "weights_digest", "weights_from_file", "weights_from_folder",
           "weights_from_hub_commit", "weights_from_state"]
