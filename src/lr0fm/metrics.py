"""The LR0.FM robustness metrics: pure functions over accuracy tables (no I/O, no torch).

Accuracies are fractions in [0, 1]. For dataset d and resolution r (eq. 1 of the paper and the
authors' MetaData/generate_SAR_WAR.py):

    gamma_d(r) = A_d(r) / A_d(HR)                                  relative robustness
    Gamma_d(r) = gamma_d(r) * (1 - exp(-alpha * eps_d**2))         improved relative robustness
                 eps_d = A_d(HR) - 1 / C_d,  alpha = 200           (zero near chance)
    SAR(r) = mean_d gamma_d(r)                                     simple aggregated robustness
    WAR(r) = sum_d w_d * Gamma_d(r) / sum_d w_d                    weighted aggregated robustness
    r_eff,d = smallest r from which gamma_d(r) stays >= 0.9         effective resolution
              (interpolated in log2 r: ``effective_resolution``)

The aggregates (SAR, WAR) are declared once, in ``AGGREGATES``; a new one is an entry there.

Always per resolution (the effective resolution reads one curve across them); never averaged
across resolutions. Edge cases, as defined here:
gamma exceeds 1 when LR beats HR (kept, not clipped); gamma and Gamma are NaN (undefined) when
A(HR) is 0 or NaN, and a NaN makes that resolution's SAR/WAR NaN (ranked last) rather than being
dropped silently; eps is squared, so an A(HR) far *below* chance is not zeroed (as in the authors'
code), only one near chance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

ALPHA = 200.0


def gamma(acc_lr: float, acc_hr: float) -> float:
    """Relative robustness A(r) / A(HR); NaN (undefined) when A(HR) is 0 or NaN."""
    return acc_lr / acc_hr if acc_hr > 0 else math.nan


def improved_gamma(acc_lr: float, acc_hr: float, num_classes: int, alpha: float = ALPHA) -> float:
    """Gamma: gamma scaled towards 0 when the HR accuracy itself is near chance (1 / C)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    eps = acc_hr - 1.0 / num_classes
    return gamma(acc_lr, acc_hr) * (1.0 - math.exp(-alpha * eps * eps))


def sar(gammas: Mapping[str, float]) -> float:
    """Plain mean of gamma over datasets (NaN when there are none)."""
    return sum(gammas.values()) / len(gammas) if gammas else float("nan")


def war(Gammas: Mapping[str, float], weights: Mapping[str, float], default_weight: float = 1.0) -> float:
    """Weighted mean of Gamma over datasets; a dataset without a weight weighs ``default_weight``."""
    if not Gammas:
        return float("nan")
    ws = {d: float(weights.get(d, default_weight)) for d in Gammas}
    total = sum(ws.values())
    return sum(ws[d] * g for d, g in Gammas.items()) / total if total > 0 else float("nan")


@dataclass(frozen=True)
class Aggregate:
    """A robustness score over datasets at one resolution: ``combine`` of the per-dataset
    ``of`` values ("gamma" or "Gamma"), WAR weights and the default weight. Reports, compare,
    analysis, the API and the CLI's --rank-by iterate ``AGGREGATES``."""

    name: str
    doc: str
    of: str
    combine: Callable[[Mapping[str, float], Mapping[str, float], float], float]


AGGREGATES: tuple[Aggregate, ...] = (
    Aggregate("SAR", "simple aggregated robustness: mean gamma over datasets", "gamma",
              lambda values, weights, default_weight: sar(values)),
    Aggregate("WAR", "weighted aggregated robustness: weighted mean Gamma over datasets", "Gamma", war),
)
AGGREGATE_NAMES = tuple(a.name for a in AGGREGATES)
RANK_BY = "WAR"  # the default ranking score


@dataclass
class Robustness:
    """Robustness of one model at one resolution over a set of datasets: per dataset gamma,
    Gamma and the LR accuracy, and ``scores`` (each of ``AGGREGATES``, also readable as
    ``x.SAR``, ``x.WAR``)."""

    model: str
    resolution: int
    scores: dict[str, float] = field(default_factory=dict)
    gamma: dict[str, float] = field(default_factory=dict)
    Gamma: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)

    def __getattr__(self, name: str) -> float:
        scores = self.__dict__.get("scores") or {}
        if name in scores:
            return scores[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or score {name!r}")

    def as_dict(self) -> dict:
        return {"model": self.model, "resolution": self.resolution, **self.scores,
                "gamma": dict(self.gamma), "Gamma": dict(self.Gamma)}


def accuracy_row(model: str, dataset: str, resolution, top1: float | None, num_classes: int | None = None) -> dict:
    """One row of ``robustness_table``: a model's top-1 (fraction) on a dataset at a resolution."""
    return {"model": model, "dataset": dataset, "resolution": resolution, "top1": top1, "num_classes": num_classes}


def robustness_table(rows: Iterable[Mapping], weights: Mapping[str, float], class_counts: Mapping[str, int],
                     default_weight: float = 1.0, alpha: float = ALPHA) -> list[Robustness]:
    """rows: dicts with model, dataset, resolution (int or 'hr'), top1 (fraction), and optionally
    num_classes (``accuracy_row``). Returns one Robustness per (model, LR resolution), sorted by
    model then resolution.

    A dataset enters a model's scores at resolution r only if both A(r) and A(HR) exist.
    """
    acc: dict[str, dict[str, dict]] = {}
    ncls: dict[str, int] = dict(class_counts)
    for row in rows:
        model, dataset = str(row["model"]), str(row["dataset"])
        res = row["resolution"]
        res = "hr" if str(res).lower() == "hr" else int(res)
        top1 = row["top1"]
        acc.setdefault(model, {}).setdefault(dataset, {})[res] = math.nan if top1 is None else float(top1)
        if row.get("num_classes") not in (None, ""):
            ncls[dataset] = int(row["num_classes"])
    out = []
    for model, per_dataset in acc.items():
        resolutions = sorted({r for d in per_dataset.values() for r in d if r != "hr"})
        for r in resolutions:
            g, G, a = {}, {}, {}
            for dataset, by_res in sorted(per_dataset.items()):
                if r not in by_res or "hr" not in by_res:
                    continue
                if dataset not in ncls:
                    raise KeyError(f"number of classes of dataset {dataset!r} unknown: add a num_classes column")
                g[dataset] = gamma(by_res[r], by_res["hr"])
                G[dataset] = improved_gamma(by_res[r], by_res["hr"], ncls[dataset], alpha)
                a[dataset] = by_res[r]
            if g:
                per = {"gamma": g, "Gamma": G}
                scores = {x.name: x.combine(per[x.of], weights, default_weight) for x in AGGREGATES}
                out.append(Robustness(model, r, scores, g, G, a))
    return sorted(out, key=lambda x: (x.model, x.resolution))


def rank_key(score: float) -> tuple[bool, float]:
    """Sort key for best-first ranking with undefined (NaN) scores last."""
    return (math.isnan(score), -score)


def ranked(rows: Iterable[Robustness], by: str = RANK_BY) -> list[Robustness]:
    """``rows`` best first by the score ``by`` (NaN, i.e. undefined, last; ties keep their order)."""
    return sorted(rows, key=lambda x: rank_key(x.scores[by]))


# every per-cell metric: name -> what it is (a record column of that name; lr0fm.records.COLUMNS)
CELL_METRICS: dict[str, str] = {
    "top1": "top-1 accuracy (fraction)",
    "top5": "top-5 accuracy (fraction; 1.0 when there are at most 5 classes)",
    "mean_per_class_recall": "mean per-class recall (fraction)",
}


def cell_metrics(topk, labels, num_classes: int) -> dict[str, float]:
    """Every per-cell metric of one resolution (``CELL_METRICS``), from its scored images:
    ``topk`` [n, k] predicted class indices (best first) and ``labels`` [n]. A new per-cell
    metric is one entry here and in CELL_METRICS, and one ``Column`` in lr0fm.records."""
    correct1 = topk[:, 0] == labels
    return {"top1": float(correct1.mean()), "top5": float((topk == labels[:, None]).any(axis=1).mean()),
            "mean_per_class_recall": mean_per_class_recall(labels, topk[:, 0], num_classes)}


def mean_per_class_recall(labels, predictions, num_classes: int) -> float:
    """Mean over classes present in ``labels`` of the fraction predicted correctly."""
    hit = [0] * num_classes
    tot = [0] * num_classes
    for y, p in zip(labels, predictions):
        tot[int(y)] += 1
        hit[int(y)] += int(int(p) == int(y))
    recalls = [h / t for h, t in zip(hit, tot) if t]
    return sum(recalls) / len(recalls) if recalls else float("nan")


# -- effective resolution ------------------------------------------------------------------------
KEEPS = 0.9  # the effective resolution keeps this fraction of the HR accuracy (gamma >= KEEPS)


@dataclass(frozen=True)
class EffectiveResolution:
    """The result of ``effective_resolution``: ``px`` and ``bound`` ("" -- the value itself, "<="
    -- at most the smallest measured resolution, ">" -- above the largest), or ``px`` None when
    undefined. ``str()`` is what reports print: "45.3", "<=16", ">128" or "-"."""

    px: float | None
    bound: str = ""

    def __str__(self) -> str:
        if self.px is None:
            return "-"
        return f"{self.bound}{self.px:.0f}" if self.bound else f"{self.px:.1f}"


def effective_resolution(gammas: Mapping[int, float], keeps: float = KEEPS) -> EffectiveResolution:
    """The smallest input resolution at which a model keeps ``keeps`` (90 %) of its HR accuracy,
    from its gamma at the measured LR resolutions (``{px: gamma}``; NaN points are left out):

    * walk from the highest measured resolution down while gamma >= ``keeps``; the last
      resolution reached, r_k, is the lowest from which gamma stays >= ``keeps`` all the way up;
    * below r_k lies r_(k-1) with gamma < ``keeps``: the value is where the straight line
      between (log2 r_(k-1), gamma) and (log2 r_k, gamma) crosses ``keeps``, 2 ** that;
    * gamma >= ``keeps`` at every measured resolution: "<= r_1" (the smallest one; below the grid);
    * gamma < ``keeps`` at the highest one: "> r_n" (beyond the grid; HR itself keeps 100 %);
    * no LR point with a defined gamma (no HR accuracy, or it is 0): undefined ("-").

    Walking down from the top makes a dip below ``keeps`` at a high resolution count: the model
    keeps 90 % only from where it stops dipping."""
    points = sorted((int(r), float(g)) for r, g in gammas.items() if not math.isnan(float(g)))
    if not points:
        return EffectiveResolution(None)
    k = len(points)
    while k > 0 and points[k - 1][1] >= keeps:
        k -= 1
    if k == len(points):
        return EffectiveResolution(float(points[-1][0]), ">")
    if k == 0:
        return EffectiveResolution(float(points[0][0]), "<=")
    (r0, g0), (r1, g1) = points[k - 1], points[k]
    t = (keeps - g0) / (g1 - g0)
    return EffectiveResolution(2 ** (math.log2(r0) + t * (math.log2(r1) - math.log2(r0))))


def effective_resolution_of(accuracies: Mapping, keeps: float = KEEPS) -> EffectiveResolution:
    """``effective_resolution`` of one evaluation's accuracies, ``{px or "hr": top-1}``: gamma of
    each LR accuracy against the HR one (undefined without an HR accuracy)."""
    hr = next((a for r, a in accuracies.items() if str(r).lower() == "hr"), None)
    if hr is None:
        return EffectiveResolution(None)
    return effective_resolution({r: gamma(a, hr) for r, a in accuracies.items() if str(r).lower() != "hr"}, keeps)
