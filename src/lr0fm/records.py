"""A result record: its fields, declared once, and how readers tell evaluations apart.

A record is one cell (one resolution of one evaluation, see ``lr0fm.identity``) as JSON, built
only by ``new_record`` (``make_record`` feeds it from a model and its data; the test fakes from
plain values). Its identity parts live only under ``identity`` and are read with the accessors
(``protocol_of``, ``limit_of``, ``amp_of``, ...). Every reader -- text/JSON/CSV/HTML reports,
``compare``, ``analyze``, the Python API's DataFrame -- takes its columns from ``COLUMNS`` (and
``TABLE_COLUMNS`` with the row labels and what an evaluation's records say together) and its row
labels from ``label_records``, so they agree on what a row is and never put numbers of two
evaluations into one row.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from .identity import data_side, differences, model_side
from .metrics import CELL_METRICS, effective_resolution_of

if TYPE_CHECKING:  # pragma: no cover
    from .identity import Evaluation

FORMAT = "lr0fm-record/3"
# Format 2 also held top-level copies of identity parts (LEGACY_COPIES); it reads the same
# through the accessors below, which take every identity part from ``identity``.
READABLE_FORMATS = (FORMAT, "lr0fm-record/2")
LEGACY_COPIES = ("amp", "limit", "split", "protocol", "weights_hash", "variant")
HR = "hr"
SKIPPED_IDS_KEPT = 50  # a record lists the ids of the first this many unreadable images


# -- the identity parts of a record --------------------------------------------------------
def _ident(*path: str) -> Callable[[dict], Any]:
    def get(record: dict):
        value: Any = record.get("identity", {})
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value
    return get


def amp_of(record: dict) -> str | None:
    """Autocast precision of the record's evaluation ("fp32" = none)."""
    return _ident("numerics", "amp")(record)


def limit_of(record: dict) -> int | None:
    """The --limit that cut the data (None: all images)."""
    return _ident("limit")(record)


def split_of(record: dict) -> str | None:
    return _ident("data", "split")(record)


def variant_of(record: dict) -> dict:
    """LR tokens / SR applied to the model ({} = none)."""
    return dict(_ident("variant")(record) or {})


def weights_of(record: dict) -> str | None:
    """The weights digest (file sha256, hub commit, or state-dict digest)."""
    return _ident("model", "weights")(record)


def protocol_of(record: dict) -> dict:
    """How the record's views were made: ``Protocol.describe()``'s settings plus the decoder and
    view maker of its evaluation (the identity's protocol part)."""
    return dict(_ident("protocol")(record) or {})


def finished_of(record: dict) -> float | None:
    """When the pass that wrote the record finished (Unix time)."""
    return (record.get("run") or {}).get("finished")


# -- columns ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One tidy column. ``digest``: an id (prefix match in --where, shortened in HTML);
    ``integer``: whole numbers, empty allowed; ``label``: a row label of ``label_records``
    (present only on labelled records)."""

    name: str
    doc: str
    get: Callable[[dict], Any]
    digest: bool = False
    integer: bool = False
    label: bool = False


def _field(name: str) -> Callable[[dict], Any]:
    return lambda record: record.get(name)


# The tidy columns of a record (CSV export, DataFrame, JSON report, HTML provenance), in order.
COLUMNS: tuple[Column, ...] = (
    Column("model", "model name: catalog name, offline name or backend spec", _field("model")),
    Column("variant", "LR tokens / SR applied to the model, as JSON ({} = none)",
           lambda r: json.dumps(variant_of(r), sort_keys=True)),
    Column("dataset", "dataset name (custom data: folder/file stem or --name)", _field("dataset")),
    Column("dataset_key", "registry key the data was loaded with (imagefolder, csv, wds, ...)", _field("dataset_key")),
    Column("split", "dataset split", split_of),
    Column("resolution", "LR size in px, or 'hr' for the model's own input size", _field("resolution")),
    *(Column(name, doc, _field(name)) for name, doc in CELL_METRICS.items()),
    Column("n_images", "images scored", _field("n_images"), integer=True),
    Column("n_skipped", "unreadable images skipped", _field("n_skipped"), integer=True),
    Column("num_classes", "number of classes", _field("num_classes"), integer=True),
    Column("limit", "--limit (first N images) or empty for all", limit_of, integer=True),
    Column("amp", "autocast precision (fp32 = none)", amp_of),
    Column("mode", "resize mode: shortest (resize + centre crop) or squash", _ident("protocol", "mode")),
    Column("input_size", "model input size S (px)", _ident("protocol", "input_size"), integer=True),
    Column("interpolation", "resampling filter of the down and up steps", _ident("protocol", "interpolation")),
    Column("decoder", "image decoder", _ident("protocol", "decoder")),
    Column("views", "how views were made (pil or device; both are the protocol's exact pixels)",
           lambda r: (r.get("run") or {}).get("views", "pil")),
    Column("model_id", "backend model id", _field("model_id")),
    Column("weights_digest", "weights digest (file sha256, hub commit, or state-dict digest)", weights_of,
           digest=True),
    Column("samples_digest", "digest of the ordered (sample id, label, content) list", _ident("data", "samples"),
           digest=True),
    Column("classnames_digest", "digest of the class names", _ident("data", "classnames"), digest=True),
    Column("templates_digest", "digest of the prompt templates", _ident("data", "templates"), digest=True),
    Column("evaluation", "evaluation id: the identity without the resolution", _field("evaluation"), digest=True),
    Column("cell", "cell id: evaluation + resolution (the record's file name)", _field("cell"), digest=True),
    Column("lr0fm_version", "lr0fm version that wrote the record", _field("lr0fm_version")),
    Column("finished", "when the pass that wrote it finished (Unix time)", finished_of),
)
COLUMN_NAMES = tuple(c.name for c in COLUMNS)

# The row labels every report, the CSV/JSON export and the DataFrame add after COLUMNS.
LABEL_COLUMNS: tuple[Column, ...] = (
    Column("model_label", "the model row: model name, plus what differs when one name has several model-side "
                          "evaluations ('X [amp=bf16]')", _field("model_label"), label=True),
    Column("dataset_label", "the dataset row: dataset name, plus what differs when one model row has several "
                            "evaluations of it ('tuxpaint [limit=40]'); one (model_label, dataset_label) = one "
                            "evaluation", _field("dataset_label"), label=True),
)
# What the records of one evaluation say together, set by ``label_records`` beside the labels.
EVALUATION_COLUMNS: tuple[Column, ...] = (
    Column("effective_resolution", "the evaluation's effective resolution: the smallest resolution (px) at which "
                                   "gamma stays >= 0.9, interpolated in log2; '<=16' below, '>128' beyond the measured "
                                   "ones, empty without an HR accuracy (lr0fm.metrics.effective_resolution)",
           _field("effective_resolution")),
)
TABLE_COLUMNS = COLUMNS + LABEL_COLUMNS + EVALUATION_COLUMNS

# What a file under records/ must hold to be read as a record.
REQUIRED = {"format": str, "cell": str, "evaluation": str, "identity": dict, "model": str, "dataset": str,
            "resolution": (int, str), "top1": (int, float), "n_images": int, "predictions_sha256": str}


def problem(obj: Any) -> str | None:
    """Why ``obj`` is not a record this lr0fm reads (None when it is one)."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if obj.get("format") not in READABLE_FORMATS:
        return f"format {obj.get('format')!r}, expected {FORMAT!r}"
    for key, kind in REQUIRED.items():
        if not isinstance(obj.get(key), kind):
            return f"field {key!r} missing or of the wrong type"
    return None


def current(record: dict) -> dict:
    """A readable record without the top-level copies an older format kept (readers use the
    accessors, so an old record reads like a new one)."""
    return {k: v for k, v in record.items() if k not in LEGACY_COPIES} if record.get("format") != FORMAT else record


def flat(record: dict) -> dict:
    """One tidy row: ``COLUMNS`` in order."""
    return {c.name: c.get(record) for c in COLUMNS}


def table_row(record: dict) -> dict:
    """One tidy row of a labelled record (``label_records``): ``TABLE_COLUMNS`` in order."""
    return {c.name: c.get(record) for c in TABLE_COLUMNS}


def res_key(resolution) -> int:
    return 10 ** 9 if str(resolution) == HR else int(resolution)


def robustness_rows(records: Iterable[dict], model: Callable[[dict], str] = lambda r: r["model_label"],
                    dataset: Callable[[dict], str] = lambda r: r["dataset"]) -> list[dict]:
    """The rows ``lr0fm.metrics.robustness_table`` takes, one per record, named by ``model`` and
    ``dataset`` of the record (default: its model label and dataset name)."""
    from .catalog import class_counts
    from .metrics import accuracy_row

    counts = class_counts()
    return [accuracy_row(model(r), dataset(r), r["resolution"], r["top1"],
                         r.get("num_classes") or counts.get(r["dataset"])) for r in records]


# -- labels ----------------------------------------------------------------------------------
def _short(value) -> str:
    """Bare hashes (token checkpoints) shortened to 12 hex digits; names (SR ids) kept whole so
    that two different variants never share a label."""
    text = str(value)
    return text[:12] if re.fullmatch(r"[0-9a-f]{16,}", text) else text


def model_name(record: dict) -> str:
    """Model name, plus its variant (LR tokens, SR, ...) when there is one."""
    variant = variant_of(record)
    if not variant:
        return record["model"]
    return record["model"] + "+" + ",".join(f"{k}={_short(v)}" for k, v in sorted(variant.items()))


def _model_side(record: dict) -> dict:
    return model_side(record["identity"])


def _data_side(record: dict) -> dict:
    return data_side(record["identity"])


def _suffixed(name: str, diff: str) -> str:
    return f"{name} [{diff}]" if diff else name


def label_records(records: Iterable[dict]) -> list[dict]:
    """Copies of ``records`` with ``model_label`` and ``dataset_label``: rows of one label come
    from one evaluation. When a model name has several model-side identities (other weights,
    precision, protocol, variant) each gets a label naming what differs ("X [amp=bf16]"); the
    same for a dataset name with several data-side identities under one model label
    ("tuxpaint [limit=60]"; other images are named by the folder they were read from,
    "twin [folder=~/a/twin]"). Each also gets its evaluation's ``effective_resolution``
    (``EVALUATION_COLUMNS``)."""
    out = [dict(r) for r in records]
    for r in out:
        r["model_label"] = model_name(r)
    _disambiguate(out, lambda r: r["model_label"], _model_side, "model_label")
    for r in out:
        r["dataset_label"] = r["dataset"]
    _disambiguate(out, lambda r: (r["model_label"], r["dataset"]), _data_side, "dataset_label", _folders_shown)
    by_evaluation: dict[str, list[dict]] = {}
    for r in out:
        by_evaluation.setdefault(r["evaluation"], []).append(r)
    for recs in by_evaluation.values():
        found = effective_resolution_of({r["resolution"]: r["top1"] for r in recs})
        shown = None if found.px is None else str(found)
        for r in recs:
            r["effective_resolution"] = shown
    return out


def _key(side: dict) -> str:
    return json.dumps(side, sort_keys=True, default=str)


def _disambiguate(records: list[dict], group_of, side_of, field: str, shown=None) -> None:
    groups: dict[Any, list[dict]] = {}
    for r in records:
        groups.setdefault(group_of(r), []).append(r)
    for recs in groups.values():
        sides: dict[str, dict] = {}
        for r in recs:
            sides.setdefault(_key(side_of(r)), side_of(r))
        if len(sides) < 2:
            continue
        described = shown(sides, recs, side_of) if shown else sides
        labels = dict(zip(sides, differences(list(described.values()))))
        for r in recs:
            r[field] = _suffixed(r[field], labels[_key(side_of(r))])


def _folders_shown(sides: dict[str, dict], records: list[dict], side_of) -> dict[str, dict]:
    """Data sides whose images differ, with the images' digest replaced by the folder they were
    read from ("folder=~/a/twin" says more than "data=521315e4") where the folders tell the same
    sides apart as the digests do."""
    roots: dict[str, set] = {}
    for r in records:
        roots.setdefault(_key(side_of(r)), set()).add(r.get("data_root"))
    root_of = {key: next(iter(found)) for key, found in roots.items() if len(found) == 1 and None not in found}
    samples = {key: (side.get("data") or {}).get("samples") for key, side in sides.items()}
    if len(root_of) < len(sides) or len(set(samples.values())) < 2:
        return sides
    pairs = {(samples[key], root_of[key]) for key in sides}
    if len(pairs) != len({s for s, _ in pairs}) or len(pairs) != len({f for _, f in pairs}):
        return sides  # one folder for two sets of images, or one set read from two folders
    short = _short_paths(sorted(set(root_of.values())))
    out = {}
    for key, side in sides.items():
        data = {k: v for k, v in (side.get("data") or {}).items() if k != "samples"}
        out[key] = {**side, "data": data, "folder": short[root_of[key]]}
    return out


def _short_paths(paths: Sequence[str], width: int = 40) -> dict[str, str]:
    """Each path with the home folder as ~ and, when long, cut to its last components that still
    tell it from the others (".../a/twin")."""
    home = os.path.expanduser("~")
    tilde = {p: "~" + str(p)[len(home):] if home not in ("", "/") and str(p).startswith(home + os.sep) else str(p)
             for p in paths}
    out = {}
    for p, text in tilde.items():
        parts = text.split(os.sep)
        out[p] = text
        if len(text) > width:
            for k in range(2, len(parts)):
                tail = os.sep.join(parts[-k:])
                if all(not t.endswith(os.sep + tail) and t != tail for q, t in tilde.items() if q != p):
                    out[p] = "..." + os.sep + tail
                    break
    return out


def primary_per_dataset(labelled: Sequence[dict]) -> tuple[list[dict], list[str]]:
    """For SAR/WAR over datasets, one evaluation per (model label, dataset name): the one without
    --limit and with the most images (then the newest). Returns the kept records and a note per
    choice made, so a report can say which evaluation entered its means. ``labelled``: records
    (``label_records``) or rows with their ``TABLE_COLUMNS`` (``lr0fm.load_results``)."""
    def row(r: dict) -> dict:
        return table_row(r) if "identity" in r else r

    by_key: dict[tuple, dict[str, list[dict]]] = {}
    for r in labelled:
        by_key.setdefault((r["model_label"], r["dataset"]), {}).setdefault(r["evaluation"], []).append(r)
    kept, notes = [], []
    for (model, dataset), evals in sorted(by_key.items()):
        def rank(recs):
            rows = [row(x) for x in recs]
            return (rows[0].get("limit") is None, max(x.get("n_images") or 0 for x in rows),
                    max(x.get("finished") or 0 for x in rows))
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
    """The records whose columns have the ``parse_where`` values (an id column: a prefix of it)."""
    digests = {c.name for c in COLUMNS if c.digest}

    def matches(record: dict) -> bool:
        row = flat(record)
        for key, value in where:
            have = row.get(key)
            if value.lower() in ("none", "") and have in (None, ""):
                continue
            if key in digests and str(have or "").startswith(value):
                continue
            if str(have) != value:
                return False
        return True
    return [r for r in records if matches(r)]


# -- writing ---------------------------------------------------------------------------------
def new_record(ev: "Evaluation", resolution: int | str, *, model: str, model_id: str, backend: str, weights: Any,
               model_extra: dict, dataset: str, dataset_key: str, num_classes: int | None, data_root: str | None,
               metrics: dict, n_images: int, skipped_ids: Sequence[str], run: dict | None = None,
               lr0fm_version: str | None = None) -> dict:
    """The one builder of a raw record, from plain values: one resolution of the evaluation ``ev``
    (lr0fm.identity), which holds every identity part; the rest names and measures it.
    ``metrics``: ``lr0fm.metrics.cell_metrics``' dict. ``ResultsStore.put`` adds the digest of
    the predictions it stores beside the record."""
    from .catalog import catalog_hashes
    from .version import __version__

    return {
        "format": FORMAT, "cell": ev.cell(resolution), "evaluation": ev.id, "identity": ev.describe(),
        "model": model, "model_id": model_id, "backend": backend, "weights": weights, "model_extra": dict(model_extra),
        "dataset": dataset, "dataset_key": dataset_key, "num_classes": num_classes,
        "data_root": data_root,  # where it was read from; not part of the identity
        "resolution": resolution, **metrics, "n_images": n_images, "n_skipped": len(skipped_ids),
        "skipped_ids": [str(i) for i in skipped_ids[:SKIPPED_IDS_KEPT]], "classifier_key": ev.classifier_key,
        "catalog_hashes": catalog_hashes(), "lr0fm_version": lr0fm_version or __version__, "run": dict(run or {}),
    }


def make_record(model, data, resolution, topk, valid, labels, ids, ev, run: dict | None = None) -> dict:
    """The record of one resolution of an evaluation (``ev``) from a model, its data and the
    [n, k] top-k predictions; ``valid`` marks the images that were read."""
    from .metrics import cell_metrics

    spec = data.spec
    return new_record(
        ev, resolution, model=model.info.extra.get("catalog_name", model.info.model_id),
        model_id=model.info.model_id, backend=model.info.backend, weights=model.info.weights,
        model_extra={k: v for k, v in model.info.extra.items() if not k.startswith("_")},
        dataset=spec.label, dataset_key=spec.key, num_classes=spec.num_classes, data_root=data.root,
        metrics=cell_metrics(topk[valid], labels[valid], spec.num_classes), n_images=int(valid.sum()),
        skipped_ids=[str(i) for i in ids[~valid]], run=run)
