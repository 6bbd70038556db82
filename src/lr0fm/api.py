"""The Python API: what ``import lr0fm`` offers a notebook or a training script (docs/api.md).

Every function here calls the objects ``lr0fm eval`` / ``lr0fm report`` call (the model and
dataset registries, ``lr0fm.runner.run_groups``, the results store, ``lr0fm.records``,
``lr0fm.metrics``), so the API and the CLI make the same cells and the same numbers. Heavy
imports (torch, pandas) happen inside the functions: ``import lr0fm`` stays cheap.
"""
from __future__ import annotations

import fnmatch
import numbers
import os
import sys
import textwrap
import warnings
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, Union, overload

from . import checks
from .metrics import ALPHA, KEEPS, EffectiveResolution
from .options import option_list
from .protocol import DEFAULT_RESOLUTIONS, HR, parse_resolutions

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .datasets.base import LabeledImages
    from .models.base import ZeroShotModel

Resolution = Union[int, str]  # pixels, or "hr" for the model's own input size


def result_columns() -> tuple[str, ...]:
    """The columns of ``load_results``, in order: ``lr0fm.records.COLUMNS`` then the row labels
    (``lr0fm.records.TABLE_COLUMNS``)."""
    from .records import TABLE_COLUMNS
    return tuple(c.name for c in TABLE_COLUMNS)


# -- models and datasets ---------------------------------------------------------------------
def list_models(pattern: str | None = None) -> list[str]:
    """Model names ``create_model`` knows (what ``lr0fm models`` lists): the offline ConSE models,
    then the paper's catalog backbones; ``pattern`` filters with shell wildcards (``"*siglip*"``).

    Backend specs are accepted too without being listed: ``open_clip:ARCH:TAG``,
    ``hf-hub:ORG/NAME``, ``hf:MODEL_ID_OR_DIR``."""
    from .models import model_names
    checks.check_kinds("list_models", [("pattern", pattern, (str,), "text with shell wildcards, e.g. '*siglip*'")],
                       optional=("pattern",))
    names = model_names()
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n.lower(), pattern.lower())]


def list_datasets() -> list[str]:
    """Dataset keys ``get_dataset`` knows (what ``lr0fm datasets`` lists)."""
    from .datasets import dataset_names
    return dataset_names()


# -- evaluation ------------------------------------------------------------------------------
def evaluate(model: str | ZeroShotModel, dataset: str | LabeledImages,
             resolutions: str | Sequence[Resolution] = DEFAULT_RESOLUTIONS, out: str | os.PathLike | None = None,
             *, engine: Any = None, **options: Any) -> list[dict]:
    """Evaluate ``model`` on ``dataset`` at ``resolutions``; return one record per resolution.

    This is ``lr0fm eval`` (same code, same cells, same numbers): results go to the results
    folder ``out`` (default ``$LR0FM_RESULTS`` or ``./lr0fm-results``), finished cells are read
    back instead of recomputed, and an interrupted call resumes when repeated.

    model: a name (``list_models``, or a backend spec) or a model from ``create_model``. A model
        object is evaluated in eval mode with the chosen protocol (its mode and preprocessing
        are restored after), moved to ``device`` when one is given, and gets LR tokens attached
        in place with ``lr_tokens``. Its identity is its weights file's digest when it came from
        a file, else its current state dict: a file-based model changed in memory is still
        named by the file, so save changed weights to a new file before evaluating them.
    dataset: a key (``list_datasets``, default options) or data from ``get_dataset``.
    resolutions: pixels and ``"hr"``, e.g. ``[16, 32, "hr"]`` or ``"16,32,hr"``.
    options: the options of ``lr0fm eval`` under their field names, with the same checks (one
        declaration: lr0fm.options.RunOptions):
        {options}.
        ``protocol`` is ``"native"``, ``"paper"`` or ``"paper:FAMILY"``; ``device`` defaults to
        the model's device, or ``"cpu"`` for a name. An unknown option is a TypeError.
    engine: where the pass runs, e.g. ``lr0fm.engines.ray.RayEngine()`` (docs/scale.md); None: here.
    """
    import torch

    from .datasets import get_dataset
    from .datasets.base import LabeledImages
    from .models.base import ZeroShotModel
    from .options import RunOptions
    from .runner import Group, run_groups
    from .store import ResultsStore

    _check_kinds("evaluate", [
        ("model", model, (str, ZeroShotModel), "a model name or a model from lr0fm.create_model"),
        ("dataset", dataset, (str, LabeledImages), "a dataset key or data from lr0fm.get_dataset"),
        ("resolutions", resolutions, (str, list, tuple), "'16,32,hr' or a list of pixels and 'hr'"),
        ("out", out, (str, os.PathLike), "a folder path")], optional=("out",))
    for item in ([] if isinstance(resolutions, str) else resolutions):
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise TypeError(f"evaluate() resolutions must be pixels (int) and 'hr', not {type(item).__name__} "
                            f"{item!r}")
    device = options.get("device")
    if isinstance(device, torch.device):
        options["device"] = device = str(device)
    for name in ("lr_tokens", "sr", "profile_trace"):
        if isinstance(options.get(name), os.PathLike):
            options[name] = os.fspath(options[name])
    # the same checks as `lr0fm eval` (and TypeError for a wrong kind), before anything is built or written
    RunOptions.check_kinds(options, "evaluate()")
    opts = RunOptions.from_mapping({"resolutions": resolutions, **options}, "lr0fm.evaluate")
    store = ResultsStore(out)
    data = get_dataset(dataset) if isinstance(dataset, str) else dataset
    run = dict(protocol=opts.protocol_options(), **opts.pass_options())
    if isinstance(model, str):
        group = Group(model, data, opts.lr_tokens, opts.sr, opts.trust_checkpoint)
        return run_groups([group], opts.resolutions, store, device=device or "cpu", engine=engine, **run)
    if device is not None:
        model.to(device)
    # a model without a weights file is identified by its current state dict, never a cached
    # digest of earlier weights (a model trained between two calls is another evaluation)
    model.info.extra.pop("_state_digest", None)
    was_training, preprocess = model.training, model.preprocess
    model.eval()
    try:
        return run_groups([Group(model, data, opts.lr_tokens, opts.sr)], opts.resolutions, store,
                          device=str(model.device), engine=engine, **run)
    finally:
        model.train(was_training)
        model.preprocess = preprocess


if evaluate.__doc__:  # the options' list from their one declaration (python -OO drops docstrings)
    evaluate.__doc__ = evaluate.__doc__.replace("{options}", textwrap.fill(
        option_list(exclude=("resolutions",)), width=92, subsequent_indent=" " * 8))

_check_kinds = checks.check_kinds  # TypeError for an argument of the wrong kind, before anything is built


# -- results ---------------------------------------------------------------------------------
def load_results(out: str | os.PathLike | Iterable[dict] | None = None) -> pd.DataFrame:
    """The records of a results folder (default ``$LR0FM_RESULTS`` or ``./lr0fm-results``), or the
    records ``evaluate`` returned, as a DataFrame: one row per record (one resolution of one
    evaluation), the columns ``lr0fm report --csv`` writes (``lr0fm.records.COLUMNS``) plus
    ``model_label`` and ``dataset_label``, the row labels every report uses. Rows are sorted by
    model_label, dataset_label and resolution; damaged record files are skipped with a warning.
    A folder that does not exist is a FileNotFoundError."""
    import pandas as pd

    from .records import READABLE_FORMATS, TABLE_COLUMNS, current, label_records, res_key, table_row
    from .store import ResultsStore, results_dir

    if out is None or isinstance(out, (str, os.PathLike)):
        if not results_dir(out).exists():
            raise FileNotFoundError(f"load_results(): results folder {results_dir(out)} does not exist; give the "
                                    "folder lr0fm.evaluate (out=) or lr0fm eval (--out) wrote")
        records = ResultsStore(out).records()
    else:
        if isinstance(out, (bytes, Mapping)) or not isinstance(out, Iterable):
            raise TypeError(f"load_results() argument 'out' must be a results folder (a path) or a list of the "
                            f"records lr0fm.evaluate returns, not {type(out).__name__} {out!r:.60}")
        records = list(out)
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise TypeError(f"load_results() record {i} must be a record (a dict, as lr0fm.evaluate returns), "
                                f"not {type(record).__name__} {record!r:.60}")
            if record.get("format") not in READABLE_FORMATS:
                raise ValueError(f"load_results() record {i} is not an lr0fm record (format {record.get('format')!r}); "
                                 "give the records lr0fm.evaluate returns")
        records = map(current, records)
    if out is None or isinstance(out, (str, os.PathLike)):
        records = _warn_untrusted(ResultsStore(out), records)
    rows = [table_row(r) for r in label_records(records)]
    rows.sort(key=lambda row: (row["model_label"], row["dataset_label"], res_key(row["resolution"])))
    frame = pd.DataFrame(rows, columns=list(result_columns()))
    return frame.astype({c.name: "Int64" for c in TABLE_COLUMNS if c.integer})


def _warn_untrusted(store, records: list[dict]) -> list[dict]:
    """One warning (with a count) when records of ``store`` no longer agree with their predictions
    or identity (the store's digest checks, as ``lr0fm report`` warns); returns ``records``."""
    bad = store.untrusted(records)
    if bad:
        warnings.warn(f"{len(bad)} record(s) in {store.root} disagree with their predictions or identity "
                      f"(first: {bad[0][0]['cell']}, {bad[0][1].split(';')[0]}); run 'lr0fm verify --out "
                      f"{store.root}' to list what differs", stacklevel=3)
    return records


# -- metrics ---------------------------------------------------------------------------------
def _is_frame(obj: Any) -> bool:
    pandas = sys.modules.get("pandas")  # not imported yet: obj cannot be a DataFrame
    return pandas is not None and isinstance(obj, pandas.DataFrame)


def _resolution(value: Any) -> Resolution:
    return parse_resolutions([value])[0]


def _evaluations(frame: pd.DataFrame) -> list[dict]:
    """The evaluations in a results frame: labels, dataset, class count and {resolution: top1}.

    Rows belong together when they share ``evaluation`` (or, without that column, the labels);
    one pair of labels must name one evaluation, so no metric ever mixes two."""
    from .errors import InputError

    columns = set(frame.columns)
    need = [c for c in ("resolution", "top1") if c not in columns]
    need += [] if columns & {"model_label", "model"} else ["model_label"]
    need += [] if columns & {"dataset_label", "dataset"} else ["dataset_label"]
    if need:
        raise InputError(f"the frame has no column(s) {', '.join(need)}; give one from lr0fm.load_results")
    plain = frame.astype(object).where(frame.notna(), None)
    evals: dict[Any, dict] = {}
    by_labels: dict[tuple, Any] = {}
    for row in plain.to_dict("records"):
        model = row.get("model_label") or row["model"]
        dataset = row.get("dataset_label") or row["dataset"]
        key = row.get("evaluation") or (model, dataset)
        e = evals.setdefault(key, {"model_label": model, "dataset_label": dataset, "evaluation": key,
                                   "dataset": row.get("dataset") or dataset, "num_classes": row.get("num_classes"),
                                   "limit": row.get("limit"), "n_images": row.get("n_images") or 0,
                                   "finished": row.get("finished") or 0, "top1": {}})
        if by_labels.setdefault((model, dataset), key) != key or \
                (e["model_label"], e["dataset_label"]) != (model, dataset):
            raise InputError(f"rows of two evaluations are both labelled {model!r} / {dataset!r}; load them in one "
                             "lr0fm.load_results call (it labels them apart) or keep one")
        resolution = _resolution(row["resolution"])
        if resolution in e["top1"]:
            raise InputError(f"{model!r} / {dataset!r} has two rows at resolution {resolution}; drop the duplicate")
        if row["top1"] is not None and not 0 <= row["top1"] <= 1:
            raise InputError(f"{model!r} / {dataset!r} has top1 {row['top1']!r} at resolution {resolution}, outside "
                             "[0, 1]: accuracies are fractions (divide a percentage by 100)")
        e["top1"][resolution] = float("nan") if row["top1"] is None else float(row["top1"])
    return list(evals.values())


def _num_classes(e: dict) -> int:
    from .catalog import class_counts
    from .errors import InputError

    n = e["num_classes"] or class_counts().get(e["dataset"])
    if not n:
        raise InputError(f"number of classes of {e['dataset_label']!r} unknown: add a num_classes column")
    return int(n)


def _series(values: Mapping[tuple, float], names: Sequence[str], name: str) -> pd.Series:
    import pandas as pd
    from .records import res_key

    keys = sorted(values, key=lambda k: (*k[:-1], res_key(k[-1])))
    index = pd.MultiIndex.from_tuples(keys, names=list(names)) if keys else \
        pd.MultiIndex.from_arrays([[] for _ in names], names=list(names))
    return pd.Series([values[k] for k in keys], index=index, name=name, dtype=float)


def _per_dataset(frame: pd.DataFrame, name: str, fn) -> pd.Series:
    """``fn(e, A(r), A(HR))`` for every LR resolution of every evaluation with an HR row."""
    out = {}
    for e in _evaluations(frame):
        hr = e["top1"].get(HR)
        for resolution, acc in e["top1"].items():
            if resolution != HR and hr is not None:
                out[(e["model_label"], e["dataset_label"], resolution)] = fn(e, acc, hr)
    return _series(out, ("model_label", "dataset_label", "resolution"), name)


def _robustness(frame: pd.DataFrame, weights: Mapping[str, float] | None, default_weight: float):
    """SAR/WAR rows as ``lr0fm report`` makes them: one evaluation per (model label, dataset)."""
    from .catalog import class_counts, war_weights
    from .errors import InputError
    from .metrics import accuracy_row, robustness_table
    from .records import primary_per_dataset

    evals = _evaluations(frame)
    kept, notes = primary_per_dataset(evals)
    for note in notes:
        warnings.warn(note, stacklevel=3)
    rows = [accuracy_row(e["model_label"], e["dataset"], r, acc, e["num_classes"])
            for e in kept for r, acc in e["top1"].items()]
    try:
        return robustness_table(rows, war_weights() if weights is None else weights, class_counts(), default_weight)
    except KeyError as e:
        raise InputError(e.args[0]) from None


@overload
def gamma(acc: float, acc_hr: float) -> float: ...
@overload
def gamma(acc: pd.DataFrame, acc_hr: None = None) -> pd.Series: ...
def gamma(acc, acc_hr=None):
    """Relative robustness γ = A(r) / A(HR).

    ``gamma(0.44, 0.67)``: of two accuracies; ValueError when A(HR) is 0 (γ is undefined).
    ``gamma(frame)``: of a ``load_results`` frame, a Series indexed by (model_label,
    dataset_label, resolution), each dividing numbers of one evaluation (its LR rows by its own
    HR row); NaN where that HR accuracy is 0, as in ``lr0fm report``."""
    from . import metrics

    if _is_frame(acc):
        _no_second(acc_hr, "gamma")
        return _per_dataset(acc, "gamma", lambda e, a, hr: metrics.gamma(a, hr))
    return metrics.gamma(checks.accuracy("gamma", "acc", acc), _hr_accuracy(acc_hr, "gamma"))


@overload
def Gamma(acc: float, acc_hr: float, num_classes: int, alpha: float = ALPHA) -> float: ...
@overload
def Gamma(acc: pd.DataFrame, acc_hr: None = None, num_classes: None = None, alpha: float = ALPHA) -> pd.Series: ...
def Gamma(acc, acc_hr=None, num_classes=None, alpha=ALPHA):
    """Improved relative robustness Γ = γ · (1 − exp(−α·ε²)), ε = A(HR) − 1/C: γ pulled to 0
    when the HR accuracy itself is near chance.

    ``Gamma(0.44, 0.67, num_classes=11)`` (ValueError when A(HR) is 0), or ``Gamma(frame)`` like
    ``gamma(frame)`` (C from the frame's num_classes column)."""
    from . import metrics

    alpha = checks.positive("Gamma", "alpha", alpha)
    if _is_frame(acc):
        _no_second(acc_hr, "Gamma")
        _no_second(num_classes, "Gamma")
        return _per_dataset(acc, "Gamma", lambda e, a, hr: metrics.improved_gamma(a, hr, _num_classes(e), alpha))
    return metrics.improved_gamma(checks.accuracy("Gamma", "acc", acc), _hr_accuracy(acc_hr, "Gamma"),
                                  checks.whole("Gamma", "num_classes", _needed(num_classes, "num_classes", "Gamma"), 2,
                                               "the number of classes (a whole number)"), alpha)


@overload
def effective_resolution(gammas: Mapping[int, float], keeps: float = KEEPS) -> EffectiveResolution: ...
@overload
def effective_resolution(gammas: pd.DataFrame, keeps: float = KEEPS) -> pd.Series: ...
def effective_resolution(gammas, keeps=KEEPS):
    """The smallest input resolution at which a model keeps ``keeps`` (90 %) of its HR accuracy:
    where γ last crosses ``keeps`` walking down from the highest measured resolution, interpolated
    linearly in log2(resolution) (``lr0fm.metrics.effective_resolution`` states the rule).

    ``effective_resolution({16: 0.5, 32: 0.8, 64: 0.95})``: of γ per resolution (px), an
    ``EffectiveResolution``: ``px`` and ``bound`` ("<=": at or below the smallest resolution, ">":
    beyond the largest; ``px`` None: no γ), printing as "50.8" here ("<=16", ">64" or "-" at the
    edges).
    ``effective_resolution(frame)``: of a ``load_results`` frame, a Series of those texts indexed
    by (model_label, dataset_label), one per evaluation (None without an HR row), as
    ``lr0fm report`` shows them."""
    from . import metrics

    if isinstance(keeps, bool) or not isinstance(keeps, (int, float)):
        raise TypeError(f"effective_resolution() keeps={keeps!r} must be a number: the fraction of the HR accuracy "
                        "kept, in (0, 1]")
    if not 0 < keeps <= 1:
        raise ValueError(f"effective_resolution() keeps={keeps!r} must be a fraction of the HR accuracy in (0, 1]")
    if _is_frame(gammas):
        import pandas as pd

        found = {}
        for e in _evaluations(gammas):
            value = metrics.effective_resolution_of(e["top1"], keeps)
            found[(e["model_label"], e["dataset_label"])] = None if value.px is None else str(value)
        keys = sorted(found)
        index = pd.MultiIndex.from_tuples(keys, names=["model_label", "dataset_label"]) if keys else \
            pd.MultiIndex.from_arrays([[], []], names=["model_label", "dataset_label"])
        return pd.Series([found[k] for k in keys], index=index, name="effective_resolution", dtype=object)
    if not isinstance(gammas, Mapping):
        raise TypeError(f"effective_resolution() takes γ per resolution ({{16: 0.5, 32: 0.8}}) or a results DataFrame, "
                        f"not {type(gammas).__name__}")
    return metrics.effective_resolution({_resolution(r): g for r, g in gammas.items() if _resolution(r) != HR}, keeps)


@overload
def sar(gammas: Mapping[str, float] | Iterable[float]) -> float: ...
@overload
def sar(gammas: pd.DataFrame) -> pd.Series: ...
def sar(gammas):
    """Simple aggregated robustness: the mean of γ over datasets, per resolution.

    ``sar({"tuxpaint": 0.66, "pets": 0.8})`` or ``sar([0.66, 0.8])``: of γ values. ``sar(frame)``:
    of a ``load_results`` frame, a Series indexed by (model_label, resolution), as ``lr0fm report``
    computes it: one evaluation per dataset (the one without limit with the most images; a
    warning names the choice when there were several -- select rows to choose yourself)."""
    from . import metrics

    if _is_frame(gammas):
        return _series({(x.model, x.resolution): x.scores["SAR"] for x in _robustness(gammas, None, 1.0)},
                       ("model_label", "resolution"), "SAR")
    return metrics.sar(checks.scores("sar", "gammas", gammas, "γ"))


@overload
def war(Gammas: Mapping[str, float], weights: Mapping[str, float] | None = None,
        default_weight: float = 1.0) -> float: ...
@overload
def war(Gammas: pd.DataFrame, weights: Mapping[str, float] | None = None, default_weight: float = 1.0) -> pd.Series: ...
def war(Gammas, weights=None, default_weight=1.0):
    """Weighted aggregated robustness: the weighted mean of Γ over datasets, per resolution.

    ``weights``: dataset name -> weight, default the paper's published weights
    (the cards' war_weight, catalog/datasets/); other datasets weigh ``default_weight``. ``war({"pets": 0.7, ...})``
    of Γ values, or ``war(frame)``: a Series indexed by (model_label, resolution), with the
    evaluations ``sar(frame)`` uses."""
    from . import metrics
    from .catalog import war_weights

    weights = None if weights is None else checks.weights("war", "weights", weights)
    default_weight = checks.positive("war", "default_weight", default_weight, "a weight (a number above 0)")
    if _is_frame(Gammas):
        return _series({(x.model, x.resolution): x.scores["WAR"] for x in _robustness(Gammas, weights, default_weight)},
                       ("model_label", "resolution"), "WAR")
    return metrics.war(checks.scores("war", "Gammas", Gammas, "Γ", keyed=True),
                       war_weights() if weights is None else weights, default_weight)


def _needed(value, name: str, fn: str):
    if value is None:
        raise TypeError(f"{fn}() of accuracies needs {name} (or give one results DataFrame)")
    return value


def _hr_accuracy(value, fn: str) -> float:
    """The HR accuracy a ratio divides by: an accuracy above 0 (γ and Γ are undefined at 0 or NaN)."""
    value = _needed(value, "acc_hr", fn)
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and not value > 0:
        raise ValueError(f"{fn}() is undefined when the HR accuracy is {value!r}: it divides by A(HR), which must be "
                         "above 0 (a model at 0% on HR has no robustness to measure)")
    return checks.accuracy(fn, "acc_hr", value)  # TypeError for a wrong kind, ValueError above 1


def _no_second(value, fn: str) -> None:
    if value is not None:
        raise TypeError(f"{fn}() of a results DataFrame takes no further accuracies")


# -- the low-resolution view as a transform --------------------------------------------------


__all__ = ["Gamma", "effective_resolution", "evaluate", "gamma", "list_datasets", "list_models", "load_results",
           "sar", "war"]
