"""Reports over stored records: accuracy per resolution with gamma, Gamma, SAR, WAR; plots; JSON."""
from __future__ import annotations

import json
import re
import math
from pathlib import Path
from typing import Iterable, Sequence

from ..catalog import class_counts, war_weights
from ..metrics import Robustness, robustness_table

JSON_KEYS = ["model", "dataset", "split", "resolution", "top1", "top5", "mean_per_class_recall", "n_images",
             "n_skipped", "protocol", "variant", "model_id", "weights_hash", "classnames_hash", "templates_hash",
             "cell", "lr0fm_version"]


def model_label(record: dict) -> str:
    """Model name, plus its variant (LR tokens, SR, ...) when there is one."""
    variant = record.get("variant") or {}
    if not variant:
        return record["model"]
    return record["model"] + "+" + ",".join(f"{k}={_short(v)}" for k, v in sorted(variant.items()))


def _short(value) -> str:
    """Bare hashes (token checkpoints) shortened to 12 hex digits; names (SR ids) kept whole so
    that two different variants never share a label."""
    text = str(value)
    return text[:12] if re.fullmatch(r"[0-9a-f]{16,}", text) else text


def _res_sort(r) -> int:
    return 10 ** 9 if str(r) == "hr" else int(r)


def accuracy_rows(records: Iterable[dict]) -> list[dict]:
    return [{"model": model_label(r), "dataset": r["dataset"], "resolution": r["resolution"], "top1": r["top1"],
             "num_classes": r.get("num_classes")} for r in records]


def robustness(records: Sequence[dict], weights: dict | None = None) -> list[Robustness]:
    return robustness_table(accuracy_rows(records), war_weights() if weights is None else weights, class_counts())


def json_records(records: Iterable[dict]) -> str:
    return json.dumps([{k: r.get(k) for k in JSON_KEYS} for r in records], indent=1)


def _fmt(x: float, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.3f}"


def text_report(records: Sequence[dict]) -> str:
    """Per model: per-dataset top-1 (%) at each resolution with gamma / Gamma; SAR and WAR per LR resolution."""
    if not records:
        return "no results yet: run 'lr0fm eval' first"
    rob = {(x.model, x.resolution): x for x in robustness(records)}
    lines: list[str] = []
    models = sorted({model_label(r) for r in records})
    for model in models:
        recs = [r for r in records if model_label(r) == model]
        resolutions = sorted({r["resolution"] for r in recs}, key=_res_sort)
        head = f"{'dataset':<16}" + "".join(f"{str(r):>8}" for r in resolutions)
        lines += [f"== {model}", "top-1 accuracy (%)", head]
        datasets = sorted({r["dataset"] for r in recs})
        acc = {(r["dataset"], r["resolution"]): r for r in recs}
        for d in datasets:
            lines.append(f"{d:<16}" + "".join(f"{_fmt(acc[(d, r)]['top1']) if (d, r) in acc else '-':>8}"
                                              for r in resolutions))
        lr = [r for r in resolutions if r != "hr"]
        for name, attr in (("gamma", "gamma"), ("Gamma", "Gamma")):
            lines.append(f"{name} (relative robustness)" if name == "gamma" else "Gamma (improved relative robustness)")
            for d in datasets:
                vals = [getattr(rob.get((model, r)), attr, {}).get(d) if (model, r) in rob else None for r in lr]
                lines.append(f"{d:<16}" + "".join(f"{_fmt(v, False) if v is not None else '-':>8}" for v in vals))
        for name in ("SAR", "WAR"):
            vals = [getattr(rob[(model, r)], name) if (model, r) in rob else None for r in lr]
            lines.append(f"{name:<16}" + "".join(f"{_fmt(v, False) if v is not None else '-':>8}" for v in vals))
        skipped = sum(r.get("n_skipped", 0) for r in recs if r["resolution"] == resolutions[0])
        if skipped:
            lines.append(f"({skipped} unreadable images skipped; their ids are in the records)")
        lines.append("")
    return "\n".join(lines)


def robustness_json(rob: Sequence[Robustness]) -> str:
    return json.dumps([x.as_dict() for x in rob], indent=1)


def ranked_table(rob: Sequence[Robustness], key: str = "WAR") -> str:
    lines = []
    for res in sorted({x.resolution for x in rob}):
        rows = sorted((x for x in rob if x.resolution == res), key=lambda x: -getattr(x, key))
        lines += [f"== {res} px (ranked by {key})", f"{'rank':>4}  {'model':<40}{'SAR':>8}{'WAR':>8}{'datasets':>10}"]
        for i, x in enumerate(rows, 1):
            lines.append(f"{i:>4}  {x.model:<40}{x.SAR:>8.3f}{x.WAR:>8.3f}{len(x.gamma):>10}")
        lines.append("")
    return "\n".join(lines)


def plot_accuracy(records: Sequence[dict], path: str | Path) -> Path:
    """Accuracy vs resolution, one panel per dataset, one curve per model (HR drawn at the model's S)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in records})
    cols = min(3, len(datasets))
    rows = math.ceil(len(datasets) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, d in zip(axes.flat, datasets):
        for model in sorted({model_label(r) for r in records}):
            pts = sorted(((r["protocol"]["input_size"] if r["resolution"] == "hr" else int(r["resolution"]), r["top1"])
                          for r in records if r["dataset"] == d and model_label(r) == model))
            if pts:
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=model)
        chance = next((100 / r["num_classes"] for r in records if r["dataset"] == d and r.get("num_classes")), None)
        if chance:
            ax.axhline(chance, color="grey", lw=0.8, ls="--", label="chance")
        ax.set_xscale("log", base=2)
        ticks = sorted({p for r in records if r["dataset"] == d
                        for p in [r["protocol"]["input_size"] if r["resolution"] == "hr" else int(r["resolution"])]})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_title(d)
        ax.set_xlabel("resolution (px)")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
