"""Read accuracy tables produced elsewhere (e.g. the paper's) and WAR weights for ``lr0fm metrics``.

Everything a table can get wrong is one ``InputError`` naming the file and line, before any
metric is computed: the metrics themselves (``lr0fm.metrics``) never see a bad row.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from . import textfile
from .errors import InputError

REQUIRED = ("model", "dataset", "resolution", "top1")
LAYOUT = "model,dataset,resolution,top1[,num_classes]"


def read_utf8(path: Path, what: str) -> str:
    return textfile.read_utf8(path, what, InputError)


def _a_file(path: str | Path, what: str, expected: str) -> Path:
    """``path`` if it names a regular file, else one line (missing, a folder, a pipe or device)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist; {expected}")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; {expected}")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a regular file; {expected}")
    return path


def read_accuracies(path: str | Path, percent: bool = False) -> list[dict]:
    """Rows ``model,dataset,resolution,top1[,num_classes]``; resolution an int px or 'hr'; lines
    starting with '#' are comments. ``percent``: top1 is given in % and is divided by 100.

    Checked: every row has every column; resolution, top1 and num_classes are valid; a dataset has
    one class count; a (model, dataset, resolution) appears once (identical repeats are collapsed);
    every (model, dataset) has an 'hr' row with a non-zero top1 (gamma divides by it).
    """
    path = _a_file(path, "--accuracies", f"give a CSV file {LAYOUT}")
    # (line number, text) of the non-comment, non-blank lines, so errors name the file's own lines
    lines = [(n, line) for n, line in enumerate(read_utf8(path, "accuracy table").splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise InputError(f"{path} is empty; expected a header {LAYOUT} and one row per accuracy")
    reader = csv.reader(line for _, line in lines)
    header = [c.strip() for c in next(reader)]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(missing)}; expected {LAYOUT}")

    rows: list[dict] = []
    seen: dict[tuple, tuple[int, float]] = {}  # (model, dataset, resolution) -> (line, top1)
    classes: dict[str, tuple[int, int]] = {}  # dataset -> (line, num_classes)
    for values in reader:
        n = lines[reader.line_num - 1][0]
        if len(values) != len(header):
            raise InputError(f"{path}:{n}: {len(values)} values for the {len(header)} columns "
                             f"{','.join(header)}; give one value per column")
        row = dict(zip(header, (v.strip() for v in values)))
        out = _parse_row(row, path, n, percent)
        key = (out["model"], out["dataset"], out["resolution"])
        if key in seen:
            first, top1 = seen[key]
            if top1 != out["top1"]:
                raise InputError(f"{path}:{n}: model {key[0]}, dataset {key[1]}, resolution {key[2]} has top1 "
                                 f"{row['top1']} here but {_show(top1, percent)} on line {first}; keep one row")
            continue  # an identical repeat
        seen[key] = (n, out["top1"])
        if "num_classes" in out:
            first = classes.setdefault(out["dataset"], (n, out["num_classes"]))
            if first[1] != out["num_classes"]:
                raise InputError(f"{path}:{n}: dataset {out['dataset']} has num_classes {out['num_classes']} "
                                 f"here but {first[1]} on line {first[0]}; give one class count per dataset")
        rows.append(out)
    if not rows:
        raise InputError(f"{path} has a header but no data rows; add rows {LAYOUT}")
    _check_hr(rows, seen, path, percent)
    return rows


def _parse_row(row: dict, path: Path, n: int, percent: bool) -> dict:
    for column in ("model", "dataset"):
        if not row[column]:
            raise InputError(f"{path}:{n}: empty {column}; every row needs {LAYOUT}")
    res = row["resolution"].lower()
    if res != "hr" and not (res.isascii() and res.isdigit()):
        raise InputError(f"{path}:{n}: resolution {row['resolution']!r} must be an integer px or 'hr'")
    if res != "hr" and int(res) <= 0:
        raise InputError(f"{path}:{n}: resolution {res} must be positive")
    try:
        top1 = float(row["top1"])
    except ValueError:
        raise InputError(f"{path}:{n}: top1 {row['top1']!r} is not a number") from None
    if not math.isfinite(top1):
        raise InputError(f"{path}:{n}: top1 {row['top1']!r} is not a finite number; give the measured accuracy")
    top1 = top1 / 100.0 if percent else top1
    if not 0.0 <= top1 <= 1.0:
        hint = "a percentage must lie in [0, 100]" if percent else "pass --percent for percentages"
        raise InputError(f"{path}:{n}: top1 {row['top1']} is outside [0, 1]; {hint}")
    out = {"model": row["model"], "dataset": row["dataset"], "resolution": res if res == "hr" else int(res),
           "top1": top1}
    if row.get("num_classes"):
        text = row["num_classes"]
        if not (text.isascii() and text.isdigit()) or int(text) < 2:
            raise InputError(f"{path}:{n}: num_classes {text!r} must be a whole number of at least 2 "
                             "(the dataset's number of classes)")
        out["num_classes"] = int(text)
    return out


def _check_hr(rows: list[dict], seen: dict, path: Path, percent: bool) -> None:
    """Every (model, dataset) needs a usable HR accuracy: gamma = A(r) / A(HR)."""
    for model, dataset in dict.fromkeys((r["model"], r["dataset"]) for r in rows):
        hr = seen.get((model, dataset, "hr"))
        if hr is None:
            lines = sorted(n for (m, d, _), (n, _) in seen.items() if (m, d) == (model, dataset))
            raise InputError(f"{path}: model {model}, dataset {dataset} has no 'hr' row (lines "
                             f"{', '.join(map(str, lines))}); gamma = A(r) / A(HR) needs the full-resolution "
                             "accuracy: add a row with resolution hr")
        if hr[1] == 0.0:
            raise InputError(f"{path}:{hr[0]}: model {model}, dataset {dataset} has HR top1 0, so gamma = "
                             "A(r) / A(HR) is undefined; drop this model's rows for the dataset")
    if all(r["resolution"] == "hr" for r in rows):
        raise InputError(f"{path} has only 'hr' rows; robustness compares low resolutions with HR: "
                         "add rows with an integer resolution")


def _show(top1: float, percent: bool) -> str:
    return f"{100 * top1:g}" if percent else f"{top1:g}"


def read_weights(path: str | Path) -> dict[str, float]:
    """WAR weights from a JSON object ``{"dataset": weight, ...}``; weights are finite and >= 0."""
    usage = "expected a JSON object mapping dataset -> weight, e.g. {\"eurosat\": 1.0}"
    path = _a_file(path, "--weights", "give a JSON file mapping dataset -> weight, e.g. {\"eurosat\": 1.0}")
    text = read_utf8(path, "--weights file")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise InputError(f"--weights {path} is not valid JSON ({e}); {usage}") from None
    if not isinstance(data, dict):
        raise InputError(f"--weights {path} holds a JSON {type(data).__name__}; {usage}")
    weights = {}
    for dataset, w in data.items():
        # bool is an int in Python; true/false are not weights
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise InputError(f"--weights {path}: weight of {dataset!r} is {json.dumps(w)}; "
                             "each weight must be a number >= 0")
        weights[dataset] = float(w)
    return weights
