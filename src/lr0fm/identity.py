"""What makes two evaluations the same: the one place that decides a result's identity.

An *evaluation* is one model run over one dataset with one protocol; a *cell* is one of its
resolutions. Everything that can change a number is part of the identity:

* model    -- backend, id, weights digest (a file's sha256, a hub commit, or a digest of the
              state dict when neither exists), backend kwargs, text config;
* data     -- key, name, split, build options, a digest of the ordered (sample id, label,
              content) list, class names, templates;
* protocol -- every view-making setting (size, mode, interpolation, mean/std, how views and
              pixels are made);
* numerics -- autocast precision, top-k;
* variant  -- LR-token checkpoint digest, SR model digest;
* limit    -- the --limit that cut the data.

What cannot change a number is not in it: data root path, device index, workers, batch size.
So moving a dataset folder keeps its results, and a different image under the same file name
does not. Cell ids, the classifier cache key, resume points and token checkpoint ids all derive
from here, as digests of one length; records carry the parts in readable form.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .datasets.base import LabeledImages
    from .models.base import ZeroShotModel
    from .protocol import Protocol

# Bump when the rules below change: ids made under other rules never match new ones.
IDENTITY_VERSION = 2
DIGEST_CHARS = 32  # every id lr0fm derives has this many hex characters


def digest(obj: Any) -> str:
    """The id of plain data (canonical JSON)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


def text_digest(lines: Sequence[str]) -> str:
    return digest(list(lines))


def tensors_digest(tensors: Mapping[str, "torch.Tensor"], meta: Mapping | None = None) -> str:
    """The id of named tensors (a state dict, LR tokens): names, dtypes, shapes and bytes in sorted
    order, plus optional metadata -- not a file's bytes, whose layout may vary between saves."""
    import torch

    h = hashlib.sha256(json.dumps(dict(meta or {}), sort_keys=True).encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:DIGEST_CHARS]


# -- the parts -------------------------------------------------------------------------------
def model_part(model: "ZeroShotModel") -> dict:
    """Model identity. A model without a recorded weights digest gets one from its state dict
    (computed once and kept on the model)."""
    info = model.info
    weights = info.weights_hash
    if not weights:
        weights = info.extra.get("_state_digest")
        if weights is None:
            weights = "state:" + tensors_digest(model.state_dict())
            info.extra["_state_digest"] = weights
    return {"backend": info.backend, "id": info.model_id, "weights": weights,
            "kwargs": dict(getattr(info, "kwargs", {}) or {}), "text": asdict(model.text_cfg)}


def sample_fingerprints(data: "LabeledImages") -> list[str]:
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


def data_part(data: "LabeledImages") -> dict:
    spec = data.spec
    listing = [[data.sample_id(i), data.label(i), fp] for i, fp in enumerate(sample_fingerprints(data))]
    return {"key": spec.key, "name": spec.name or spec.key, "split": spec.split, "options": dict(spec.options),
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
        return digest(self.describe())

    def cell(self, resolution: int | str) -> str:
        return digest({"evaluation": self.id, "resolution": resolution})

    def resume_key(self, pending: Iterable[int | str]) -> str:
        """The resume point of a pass over the ``pending`` resolutions (several passes of one
        evaluation over different resolution sets keep separate resume points)."""
        return f"{self.id}-{digest(list(pending))}"

    @property
    def classifier_key(self) -> str:
        """The text classifier depends on the model and the prompts only."""
        return digest({"version": IDENTITY_VERSION, "model": self.model, "classnames": self.data["classnames"],
                       "templates": self.data["templates"]})


def evaluation(model: "ZeroShotModel", data: "LabeledImages", protocol: "Protocol", *, amp: str | None = None,
               topk: int = 5, variant: Mapping | None = None, limit: int | None = None, views: str = "pil",
               decoder: str = "pil") -> Evaluation:
    """The identity of evaluating ``model`` on ``data`` (already cut to ``limit``)."""
    return Evaluation(model=model_part(model), data=data_part(data),
                      protocol=protocol_part(protocol, views=views, decoder=decoder),
                      numerics={"amp": amp or "fp32", "topk": min(topk, data.spec.num_classes)},
                      variant=dict(variant or {}), limit=limit)


def classifier_key(model: "ZeroShotModel", classnames: Sequence[str], templates: Sequence[str]) -> str:
    """The classifier cache key without a full evaluation (same rule as Evaluation.classifier_key)."""
    return digest({"version": IDENTITY_VERSION, "model": model_part(model), "classnames": text_digest(classnames),
                   "templates": text_digest(templates)})


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


__all__ = ["DIGEST_CHARS", "Evaluation", "IDENTITY_VERSION", "classifier_key", "data_part", "differences", "digest",
           "evaluation", "model_part", "protocol_part", "sample_fingerprints", "tensors_digest", "text_digest"]
