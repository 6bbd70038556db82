"""Robustness vs model properties: do bigger, longer-trained or higher-resolution models hold up
better at low resolution?

SAR and WAR per LR resolution -- from the user's stored records, the paper's published accuracies,
or both (kept apart: they cover different datasets) -- against the properties in
catalog/models.yaml, with Spearman's rank correlation (scipy.stats.spearmanr), its p-value and n.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ..catalog import model_catalog
from ..errors import InputError
from ..metrics import AGGREGATE_NAMES, RANK_BY, Robustness
from ..records import amp_of, protocol_of, variant_of
from . import pyplot, save_figure, write_csv, write_json

SOURCES = ("user", "paper", "both")
METRICS = AGGREGATE_NAMES
# property -> (axis label, log-scale axis)
PROPERTIES: dict[str, tuple[str, bool]] = {
    "params_m": ("parameters, vision + text (M)", True),
    "gflops": ("GFLOPs", True),
    "pretrain_size_m": ("pre-training pairs (M)", True),
    "finetuned": ("fine-tuned (0/1)", False),
    "native_resolution": ("native resolution (px)", False),
}


def model_properties(name: str) -> dict | None:
    """The catalog's properties of a model (None when it is not a catalog model); missing values are None."""
    entry = model_catalog().get(name)
    if entry is None:
        return None
    vision, text = entry.get("params_vision_m"), entry.get("params_text_m")
    finetuned = entry.get("finetuned")
    return {"params_m": vision + text if vision is not None and text is not None else None,
            "gflops": entry.get("gflops"), "pretrain_size_m": entry.get("pretrain_size_m"),
            "finetuned": None if finetuned is None else int(bool(finetuned)),
            "native_resolution": entry.get("native_resolution")}


@dataclass
class Correlation:
    source: str
    resolution: int
    metric: str
    property: str
    rho: float
    p: float
    n: int


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, int]:
    """Spearman's rho, its two-sided p-value and n over the pairs where both values exist."""
    from scipy.stats import spearmanr
    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None and not _nan(a) and not _nan(b)]
    if len(pairs) < 3:
        return float("nan"), float("nan"), len(pairs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input -> nan, reported as such
        result = spearmanr([a for a, _ in pairs], [b for _, b in pairs])
    return float(result.statistic), float(result.pvalue), len(pairs)


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


@dataclass
class ModelRobustness:
    points: list[dict]                 # source, model, resolution, SAR, WAR, properties
    correlations: list[Correlation]
    skipped: list[str] = field(default_factory=list)   # user models without catalog properties
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        lines = []
        for source in dict.fromkeys(c.source for c in self.correlations):
            rows = [c for c in self.correlations if c.source == source]
            resolutions = sorted({c.resolution for c in rows})
            n_models = len({p["model"] for p in self.points if p["source"] == source})
            lines += [f"== {source} results ({n_models} models): Spearman rho (p-value, n) of robustness vs property",
                      f"{'property':<20}{'metric':<7}" + "".join(f"{str(r) + ' px':>22}" for r in resolutions)]
            by_key = {(c.property, c.metric, c.resolution): c for c in rows}
            for prop in PROPERTIES:
                for metric in METRICS:
                    cells = [by_key.get((prop, metric, r)) for r in resolutions]
                    lines.append(f"{prop:<20}{metric:<7}" + "".join(f"{_cell(c):>22}" for c in cells))
            lines.append("")
        if self.skipped:
            lines.append(f"skipped (not in catalog/models.yaml, no properties): {', '.join(self.skipped)}")
        lines += self.notes
        return "\n".join(lines).rstrip()

    def plot(self, path: Path, metric: str = RANK_BY) -> Path:
        plt = pyplot()
        resolutions = sorted({p["resolution"] for p in self.points})
        fig, axes = plt.subplots(len(PROPERTIES), len(resolutions),
                                 figsize=(3.0 * len(resolutions), 2.4 * len(PROPERTIES)), squeeze=False)
        by_key = {(c.source, c.property, c.metric, c.resolution): c for c in self.correlations}
        for row, (prop, (label, log)) in enumerate(PROPERTIES.items()):
            for col, r in enumerate(resolutions):
                ax = axes[row, col]
                notes = []
                for source, marker in (("paper", "o"), ("user", "^")):
                    pts = [(p[prop], p[metric]) for p in self.points
                           if p["source"] == source and p["resolution"] == r and p[prop] is not None]
                    if pts:
                        ax.scatter([a for a, _ in pts], [b for _, b in pts], s=12, marker=marker, alpha=0.7,
                                   label=source)
                    c = by_key.get((source, prop, metric, r))
                    if c is not None and c.n:
                        notes.append(f"{source} ρ={_f(c.rho, '+.2f')} n={c.n}")
                ax.set_title(f"{r} px  " + "; ".join(notes), fontsize=7)
                if log:
                    ax.set_xscale("log")
                ax.set_xlabel(label, fontsize=7)
                if col == 0:
                    ax.set_ylabel(metric, fontsize=8)
                ax.tick_params(labelsize=7)
                ax.grid(alpha=0.3)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="upper right", fontsize=8)
        fig.suptitle(f"{metric} vs model properties", fontsize=10)
        return save_figure(fig, path)

    def save(self, directory: Path, metric: str = RANK_BY, stem: str = "models") -> dict[str, Path]:
        directory = Path(directory)
        return {"json": write_json(directory / f"{stem}.json", asdict(self)),
                "csv": write_csv(directory / f"{stem}_correlations.csv", [asdict(c) for c in self.correlations]),
                "points_csv": write_csv(directory / f"{stem}_points.csv", self.points),
                "png": self.plot(directory / f"{stem}_{metric}.png", metric)}


def _f(x: float, spec: str) -> str:
    return "-" if _nan(x) else format(x, spec)


def _cell(c: Correlation | None) -> str:
    if c is None or c.n < 3 or _nan(c.rho):
        return "-" if c is None else f"- (n={c.n})"
    return f"{c.rho:+.2f} ({c.p:.2g}, {c.n})"


def _points(source: str, rob: Sequence[Robustness], skipped: list[str], names: dict[str, str] | None = None
            ) -> list[dict]:
    """Scatter points; ``names`` maps a row label to its catalog name (default: the label)."""
    out = []
    for x in rob:
        name = (names or {}).get(x.model, x.model)
        props = model_properties(name)
        if props is None:
            if x.model not in skipped:
                skipped.append(x.model)
            continue
        out.append({"source": source, "model": x.model, "catalog_name": name, "resolution": x.resolution,
                    **x.scores, "n_datasets": len(x.gamma), **props})
    return out


def _one_label_per_model(records: Sequence[dict], notes: list[str]) -> dict[str, str]:
    """Row label -> catalog name for the labels that stand for their model: one per model, without
    a variant (LR tokens and SR are interventions, not properties), preferring fp32 and the
    catalog's resize mode and input size. What is left out is said in ``notes``."""
    catalog = model_catalog()
    by_model: dict[str, dict[str, dict]] = {}
    variants = sorted({r["model_label"] for r in records if variant_of(r)})
    for r in records:
        if not variant_of(r):
            by_model.setdefault(r["model"], {}).setdefault(r["model_label"], r)
    if variants:
        notes.append(f"variants left out (interventions, not model properties): {', '.join(variants)}")
    chosen = {}
    for model, labels in sorted(by_model.items()):
        entry = catalog.get(model) or {}

        def fit(label: str) -> tuple:
            record = labels[label]
            protocol = protocol_of(record)
            return (amp_of(record) != "fp32", protocol.get("mode") != entry.get("resize_mode"),
                    protocol.get("input_size") != entry.get("native_resolution"), label)
        best = min(labels, key=fit)
        chosen[best] = model
        if len(labels) > 1:
            others = ", ".join(sorted(set(labels) - {best}))
            notes.append(f"{model}: correlated as {best}; left out {others} (one point per model)")
    return chosen


def robustness_vs_properties(records: Sequence[dict] | None = None, source: str = "both") -> ModelRobustness:
    """Spearman correlations of SAR/WAR with model properties, per source and LR resolution.

    ``records``: the user's stored records (needed for source 'user'/'both'). Paper rows cover
    only backbones with published accuracies on all 15 datasets (fewer datasets = another SAR).
    """
    if source not in SOURCES:
        raise InputError(f"--source {source!r} unknown; use one of {', '.join(SOURCES)}")
    points, skipped, notes = [], [], []
    if source in ("user", "both"):
        from ..report import labelled, robustness
        records = labelled(records or [])
        user = robustness(records)
        if not user and source == "user":
            raise InputError("no stored results with HR and LR accuracies; run 'lr0fm eval' first (same --out), "
                             "or use --source paper")
        names = _one_label_per_model(records, notes)
        points += _points("user", [x for x in user if x.model in names], skipped, names)
        if user and not any(p["source"] == "user" for p in points):
            if source == "user":
                raise InputError(f"none of your evaluated models ({', '.join(skipped or sorted({x.model for x in user}))})"
                                 " is a catalog/models.yaml model without a variant, so they have no properties to "
                                 "correlate; evaluate catalog models "
                                 "('lr0fm models --paper') or use --source paper")
            notes.append("so only the paper's results are correlated")
    if source in ("paper", "both"):
        from ..report.paper import complete_and_incomplete, paper_datasets, paper_robustness
        full, incomplete = complete_and_incomplete(paper_robustness(), paper_datasets())
        points += _points("paper", full, skipped)
        if incomplete:
            notes.append(f"paper: {len({m['model'] for m in incomplete})} backbones without published accuracies on "
                         "all 15 datasets left out")
    correlations = []
    for src in dict.fromkeys(p["source"] for p in points):
        for r in sorted({p["resolution"] for p in points if p["source"] == src}):
            pts = [p for p in points if p["source"] == src and p["resolution"] == r]
            for prop in PROPERTIES:
                for metric in METRICS:
                    rho, pval, n = spearman([p[prop] for p in pts], [p[metric] for p in pts])
                    correlations.append(Correlation(src, r, metric, prop, rho, pval, n))
    return ModelRobustness(points, correlations, skipped, notes)
