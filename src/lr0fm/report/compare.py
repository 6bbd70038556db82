"""``lr0fm compare``: rank your evaluated models among the paper's 66 backbones, per resolution,
with lr0fm.report.conformance's list of where your protocol or data differ from the paper's.

SAR/WAR are averages over datasets, so two of them are comparable only over the same datasets.
By default every row (yours and the paper's) is scored on the datasets in common: the paper's 15
that all compared models have at HR and at their LR resolutions. ``--no-datasets-only-common``
ranks your SAR/WAR over whatever you evaluated against the paper's over all 15 (flagged).

A row of yours is a model label of ``lr0fm.records.label_records`` with one evaluation per
dataset (``your_rows``): gamma, Gamma, SAR and WAR never combine two evaluations of one dataset.
A dataset evaluated several ways (a --limit run and a full one) gives one row per way, named by
what differs ("X [limit=60]", "X [limit=all]"); rows whose limit, split or image count differ from
the paper's, or whose data came from a hub copy not known to hold the paper's split (``--download``),
are flagged, and ``--where`` keeps only the records wanted.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Sequence

from ..catalog import class_counts, war_weights
from ..errors import InputError
from ..identity import model_side
from ..metrics import AGGREGATE_NAMES, RANK_BY, Robustness, robustness_table
from ..records import robustness_rows, variant_of
from . import labelled, model_label
from .conformance import Differences, join_names, paper_differences
from .paper import (PAPER_RESOLUTIONS, paper_datasets, paper_models, paper_robustness, ranked)

HR = "hr"


@dataclass
class Entry:
    """One row of a per-resolution ranking: a paper backbone or one of yours."""

    model: str
    source: str  # "paper" | "yours"
    rank: int  # yours: 1 + number of paper backbones strictly better
    robustness: Robustness
    evaluations: dict[str, str] = field(default_factory=dict)  # yours: dataset -> evaluation id

    def as_dict(self) -> dict:
        x = self.robustness
        out = {"rank": self.rank, "model": self.model, "source": self.source, **x.scores,
               "gamma": x.gamma, "Gamma": x.Gamma}
        if self.evaluations:
            out["evaluations"] = self.evaluations
        return out


@dataclass
class Comparison:
    rank_by: str
    common_only: bool
    datasets: list[str]  # datasets scored (common mode) or the paper's 15 (otherwise)
    rankings: dict[int, list[Entry]] = field(default_factory=dict)  # resolution -> best first
    differences: list[dict] = field(default_factory=list)  # {"kind", "message", ...}
    variants: list[dict] = field(default_factory=list)  # variant vs its base model (e.g. LR tokens vs base)
    base_model: dict[str, str] = field(default_factory=dict)  # your label -> model name (paper row if any)

    def as_dict(self) -> dict:
        return {"rank_by": self.rank_by, "datasets_only_common": self.common_only, "datasets": self.datasets,
                "n_paper_models": len(paper_models()),
                "resolutions": {str(r): [e.as_dict() for e in rows] for r, rows in self.rankings.items()},
                "differences": self.differences, "variants": self.variants}


def _res(r):
    return HR if str(r).lower() == HR else int(r)


@dataclass
class Row:
    """One row of yours: a model label with one evaluation per dataset (lr0fm.records labels)."""

    name: str
    model: str  # the model's name: its paper row, if any
    suffix: str  # what this row's evaluations of several-times-evaluated datasets say ("" = none)
    records: list[dict] = field(default_factory=list)  # every resolution of each of its evaluations


def _suffix(record: dict) -> str:
    """The bracketed part of a dataset label ("limit=6" of "dtd [limit=6]"); "" when none."""
    rest = record["dataset_label"][len(record["dataset"]):].strip()
    return rest[1:-1] if rest.startswith("[") and rest.endswith("]") else rest


def your_rows(records: Sequence[dict], diffs: Differences) -> dict[str, Row]:
    """Row name -> Row. A model label whose datasets were each evaluated once is one row. When a
    dataset was evaluated several ways (a --limit run and a full one, other images under one
    name, ...), each way is its own row named by what differs ("X [limit=6]", "X [limit=all]"),
    holding the datasets evaluated that way and those evaluated only once: no number of one
    evaluation is divided by, or averaged with, one of another evaluation of the same dataset."""
    valid = []
    for rec in records:
        top1 = rec.get("top1")
        if top1 is None or not math.isfinite(float(top1)):
            diffs.add("invalid", f"{model_label(rec)}: no valid images on {rec['dataset']} at {rec['resolution']}; "
                      "left out", model=model_label(rec))
        else:
            valid.append(rec)
    evaluations: dict[str, dict[str, dict[str, list[dict]]]] = {}  # label -> dataset -> evaluation -> records
    model_of: dict[str, str] = {}
    for rec in labelled(valid):
        rec = {**rec, "resolution": _res(rec["resolution"])}
        evaluations.setdefault(rec["model_label"], {}).setdefault(rec["dataset"], {}) \
            .setdefault(rec["evaluation"], []).append(rec)
        model_of[rec["model_label"]] = rec["model"]
    rows: dict[str, Row] = {}
    for label, datasets in sorted(evaluations.items()):
        model = model_of[label]
        once = [recs for evs in datasets.values() if len(evs) == 1 for recs in evs.values()]
        ways: dict[str, list[list[dict]]] = {}
        for dataset, evs in sorted(datasets.items()):
            if len(evs) > 1:
                for recs in evs.values():
                    ways.setdefault(_suffix(recs[0]), []).append(recs)
                diffs.add("evaluations", f"{label}: {dataset} evaluated {len(evs)} ways "
                          f"({join_names(sorted(recs[0]['dataset_label'] for recs in evs.values()))}); each is its own "
                          "row (--where selects one)", model=label, dataset=dataset)
        if not ways:
            rows[label] = Row(label, model, "", [r for recs in once for r in recs])
        for suffix, chosen in sorted(ways.items()):
            name = f"{label} [{suffix}]"
            rows[name] = Row(name, model, suffix, [r for recs in once + chosen for r in recs])
    return rows


def compare(records: Sequence[dict], resolutions: Sequence[int | str] | None = None, rank_by: str = RANK_BY,
            common_only: bool = True) -> Comparison:
    """Rank the models of ``records`` (one row per model label) among the paper's backbones."""
    if rank_by not in AGGREGATE_NAMES:
        raise InputError(f"--rank-by {rank_by!r}: use one of {join_names(AGGREGATE_NAMES)}")
    diffs = Differences()
    paper_ds = paper_datasets()
    wanted = [r for r in (resolutions or PAPER_RESOLUTIONS) if r != HR]
    for r in wanted:
        if r not in PAPER_RESOLUTIONS:
            diffs.add("resolution", f"the paper has no results at {r} px (it has {join_names(PAPER_RESOLUTIONS)}); "
                      f"not compared", resolution=r)
    wanted = sorted((r for r in wanted if r in PAPER_RESOLUTIONS), reverse=True)
    if not wanted:
        raise InputError(f"no resolution to compare: the paper has results at {join_names(PAPER_RESOLUTIONS)} px")

    rows_of = your_rows(records, diffs)
    by_label = {name: row.records for name, row in rows_of.items()}

    # Datasets and resolutions outside the paper's grid.
    for label, recs in sorted(by_label.items()):
        extra = sorted({r["dataset"] for r in recs} - set(paper_ds))
        if extra:
            diffs.add("dataset", f"{label}: {join_names(extra)} not among the paper's {len(paper_ds)} datasets; "
                      "left out of the comparison", model=label, datasets=extra)
        res_extra = sorted({r["resolution"] for r in recs} - {HR} - set(PAPER_RESOLUTIONS))
        if res_extra:
            diffs.add("resolution", f"{label}: results at {join_names(res_extra)} px have no paper counterpart; "
                      "not compared", model=label)
    paper_differences(by_label, diffs)

    # What each label has: paper datasets with an HR result and a result at each of its compared resolutions.
    have: dict[str, dict] = {}
    for label, recs in sorted(by_label.items()):
        cells = {(r["dataset"], r["resolution"]) for r in recs if r["dataset"] in paper_ds}
        res_l = [r for r in wanted if any(c[1] == r for c in cells)]
        missing_res = [r for r in wanted if r not in res_l]
        if missing_res and cells:
            diffs.add("resolution", f"{label}: no results at {join_names(missing_res)} px (the paper has "
                      f"{join_names(PAPER_RESOLUTIONS)})", model=label)
        no_hr = sorted({d for d, _ in cells if (d, HR) not in cells})
        if no_hr:
            diffs.add("hr", f"{label}: no HR result on {join_names(no_hr)}, so gamma cannot be computed there; "
                      "left out", model=label, datasets=no_hr)
        full = [d for d in paper_ds if (d, HR) in cells and all((d, r) in cells for r in res_l)]
        partial = [d for d in paper_ds if (d, HR) in cells and d not in full and any((d, r) in cells for r in res_l)]
        if partial and common_only:
            diffs.add("dataset", f"{label}: {join_names(partial)} not evaluated at every compared resolution; left out",
                      model=label, datasets=partial)
        if res_l and (full or (partial and not common_only)):
            have[label] = {"resolutions": res_l, "datasets": full if common_only else full + partial}
    if not have:
        raise InputError("none of your results can be compared: the paper's datasets are "
                         f"{join_names(paper_ds)}, each needs an HR result and one at {join_names(wanted)} px")

    if common_only:
        datasets = [d for d in paper_ds if all(d in h["datasets"] for h in have.values())]
        if not datasets:
            raise InputError("your models have no dataset in common with each other and the paper ("
                             + "; ".join(f"{k}: {join_names(v['datasets'])}" for k, v in have.items())
                             + "); compare them one at a time with --model, or pass --no-datasets-only-common")
        for label, h in have.items():
            dropped = [d for d in h["datasets"] if d not in datasets]
            if dropped:
                diffs.add("dataset", f"{label}: {join_names(dropped)} left out, not evaluated for every compared model",
                          model=label, datasets=dropped)
        if len(datasets) < len(paper_ds):
            diffs.add("datasets_subset", f"compared on {len(datasets)} of the paper's {len(paper_ds)} datasets "
                      f"({join_names(datasets)}); the paper's backbones are re-scored on the same datasets, so their "
                      "SAR/WAR differ from 'lr0fm report --paper'", datasets=datasets)
    else:
        datasets = list(paper_ds)
        for label, h in have.items():
            if set(h["datasets"]) != set(paper_ds):
                diffs.add("not_comparable", f"{label}: SAR/WAR over {len(h['datasets'])} datasets "
                          f"({join_names(h['datasets'])}) against the paper's over all {len(paper_ds)}: not comparable "
                          "(drop --no-datasets-only-common to score everyone on the same datasets)", model=label)

    weights, ncls = war_weights(), class_counts()
    paper_rob = paper_robustness(datasets, wanted)
    rows = [row for label, recs in by_label.items() if label in have
            for row in robustness_rows([r for r in recs if r["dataset"] in have[label]["datasets"]
                                        and r["dataset"] in datasets
                                        and r["resolution"] in set(have[label]["resolutions"]) | {HR}],
                                       model=lambda r, label=label: label)]
    yours = robustness_table(rows, weights, ncls)

    cmp = Comparison(rank_by, common_only, datasets,
                     base_model={name: row.model for name, row in rows_of.items() if name in have})
    for res in wanted:
        paper = ranked([x for x in paper_rob if x.resolution == res and set(datasets) <= set(x.gamma)], rank_by)
        entries = [Entry(x.model, "paper", i, x) for i, x in enumerate(paper, 1)]
        for x in (y for y in yours if y.resolution == res):
            evaluations = {r["dataset"]: r["evaluation"] for r in rows_of[x.model].records if r["dataset"] in x.gamma}
            entries.append(Entry(x.model, "yours", 1 + sum(p.scores[rank_by] > x.scores[rank_by] for p in paper),
                                 x, evaluations))
        # Yours after paper rows of equal score, consistent with the rank definition.
        cmp.rankings[res] = sorted(entries, key=lambda e: (e.rank, e.source == "yours"))
    cmp.differences = diffs.items
    cmp.variants = _variants_vs_base(cmp, rows_of)
    return cmp


def _model_side(row: Row) -> str:
    """The model-side identity of a row apart from its variant (weights, protocol, precision)."""
    return json.dumps(model_side(row.records[0]["identity"], variant=False), sort_keys=True, default=str)


def _base_row(row: Row, rows: dict[str, Row]) -> str | None:
    """For a variant's row (LR tokens, SR), the row of the same model, weights, protocol and
    precision without a variant -- on the same evaluations of the data when there are several."""
    if not variant_of(row.records[0]):
        return None
    bases = [b for b in rows.values() if not variant_of(b.records[0]) and _model_side(b) == _model_side(row)]
    for suffix in (row.suffix, ""):
        same = [b.name for b in bases if b.suffix == suffix]
        if len(same) == 1:
            return same[0]
    return None


def _variants_vs_base(cmp: Comparison, rows: dict[str, Row]) -> list[dict]:
    """Each variant (LR tokens, SR...) next to its own base model's row, when both were evaluated."""
    out = []
    for label, row in sorted(rows.items()):
        base = _base_row(row, rows)
        if base is None:
            continue
        for res, entries in cmp.rankings.items():
            mine = {e.model: e for e in entries if e.source == "yours"}
            if label in mine and base in mine:
                v, b = mine[label], mine[base]
                out.append({"variant": label, "base": base, "resolution": res,
                            **{n: [b.robustness.scores[n], v.robustness.scores[n]] for n in AGGREGATE_NAMES},
                            "rank": [b.rank, v.rank]})
    return out


# -- text ----------------------------------------------------------------------------------------
def _shown(entries: list[Entry], base_models: set[str], context: int, top: int) -> list[int]:
    """Indices to print: the top rows, and ``context`` rows around each of yours and around the
    paper's row of the model you evaluated."""
    keep = set(range(min(top, len(entries))))
    for i, e in enumerate(entries):
        if e.source == "yours" or e.model in base_models:
            keep |= set(range(max(0, i - context), min(len(entries), i + context + 1)))
    return sorted(keep)


def format_comparison(cmp: Comparison, context: int = 2, top: int = 3) -> str:
    n_paper = len(paper_models())
    lines = [f"Your models among the paper's {n_paper} backbones (LR0.FM), ranked by {cmp.rank_by}; "
             f"rank = 1 + paper backbones scoring higher",
             f"datasets ({len(cmp.datasets)}): {join_names(cmp.datasets)}", ""]
    names = [e.model for rows in cmp.rankings.values() for e in rows]
    width = max(len(n) for n in names) + 14
    base_models = set(cmp.base_model.values())
    for res, entries in cmp.rankings.items():
        lines += [f"== {res} px", f"  {'rank':>4}  {'model':<{width}}" + "".join(f"{n:>7}" for n in AGGREGATE_NAMES)]
        last = -1
        yours = {id(e): k for k, e in enumerate((e for e in entries if e.source == "yours"), 1)}
        for i in _shown(entries, base_models, context, top):
            if i != last + 1:
                lines.append(f"  {'...':>4}")
            e = entries[i]
            mark, name = (">", f"{e.model} (yours [{yours[id(e)]}])") if e.source == "yours" else (" ", e.model)
            lines.append(f"{mark} {e.rank:>4}  {name:<{width}}"
                         + "".join(f"{e.robustness.scores[n]:>7.3f}" for n in AGGREGATE_NAMES))
            last = i
        if last != len(entries) - 1:
            lines.append(f"  {'...':>4}  ({sum(e.source == 'paper' for e in entries)} paper backbones)")
        lines += _gamma_block(entries, cmp)
        lines.append("")
    if cmp.variants:
        lines.append("Variants vs their base model (both yours):")
        for v in cmp.variants:
            lines.append(f"  {v['resolution']:>3} px  {v['variant']} vs {v['base']}: "
                         + "".join(f"{n} {v[n][0]:.3f} -> {v[n][1]:.3f} ({v[n][1] - v[n][0]:+.3f}), "
                                   for n in AGGREGATE_NAMES)
                         + f"rank {v['rank'][0]} -> {v['rank'][1]}")
        lines.append("")
    lines.append("Differences from the paper's protocol:")
    lines += [f"  - {d['message']}" for d in cmp.differences] or ["  (none found in the records)"]
    return "\n".join(lines)


def _gamma_block(entries: list[Entry], cmp: Comparison) -> list[str]:
    """Gamma per dataset (rows) for your models [k], the paper's row of the same model, and the
    median and best of the paper's backbones."""
    paper = {e.model: e for e in entries if e.source == "paper"}
    cols: list[tuple[str, dict]] = []
    for k, e in enumerate((e for e in entries if e.source == "yours"), 1):
        cols.append((f"[{k}]", e.robustness.Gamma))
        base = cmp.base_model.get(e.model)
        if base in paper and all(g is not paper[base].robustness.Gamma for _, g in cols):
            cols.append((f"paper[{k}]", paper[base].robustness.Gamma))
    if paper:
        cols.append(("median", {d: statistics.median(e.robustness.Gamma[d] for e in paper.values()) for d in cmp.datasets}))
        cols.append(("best", {d: max(e.robustness.Gamma[d] for e in paper.values()) for d in cmp.datasets}))
    dw = max(len(d) for d in cmp.datasets) + 2
    cw = max([len(c) for c, _ in cols] + [6]) + 2
    out = [f"  {'Gamma':<{dw}}" + "".join(f"{c:>{cw}}" for c, _ in cols)]
    for d in cmp.datasets:
        out.append(f"  {d:<{dw}}" + "".join(f"{g[d]:>{cw}.3f}" if d in g else f"{'-':>{cw}}" for _, g in cols))
    return out


def variants_on_own_datasets(records: Sequence[dict], resolutions: Sequence[int | str]) -> list[dict]:
    """Each variant (LR tokens, SR...) against its base model on the datasets both were evaluated
    on, whatever they are (e.g. the offline tuxpaint): for results the paper cannot be placed beside."""
    rows = your_rows(records, Differences())
    out = []
    for label, row in sorted(rows.items()):
        base = _base_row(row, rows)
        if base is None:
            continue
        cells = lambda rs: {(r["dataset"], r["resolution"]) for r in rs}  # noqa: E731
        common = cells(row.records) & cells(rows[base].records)
        table = [row for name in (base, label)
                 for row in robustness_rows([r for r in rows[name].records if (r["dataset"], r["resolution"]) in common],
                                            model=lambda r, name=name: name)]
        rob = {(x.model, x.resolution): x for x in robustness_table(table, war_weights(), class_counts())}
        for res in sorted({x.resolution for x in rob.values()}):
            if res in resolutions and (base, res) in rob and (label, res) in rob:
                b, v = rob[(base, res)], rob[(label, res)]
                out.append({"variant": label, "base": base, "resolution": res, "datasets": sorted(v.gamma),
                            "accuracy": [b.accuracy, v.accuracy],
                            **{n: [b.scores[n], v.scores[n]] for n in AGGREGATE_NAMES}})
    return out


def format_own_variants(rows: list[dict]) -> str:
    lines = ["Variants vs their base model, on your own datasets:"]
    for v in rows:
        acc = ", ".join(f"{d} {100 * v['accuracy'][0][d]:.1f} -> {100 * v['accuracy'][1][d]:.1f}%" for d in v["datasets"])
        lines.append(f"  {v['resolution']:>3} px  {v['variant']} vs {v['base']}: top-1 {acc}; "
                     + ", ".join(f"{n} {v[n][0]:.3f} -> {v[n][1]:.3f}" for n in AGGREGATE_NAMES))
    return "\n".join(lines)
