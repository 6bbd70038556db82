"""Reports over stored records: accuracy per resolution with gamma, Gamma, SAR, WAR; plots; JSON."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

from ..catalog import class_counts, war_weights
from ..metrics import (AGGREGATES, KEEPS, RANK_BY, EffectiveResolution, Robustness, effective_resolution, gamma,
                       improved_gamma, ranked, robustness_table)
from ..records import (label_records, model_name, primary_per_dataset, protocol_of, res_key, robustness_rows,
                       table_row)


def model_label(record: dict) -> str:
    """The row label of a record (``records.label_records`` decides it; this reads it back)."""
    return record.get("model_label") or model_name(record)


def _res_sort(r) -> int:
    return res_key(r)


def labelled(records: Iterable[dict]) -> list[dict]:
    """Records with their row labels (one label = one evaluation); idempotent."""
    records = list(records)
    if records and all("model_label" in r and "dataset_label" in r for r in records):
        return records
    return label_records(records)


def accuracy_rows(records: Iterable[dict]) -> list[dict]:
    """Rows for the robustness metrics: one evaluation per (model label, dataset), so gamma and
    Gamma divide numbers of one evaluation only."""
    kept, _ = primary_per_dataset(labelled(records))
    return robustness_rows(kept)


def robustness(records: Sequence[dict], weights: dict | None = None) -> list[Robustness]:
    return robustness_table(accuracy_rows(records), war_weights() if weights is None else weights, class_counts())


def sar_effective_resolution(rob: Iterable[Robustness], model: str) -> EffectiveResolution:
    """A model's effective resolution on its SAR curve (mean gamma over datasets per resolution):
    the one number per model a leaderboard shows beside the per-dataset ones."""
    return effective_resolution({x.resolution: x.scores["SAR"] for x in rob if x.model == model})


def json_records(records: Iterable[dict]) -> str:
    """The tidy columns of every record with its row labels (lr0fm.records.TABLE_COLUMNS)."""
    return json.dumps([table_row(r) for r in labelled(records)], indent=1, default=str)


def _fmt(x: float, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.3f}"


def text_report(records: Sequence[dict]) -> str:
    """Per model label: per-dataset top-1 (%) at each resolution with gamma / Gamma; the aggregates
    (SAR, WAR: lr0fm.metrics.AGGREGATES) per LR resolution. A row is one evaluation; several evaluations of one dataset are separate rows
    labelled by what differs."""
    if not records:
        return "no results yet: run 'lr0fm eval' first"
    records = labelled(records)
    rob = {(x.model, x.resolution): x for x in robustness(records)}
    _, notes = primary_per_dataset(records)
    counts = class_counts()
    lines: list[str] = []
    for model in sorted({r["model_label"] for r in records}):
        recs = [r for r in records if r["model_label"] == model]
        resolutions = sorted({r["resolution"] for r in recs}, key=_res_sort)
        datasets = sorted({r["dataset_label"] for r in recs})
        width = max(16, *(len(d) + 2 for d in datasets))
        head = f"{'dataset':<{width}}" + "".join(f"{str(r):>8}" for r in resolutions)
        lines += [f"== {model}", "top-1 accuracy (%)", head]
        acc = {(r["dataset_label"], r["resolution"]): r for r in recs}
        for d in datasets:
            lines.append(f"{d:<{width}}" + "".join(f"{_fmt(acc[(d, r)]['top1']) if (d, r) in acc else '-':>8}"
                                                   for r in resolutions))
        lr = [r for r in resolutions if r != "hr"]
        for name in ("gamma", "Gamma"):
            lines.append("gamma (relative robustness)" if name == "gamma" else "Gamma (improved relative robustness)")
            for d in datasets:
                vals = []
                for r in lr:
                    lo, hr = acc.get((d, r)), acc.get((d, "hr"))
                    if lo is None or hr is None:
                        vals.append(None)
                    elif name == "gamma":
                        vals.append(gamma(lo["top1"], hr["top1"]))
                    else:
                        n = hr.get("num_classes") or counts.get(hr["dataset"])
                        vals.append(improved_gamma(lo["top1"], hr["top1"], n) if n else None)
                lines.append(f"{d:<{width}}" + "".join(f"{_fmt(v, False) if v is not None else '-':>8}" for v in vals))
        for name in (a.name for a in AGGREGATES):
            vals = [rob[(model, r)].scores[name] if (model, r) in rob else None for r in lr]
            lines.append(f"{name:<{width}}" + "".join(f"{_fmt(v, False) if v is not None else '-':>8}" for v in vals))
        lines.append(f"effective resolution (px where gamma stays >= {KEEPS:g}; SAR: of its curve)")
        for d in datasets:
            shown = next(r.get("effective_resolution") for r in recs if r["dataset_label"] == d)
            lines.append(f"{d:<{width}}{shown or '-':>8}")
        lines.append(f"{'SAR':<{width}}{str(sar_effective_resolution(rob.values(), model)):>8}")
        lines += [f"({note.split(': ', 1)[1]})" for note in notes if note.startswith(model + ": ")]
        skipped = sum(r.get("n_skipped", 0) for r in recs if r["resolution"] == resolutions[0])
        if skipped:
            lines.append(f"({skipped} unreadable images skipped; their ids are in the records)")
        lines.append("")
    return "\n".join(lines)


def robustness_json(rob: Sequence[Robustness]) -> str:
    return json.dumps([x.as_dict() for x in rob], indent=1)


def ranked_table(rob: Sequence[Robustness], key: str = RANK_BY) -> str:
    lines = []
    names = [a.name for a in AGGREGATES]
    for res in sorted({x.resolution for x in rob}):
        rows = ranked((x for x in rob if x.resolution == res), key)
        lines += [f"== {res} px (ranked by {key})",
                  f"{'rank':>4}  {'model':<40}" + "".join(f"{n:>8}" for n in names) + f"{'datasets':>10}"]
        for i, x in enumerate(rows, 1):
            lines.append(f"{i:>4}  {x.model:<40}" + "".join(f"{x.scores[n]:>8.3f}" for n in names)
                         + f"{len(x.gamma):>10}")
        lines.append("")
    return "\n".join(lines)


def _size(record: dict) -> int:
    """The resolution of a record in px (HR drawn at the model's input size)."""
    return protocol_of(record)["input_size"] if record["resolution"] == "hr" else int(record["resolution"])


def plot_accuracy(records: Sequence[dict], path: str | Path) -> Path:
    """Accuracy vs resolution, one panel per dataset, one curve per model (HR drawn at the model's
    S), written atomically to ``path``."""
    from ..atomic import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, accuracy_png(records), instead="another --plot file")  # one line, nothing half-written
    return path


def accuracy_png(records: Sequence[dict]) -> bytes:
    """The accuracy-vs-resolution figure as PNG bytes."""
    from ..plotting import figure_png, pyplot

    plt = pyplot()
    records = labelled(records)
    datasets = sorted({r["dataset_label"] for r in records})
    cols = min(3, len(datasets))
    rows = math.ceil(len(datasets) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, d in zip(axes.flat, datasets):
        for model in sorted({r["model_label"] for r in records}):
            pts = sorted((_size(r), r["top1"]) for r in records if r["dataset_label"] == d and r["model_label"] == model)
            if pts:
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=model)
        chance = next((100 / r["num_classes"] for r in records if r["dataset_label"] == d and r.get("num_classes")), None)
        if chance:
            ax.axhline(chance, color="grey", lw=0.8, ls="--", label="chance")
        ax.set_xscale("log", base=2)
        ticks = sorted({_size(r) for r in records if r["dataset_label"] == d})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_title(d)
        ax.set_xlabel("resolution (px)")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    return figure_png(fig, dpi=110)
