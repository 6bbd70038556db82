"""The paper's reference results in use: its SAR/WAR leaderboard recomputed from the transcribed
accuracies (catalog/paper_results.csv) with lr0fm.metrics, and the protocol it was measured under.

``lr0fm report --paper`` prints :func:`paper_leaderboard`; ``lr0fm compare`` (report/compare.py)
ranks the user's own results among these rows.
"""
from __future__ import annotations

import csv
import io
import json
from functools import lru_cache
from typing import Iterable, Sequence

from .. import resources
from ..catalog import PAPER_RESULTS_FILE, class_counts, model_catalog, paper_protocol, war_weights
from ..metrics import AGGREGATES, RANK_BY, Robustness, rank_key, robustness_table

# The LR resolutions of the paper's tables, in the order the paper lists them.
PAPER_RESOLUTIONS: tuple[int, ...] = (128, 64, 32, 16)

@lru_cache(maxsize=None)
def _paper_splits() -> dict[str, tuple[str, int]]:
    """dataset -> (split, image count) the paper evaluated: the default split of lr0fm's loader
    for each benchmark dataset (datasets/paper.py; e.g. EuroSAT's CoOp 'val', ImageNet's 'val')."""
    try:
        from ..datasets.paper import DATASETS
    except ImportError:  # pragma: no cover - loaders absent: splits are not checked
        return {}
    return {d.key: (d.default_split, d.splits[d.default_split].size) for d in DATASETS}


def paper_split(dataset: str) -> tuple[str, int] | None:
    """(split name, image count) of the paper's evaluation of ``dataset``; None when unknown."""
    return _paper_splits().get(dataset)


@lru_cache(maxsize=None)
def _rows() -> tuple[tuple, ...]:
    text = resources.read_text(PAPER_RESULTS_FILE)
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    out = []
    for row in csv.DictReader(io.StringIO(body)):
        res = row["resolution"].strip().lower()
        out.append((row["family"], row["model"], row["dataset"], res if res == "hr" else int(res),
                    float(row["top1"]) / 100.0, float(row["top5"]) / 100.0 if row.get("top5") else None))
    return tuple(out)


def load_paper_results() -> list[dict]:
    """The published accuracies as rows: family, model, dataset, resolution ('hr' or px), top1, top5
    (fractions, converted from the published %). A fresh list on every call (safe to modify)."""
    keys = ("family", "model", "dataset", "resolution", "top1", "top5")
    return [dict(zip(keys, row)) for row in _rows()]


def paper_datasets() -> list[str]:
    """The paper's datasets in the order of the table (= the benchmark's 15)."""
    return list(dict.fromkeys(r[2] for r in _rows()))


def paper_models() -> list[str]:
    """The paper's backbones in catalog order (those with at least one published accuracy)."""
    present = {r[1] for r in _rows()}
    return [m for m in model_catalog() if m in present] + sorted(present - set(model_catalog()))


def paper_robustness(datasets: Iterable[str] | None = None,
                     resolutions: Iterable[int] = PAPER_RESOLUTIONS) -> list[Robustness]:
    """gamma/Gamma/SAR/WAR of every paper backbone, over ``datasets`` (default: all 15)."""
    keep_d = set(paper_datasets() if datasets is None else datasets)
    keep_r = set(resolutions) | {"hr"}
    rows = [r for r in load_paper_results() if r["dataset"] in keep_d and r["resolution"] in keep_r]
    return robustness_table(rows, war_weights(), class_counts())


def complete_and_incomplete(rob: Sequence[Robustness], datasets: Sequence[str]) -> tuple[list[Robustness], list[dict]]:
    """Split rows into those covering every dataset in ``datasets`` and the rest (SAR/WAR over
    fewer datasets are not comparable, so the rest are reported rather than ranked)."""
    need = set(datasets)
    full, missing = [], []
    for x in rob:
        if need <= set(x.gamma):
            full.append(x)
        else:
            missing.append({"model": x.model, "resolution": x.resolution, "missing": sorted(need - set(x.gamma))})
    return full, missing


def ranked(rows: Sequence[Robustness], key: str) -> list[Robustness]:
    """Best first (undefined scores last); ties keep the catalog order."""
    order = {m: i for i, m in enumerate(paper_models())}
    return sorted(rows, key=lambda x: (rank_key(x.scores[key]), order.get(x.model, len(order))))


def paper_leaderboard(rank_by: str = RANK_BY, json_out: bool = False) -> str:
    """The paper's SAR/WAR leaderboard at 128/64/32/16 px, recomputed from the published accuracies."""
    datasets = paper_datasets()
    models = paper_models()
    family = {r[1]: r[0] for r in _rows()}
    rob = paper_robustness(datasets)
    full, incomplete = complete_and_incomplete(rob, datasets)
    # A model absent at some resolution altogether is missing data too.
    seen = {(x.model, x.resolution) for x in rob}
    incomplete += [{"model": m, "resolution": r, "missing": datasets} for r in PAPER_RESOLUTIONS for m in models
                   if (m, r) not in seen]
    table = {r: ranked([x for x in full if x.resolution == r], rank_by) for r in PAPER_RESOLUTIONS}
    # how the authors made each backbone's views (catalog/paper_protocol.yaml)
    audited = paper_protocol()
    protocol = {m: f"{audited[m]['paper_resize_mode']} {audited[m]['paper_input_size']}" if m in audited else "?"
                for m in models}
    if json_out:
        return json.dumps({
            "source": PAPER_RESULTS_FILE, "rank_by": rank_by, "datasets": datasets, "n_models": len(models),
            "resolutions": {str(r): [{"rank": i, "model": x.model, "family": family.get(x.model),
                                      "protocol": audited.get(x.model, {}), **x.scores,
                                      "gamma": x.gamma, "Gamma": x.Gamma}
                                     for i, x in enumerate(rows, 1)] for r, rows in table.items()},
            "incomplete": incomplete}, indent=1)
    width = max([len(m) for m in models] + [5]) + 2
    names = [a.name for a in AGGREGATES]
    lines = [f"LR0.FM published accuracies ({PAPER_RESULTS_FILE}): {len(models)} backbones, {len(datasets)} datasets;",
             "; ".join(f"{a.name} = {a.doc}" for a in AGGREGATES)
             + " (published WAR weights), recomputed with lr0fm.metrics;",
             "protocol = the authors' resize mode and input size for that backbone (lr0fm models --paper)", ""]
    for r, rows in table.items():
        lines += [f"== {r} px (ranked by {rank_by}; {len(rows)} models)",
                  f"{'rank':>4}  {'model':<{width}}{'family':<12}{'protocol':<14}" + "".join(f"{n:>7}" for n in names)]
        lines += [f"{i:>4}  {x.model:<{width}}{family.get(x.model, ''):<12}{protocol[x.model]:<14}"
                  + "".join(f"{x.scores[n]:>7.3f}" for n in names)
                  for i, x in enumerate(rows, 1)]
        lines.append("")
    if incomplete:
        lines.append("not ranked (missing published accuracies):")
        lines += [f"  {x['model']} at {x['resolution']} px: {', '.join(x['missing'])}" for x in incomplete]
    return "\n".join(lines).rstrip()
