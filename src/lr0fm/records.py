"""A result record: its fields, declared once, and how readers tell evaluations apart.

A record is one cell (one resolution of one evaluation, see ``lr0fm.identity``) as JSON. Every
reader -- text/JSON/CSV/HTML reports, ``compare``, ``analyze``, the Python API's DataFrame --
takes its columns from ``COLUMNS`` and its row labels from ``label_records``, so they agree on
what a row is and never put numbers of two evaluations into one row.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from .identity import differences

FORMAT = "lr0fm-record/2"
HR = "hr"


@dataclass(frozen=True)
class Column:
    name: str
    doc: str
    get: Callable[[dict], Any]


def _ident(*path: str) -> Callable[[dict], Any]:
    def get(record: dict):
        value: Any = record.get("identity", {})
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value
    return get


def _field(name: str) -> Callable[[dict], Any]:
    return lambda record: record.get(name)


# The tidy columns of a record (CSV export, DataFrame, JSON report, HTML provenance), in order.
COLUMNS: tuple[Column, ...] = (
    Column("model", "model name: catalog name, offline name or backend spec", _field("model")),
    Column("variant", "LR tokens / SR applied to the model, as JSON ({} = none)",
           lambda r: json.dumps(r.get("variant") or {}, sort_keys=True)),
    Column("dataset", "dataset name (custom data: folder/file stem or --name)", _field("dataset")),
    Column("dataset_key", "registry key the data was loaded with (imagefolder, csv, wds, ...)", _field("dataset_key")),
    Column("split", "dataset split", _field("split")),
    Column("resolution", "LR size in px, or 'hr' for the model's own input size", _field("resolution")),
    Column("top1", "top-1 accuracy (fraction)", _field("top1")),
    Column("top5", "top-5 accuracy (fraction; 1.0 when there are at most 5 classes)", _field("top5")),
    Column("mean_per_class_recall", "mean per-class recall (fraction)", _field("mean_per_class_recall")),
    Column("n_images", "images scored", _field("n_images")),
    Column("n_skipped", "unreadable images skipped", _field("n_skipped")),
    Column("num_classes", "number of classes", _field("num_classes")),
    Column("limit", "--limit (first N images) or empty for all", _field("limit")),
    Column("amp", "autocast precision (fp32 = none)", _ident("numerics", "amp")),
    Column("mode", "resize mode: shortest (resize + centre crop) or squash", _ident("protocol", "mode")),
    Column("input_size", "model input size S (px)", _ident("protocol", "input_size")),
    Column("interpolation", "resampling filter of the down and up steps", _ident("protocol", "interpolation")),
    Column("decoder", "image decoder", _ident("protocol", "decoder")),
    Column("views", "how views were made (pil or device; both are the protocol's exact pixels)",
           lambda r: (r.get("run") or {}).get("views", "pil")),
    Column("model_id", "backend model id", _field("model_id")),
    Column("weights_digest", "weights digest (file sha256, hub commit, or state-dict digest)", _ident("model", "weights")),
    Column("samples_digest", "digest of the ordered (sample id, label, content) list", _ident("data", "samples")),
    Column("classnames_digest", "digest of the class names", _ident("data", "classnames")),
    Column("templates_digest", "digest of the prompt templates", _ident("data", "templates")),
    Column("evaluation", "evaluation id: the identity without the resolution", _field("evaluation")),
    Column("cell", "cell id: evaluation + resolution (the record's file name)", _field("cell")),
    Column("lr0fm_version", "lr0fm version that wrote the record", _field("lr0fm_version")),
    Column("finished", "when the pass that wrote it finished (Unix time)",
           lambda r: (r.get("run") or {}).get("finished")),
)
COLUMN_NAMES = tuple(c.name for c in COLUMNS)

# What a file under records/ must hold to be read as a record.
REQUIRED = {"format": str, "cell": str, "evaluation": str, "identity": dict, "model": str, "dataset": str,
            "resolution": (int, str), "top1": (int, float), "n_images": int, "predictions_sha256": str}


def problem(obj: Any) -> str | None:
    """Why ``obj`` is not a record of this lr0fm (None when it is one)."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if obj.get("format") != FORMAT:
        return f"format {obj.get('format')!r}, expected {FORMAT!r}"
    for key, kind in REQUIRED.items():
        if not isinstance(obj.get(key), kind):
            return f"field {key!r} missing or of the wrong type"
    return None


def flat(record: dict) -> dict:
    """One tidy row: ``COLUMNS`` in order."""
    return {c.name: c.get(record) for c in COLUMNS}


def res_key(resolution) -> int:
    return 10 ** 9 if str(resolution) == HR else int(resolution)


def is_nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


# -- labels ----------------------------------------------------------------------------------
def _short(value) -> str:
    """Bare hashes (token checkpoints) shortened to 12 hex digits; names (SR ids) kept whole so
    that two different variants never share a label."""
    text = str(value)
    return text[:12] if re.fullmatch(r"[0-9a-f]{16,}", text) else text


def model_name(record: dict) -> str:
    """Model name, plus its variant (LR tokens, SR, ...) when there is one."""
    variant = record.get("variant") or {}
    if not variant:
        return record["model"]
    return record["model"] + "+" + ",".join(f"{k}={_short(v)}" for k, v in sorted(variant.items()))


def _model_side(record: dict) -> dict:
    ident = record["identity"]
    return {k: ident.get(k) for k in ("model", "protocol", "numerics", "variant")}


def _data_side(record: dict) -> dict:
    ident = record["identity"]
    return {"data": ident.get("data"), "limit": ident.get("limit")}


def _suffixed(name: str, diff: str) -> str:
    return f"{name} [{diff}]" if diff else name


def label_records(records: Iterable[dict]) -> list[dict]:
    """Copies of ``records`` with ``model_label`` and ``dataset_label``: rows of one label come
    from one evaluation. When a model name has several model-side identities (other weights,
    precision, protocol, variant) each gets a label naming what differs ("X [amp=bf16]"); the
    same for a dataset name with several data-side identities under one model label
    ("tuxpaint [limit=60]")."""
    out = [dict(r) for r in records]
    for r in out:
        r["model_label"] = model_name(r)
    _disambiguate(out, lambda r: r["model_label"], _model_side, "model_label")
    for r in out:
        r["dataset_label"] = r["dataset"]
    _disambiguate(out, lambda r: (r["model_label"], r["dataset"]), _data_side, "dataset_label")
    return out


def _disambiguate(records: list[dict], group_of, side_of, field: str) -> None:
    groups: dict[Any, list[dict]] = {}
    for r in records:
        groups.setdefault(group_of(r), []).append(r)
    for recs in groups.values():
        sides: dict[str, dict] = {}
        for r in recs:
            sides.setdefault(json.dumps(side_of(r), sort_keys=True, default=str), side_of(r))
        if len(sides) < 2:
            continue
        labels = dict(zip(sides, differences(list(sides.values()))))
        for r in recs:
            r[field] = _suffixed(r[field], labels[json.dumps(side_of(r), sort_keys=True, default=str)])


def primary_per_dataset(labelled: Sequence[dict]) -> tuple[list[dict], list[str]]:
    """For SAR/WAR over datasets, one evaluation per (model label, dataset name): the one without
    --limit and with the most images (then the newest). Returns the kept records and a note per
    choice made, so a report can say which evaluation entered its means."""
    by_key: dict[tuple, dict[str, list[dict]]] = {}
    for r in labelled:
        by_key.setdefault((r["model_label"], r["dataset"]), {}).setdefault(r["evaluation"], []).append(r)
    kept, notes = [], []
    for (model, dataset), evals in sorted(by_key.items()):
        def rank(recs):
            r = recs[0]
            return (r.get("limit") is None, max(x.get("n_images", 0) for x in recs),
                    max(x.get("finished") or (x.get("run") or {}).get("finished", 0) for x in recs))
        best = max(evals.values(), key=rank)
        kept.extend(best)
        if len(evals) > 1:
            notes.append(f"{model}: SAR/WAR use {best[0]['dataset_label']} ({len(evals) - 1} other evaluation(s) of "
                         f"{dataset} shown as their own rows; --where selects)")
    return kept, notes


# -- selection -------------------------------------------------------------------------------
def parse_where(items: Sequence[str] | None) -> list[tuple[str, str]]:
    """``--where COLUMN=VALUE`` filters; VALUE 'none' matches an empty column."""
    from .errors import InputError

    out = []
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or key not in COLUMN_NAMES:
            raise InputError(f"--where {item!r}: expected COLUMN=VALUE with COLUMN one of {', '.join(COLUMN_NAMES)}")
        out.append((key, value))
    return out


def select(records: Iterable[dict], where: Sequence[tuple[str, str]]) -> list[dict]:
    def matches(record: dict) -> bool:
        row = flat(record)
        for key, value in where:
            have = row.get(key)
            if value.lower() in ("none", "") and have in (None, ""):
                continue
            if key in ("evaluation", "cell", "weights_digest", "samples_digest") and str(have or "").startswith(value):
                continue
            if str(have) != value:
                return False
        return True
    return [r for r in records if matches(r)]


def make_record(model, data, protocol, resolution, cfg, topk, valid, labels, ids, ev, cell) -> dict:
    """The one constructor of a raw record: one resolution of an evaluation (``ev``, lr0fm.identity)
    from its [n, k] top-k predictions; ``valid`` marks the images that were read."""
    from .catalog import catalog_hashes
    from .metrics import cell_metrics
    from .version import __version__

    skipped = [str(i) for i in ids[~valid]]
    spec = data.spec
    return {
        "format": FORMAT, "cell": cell, "evaluation": ev.id, "identity": ev.describe(),
        "model": model.info.extra.get("catalog_name", model.info.model_id),
        "model_id": model.info.model_id, "backend": model.info.backend,
        "weights": model.info.weights, "weights_hash": ev.model["weights"],
        "model_extra": {k: v for k, v in model.info.extra.items() if not k.startswith("_")},
        "dataset": spec.label, "dataset_key": spec.key, "split": spec.split, "num_classes": spec.num_classes,
        "data_root": data.root,  # where it was read from; not part of the identity
        "resolution": resolution, "protocol": protocol.describe(resolution),
        "variant": cfg.variant, "limit": cfg.limit, "amp": ev.numerics["amp"],
        **cell_metrics(topk[valid], labels[valid], spec.num_classes),
        "n_images": int(valid.sum()), "n_skipped": len(skipped), "skipped_ids": skipped[:50],
        "classifier_key": ev.classifier_key, "catalog_hashes": catalog_hashes(), "lr0fm_version": __version__,
    }
