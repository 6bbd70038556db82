"""Read accuracy tables produced elsewhere (e.g. the paper's) for ``lr0fm metrics``."""
from __future__ import annotations

import csv
from pathlib import Path

from .errors import InputError

REQUIRED = ("model", "dataset", "resolution", "top1")


def read_accuracies(path: str | Path, percent: bool = False) -> list[dict]:
    """Rows ``model,dataset,resolution,top1[,num_classes]``; resolution an int px or 'hr'.
    ``percent``: top1 is given in % and is divided by 100."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"accuracy table {path} does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(line for line in f if not line.startswith("#"))
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path} lacks column(s) {', '.join(missing)}; expected model,dataset,resolution,top1[,num_classes]")
        rows = []
        for n, row in enumerate(reader, start=2):
            res = row["resolution"].strip().lower()
            if res != "hr" and not res.isdigit():
                raise InputError(f"{path}:{n}: resolution {row['resolution']!r} must be an integer px or 'hr'")
            if res != "hr" and int(res) <= 0:
                raise InputError(f"{path}:{n}: resolution {res} must be positive")
            try:
                top1 = float(row["top1"])
            except ValueError:
                raise InputError(f"{path}:{n}: top1 {row['top1']!r} is not a number") from None
            top1 = top1 / 100.0 if percent else top1
            if not 0.0 <= top1 <= 1.0:
                raise InputError(f"{path}:{n}: top1 {row['top1']} is outside [0, 1]; pass --percent for percentages")
            out = {"model": row["model"], "dataset": row["dataset"], "resolution": res if res == "hr" else int(res),
                   "top1": top1}
            if row.get("num_classes"):
                out["num_classes"] = int(row["num_classes"])
            rows.append(out)
    return rows
