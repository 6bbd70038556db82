"""``lr0fm report --html DIR``: one self-contained HTML page over the stored records.

The page opens from disk with no network: the stylesheet is inlined (report/style.css) and every
plot is a base64 PNG data URI; there is no JavaScript. Sections: the SAR/WAR leaderboard per LR
resolution (the paper's backbones alongside, when their published results are available),
accuracy-vs-resolution curves, a Gamma heat map per model, the plots ``lr0fm analyze`` left under
``<results>/analysis/``, and the protocol and provenance of every number. All text is escaped.

Rows are the labels of ``lr0fm.records.label_records``: one label is one evaluation, so a
``--limit`` run and a full run of one (model, dataset) are separate rows and curves, each Gamma is
computed within its evaluation, and the leaderboard says which evaluation entered SAR/WAR. The
provenance table is ``lr0fm.records.TABLE_COLUMNS`` of every record.
"""
from __future__ import annotations

import base64
import datetime as _dt
import logging
import math
from html import escape
from pathlib import Path
from typing import Sequence

from .. import resources
from ..atomic import atomic_write_bytes
from ..catalog import catalog_hashes
from ..metrics import AGGREGATES, KEEPS, RANK_BY, Robustness, rank_key, robustness_table
from ..records import TABLE_COLUMNS, primary_per_dataset, res_key, robustness_rows, table_row
from ..store import ResultsStore
from ..version import __version__
from ..plotting import figure_png, pyplot
from . import accuracy_png, labelled, robustness, sar_effective_resolution

log = logging.getLogger("lr0fm")

PAGE_NAME = "index.html"
ANALYSIS_DIR = "analysis"
MAX_EMBED_BYTES = 20 << 20  # analysis images larger than this are linked, not embedded
EFFECTIVE_DOC = (f"the smallest resolution (px) at which SAR (mean gamma) stays >= {KEEPS:g}, interpolated in "
                 "log2(resolution); hover a cell for each dataset's")


def write_html(records: Sequence[dict], out_dir: str | Path, store: ResultsStore | None = None) -> Path:
    """Write ``out_dir/index.html`` (atomically) and return its path."""
    page = Path(out_dir) / PAGE_NAME
    atomic_write_bytes(page, render_html(records, store=store).encode("utf-8"), instead="another --html folder")
    return page


def render_html(records: Sequence[dict], store: ResultsStore | None = None) -> str:
    records = labelled(records)
    analysis_root = store.root / ANALYSIS_DIR if store is not None else None
    body = [_header(records, store)]
    if records:
        body += [_leaderboard(robustness(records), records), _curves(records), _heatmaps(records)]
    else:
        body.append('<p class="empty">No results yet: run <code>lr0fm eval</code> first.</p>')
    body.append(_analysis(analysis_root))
    if records:
        body.append(_provenance(records))
    css = resources.read_text("report/style.css")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>lr0fm report</title><style>{css}</style></head>\n<body>\n"
            + "\n".join(s for s in body if s) + "\n</body></html>\n")


# -- sections --------------------------------------------------------------------------------
def _header(records: Sequence[dict], store: ResultsStore | None) -> str:
    where = f" from <code>{escape(str(store.root))}</code>" if store is not None else ""
    models = sorted({r["model_label"] for r in records})
    datasets = sorted({r["dataset_label"] for r in records})
    evaluations = len({r["evaluation"] for r in records})
    return (f"<header><h1>LR0.FM low-resolution robustness report</h1>"
            f"<p class=\"meta\">{len(records)} result records of {evaluations} evaluation(s){where}; "
            f"{len(models)} model(s), {len(datasets)} dataset(s): {escape(', '.join(datasets)) or '-'}. "
            f"Generated {_dt.datetime.now():%Y-%m-%d %H:%M} "
            f"by lr0fm {escape(__version__)}.</p>"
            "<p class=\"meta\">Accuracies are top-1 zero-shot; gamma = A(r)/A(HR), Gamma = gamma damped near "
            f"chance; {escape('; '.join(f'{a.name} = {a.doc}' for a in AGGREGATES))}, per resolution. A label in "
            "brackets names what differs between evaluations of one model or dataset.</p></header>")


def _paper_rows(user_datasets: set[str]) -> tuple[list[Robustness], str]:
    """The paper's backbones scored on the datasets the user also ran (else on its 15), and a note.

    report/paper.py may be absent (it is optional data); the page is written without those rows then.
    """
    try:
        from .paper import paper_datasets, paper_robustness
    except ImportError:
        return [], "The paper's published results are not available in this installation."
    try:
        theirs = paper_datasets()
        common = [d for d in theirs if d in user_datasets]
        rows = paper_robustness(common or None)
    except Exception as e:  # reference data only: never lose the user's report over it
        log.warning("paper results unreadable, leaving them out of the HTML report: %s", e)
        return [], "The paper's published results could not be read."
    if common:
        note = (f"Paper rows are scored on the {len(common)} dataset(s) you also evaluated "
                f"({', '.join(common)}); your rows on all of yours.")
    else:
        note = (f"None of your datasets is among the paper's {len(theirs)}: paper rows are scored on its "
                f"{len(theirs)} datasets, yours on your own, so ranks across the two are indicative only.")
    return rows, note + " <code>lr0fm compare</code> ranks yours among them like for like."


def _leaderboard(rob: Sequence[Robustness], records: Sequence[dict]) -> str:
    names = [a.name for a in AGGREGATES]
    if not rob:
        return (f"<section id=\"leaderboard\"><h2>Leaderboard</h2><p>{'/'.join(names)} need an HR result and at "
                "least one LR resolution of the same model and dataset.</p></section>")
    paper, note = _paper_rows({r["dataset"] for r in records})
    _, chosen = primary_per_dataset(records)
    resolutions = sorted({x.resolution for x in rob}, key=res_key, reverse=True)
    by_key = {(x.model, x.resolution): x for x in rob}
    heads = "".join(f"<th>{n}</th>" for n in names)
    summary = ["<table class=\"summary\"><thead><tr><th class=\"model\" rowspan=\"2\">your model</th>"
               + "".join(f"<th colspan=\"{len(names)}\">{escape(str(r))} px</th>" for r in resolutions)
               + f"<th rowspan=\"2\" class=\"effective\" title=\"{escape(EFFECTIVE_DOC)}\">effective resolution</th>"
               + "</tr><tr>" + heads * len(resolutions) + "</tr></thead><tbody>"]
    for m in sorted({x.model for x in rob}):
        per_dataset = sorted({(r["dataset_label"], r.get("effective_resolution") or "-") for r in records
                              if r["model_label"] == m})
        summary.append(f"<tr><td class=\"model\">{escape(m)}</td>" + "".join(
            "".join(f"<td>{_f3(by_key[(m, r)].scores[n])}</td>" for n in names) if (m, r) in by_key
            else "<td>-</td>" * len(names) for r in resolutions)
            + f"<td class=\"effective\" title=\"{escape(', '.join(f'{d}: {e}' for d, e in per_dataset))}\">"
            f"{escape(str(sar_effective_resolution(rob, m)))}</td></tr>")
    summary.append("</tbody></table>")
    parts = [f"<section id=\"leaderboard\"><h2>Leaderboard: {' / '.join(names)} per resolution</h2>",
             "".join(summary), *(f"<p class=\"note choice\">{escape(c)}</p>" for c in chosen),
             f"<p class=\"note\"><span class=\"badge user\">yours</span> rows are your results; "
             f"<span class=\"badge paper\">paper</span> rows are LR0.FM's published backbones, ranked by "
             f"{RANK_BY}. {note}</p>",
             "<div class=\"boards\">"]
    for res in resolutions:
        rows = [(x, "user") for x in rob if x.resolution == res]
        rows += [(x, "paper") for x in paper if x.resolution == res]
        rows.sort(key=lambda t: (rank_key(t[0].scores[RANK_BY]), t[1] != "user"))
        label = escape(str(res))
        parts.append(f"<div class=\"board\"><h3>{label} px</h3><table class=\"leaderboard\" data-resolution=\"{label}\">"
                     "<thead><tr><th>rank</th><th class=\"model\">model</th><th>source</th>" + heads
                     + "<th>datasets</th></tr></thead><tbody>")
        for i, (x, source) in enumerate(rows, 1):
            parts.append(f"<tr class=\"{source}\"><td>{i}</td><td class=\"model\">{escape(x.model)}</td>"
                         f"<td><span class=\"badge {source}\">{'yours' if source == 'user' else 'paper'}</span></td>"
                         + "".join(f"<td>{_f3(x.scores[n])}</td>" for n in names)
                         + f"<td title=\"{escape(', '.join(sorted(x.gamma)))}\">{len(x.gamma)}</td></tr>")
        parts.append("</tbody></table></div>")
    parts.append("</div></section>")
    return "\n".join(parts)


def _curves(records: Sequence[dict]) -> str:
    return ("<section id=\"curves\"><h2>Accuracy vs resolution</h2>"
            f"{_figure(accuracy_png(records), 'top-1 accuracy per dataset; HR drawn at the model input size')}</section>")


def per_evaluation_robustness(records: Sequence[dict]) -> list[Robustness]:
    """gamma/Gamma of every evaluation: per model label, keyed by dataset label (one evaluation
    each), so every value divides numbers of one evaluation. Their aggregates mean nothing here."""
    return robustness_table(robustness_rows(labelled(records), dataset=lambda r: r["dataset_label"]), {}, {})


def _heatmaps(records: Sequence[dict]) -> str:
    rob = per_evaluation_robustness(records)
    if not rob:
        return ""
    return ("<section id=\"gamma\"><h2>Improved relative robustness &Gamma; (dataset &times; resolution)</h2>"
            f"{_figure(_gamma_png(rob), 'Gamma per model and evaluation: 1 = as accurate as at HR, 0 = lost (or HR near chance)')}"
            "</section>")


def _gamma_png(rob: Sequence[Robustness]) -> bytes:
    plt = pyplot()
    models = sorted({x.model for x in rob})
    cols = min(2, len(models))
    nrows = math.ceil(len(models) / cols)
    by_key = {(x.model, x.resolution): x for x in rob}
    datasets_of = {m: sorted({d for x in rob if x.model == m for d in x.Gamma}) for m in models}
    height = max(2.6, 0.42 * max(len(d) for d in datasets_of.values()) + 1.6)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.6 * cols, height * nrows), squeeze=False)
    image = None
    for ax, m in zip(axes.flat, models):
        resolutions = sorted({x.resolution for x in rob if x.model == m}, key=res_key)
        datasets = datasets_of[m]
        grid = [[by_key[(m, r)].Gamma.get(d, math.nan) for r in resolutions] for d in datasets]
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if v < 0.6 else "black")
        ax.set_xticks(range(len(resolutions)), [str(r) for r in resolutions])
        ax.set_yticks(range(len(datasets)), datasets)
        ax.set_xlabel("resolution (px)")
        ax.set_title(m if len(m) <= 48 else m[:45] + "...", fontsize=9)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="Gamma")
    return figure_png(fig, dpi=100, tight_layout=False, bbox_inches="tight")


def _analysis(root: Path | None) -> str:
    pngs = sorted(root.rglob("*.png")) if root is not None and root.is_dir() else []
    if not pngs:
        return ""
    parts = ["<section id=\"analysis\"><h2>Analyses</h2>",
             f"<p class=\"note\">Plots written by <code>lr0fm analyze</code> under "
             f"<code>{escape(str(root))}</code>.</p>"]
    for path in pngs:
        caption = str(path.relative_to(root))
        if path.stat().st_size > MAX_EMBED_BYTES:
            parts.append(f"<p>{escape(caption)}: too large to embed "
                         f"(<a href=\"{escape(path.resolve().as_uri())}\">open the file</a>)</p>")
        else:
            parts.append(_figure(path.read_bytes(), caption))
    parts.append("</section>")
    return "\n".join(parts)


def _provenance(records: Sequence[dict]) -> str:
    """Every record's tidy columns with its row labels first (lr0fm.records.TABLE_COLUMNS)."""
    records = sorted(records, key=lambda r: (r["model_label"], r["dataset_label"], res_key(r["resolution"])))
    head = sorted(TABLE_COLUMNS, key=lambda c: not c.label)
    rows = []
    for r in records:
        values = table_row(r)
        cells = []
        for c in head:
            value = values[c.name]
            if c.digest and value:  # shortened; the full value on hover
                cells.append(f"<td title=\"{escape(str(value))}\">{escape(str(value)[:12])}</td>")
            else:
                cls = " class=\"model\"" if c.label else ""
                cells.append(f"<td{cls}>{escape(_cell(value))}</td>")
        rows.append(f"<tr data-evaluation=\"{escape(r['evaluation'])}\">" + "".join(cells) + "</tr>")
    hashes = ", ".join(f"{k}: {v[:12]}" for k, v in catalog_hashes().items())
    return ("<section id=\"provenance\"><h2>Protocol and provenance of every number</h2>"
            "<p class=\"note\">One row per stored record (cell), with the columns of <code>lr0fm report --csv</code>; "
            "accuracies are fractions. Digests are shortened; hover for the full value, or a column name for what "
            f"it means. Catalogs of this lr0fm: {escape(hashes)}.</p>"
            "<div class=\"scroll\"><table class=\"provenance\"><thead><tr>"
            + "".join(f"<th title=\"{escape(c.doc)}\">{escape(c.name)}</th>" for c in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div></section>")


# -- helpers ---------------------------------------------------------------------------------
def _figure(png: bytes, caption: str) -> str:
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f"<figure><img src=\"{uri}\" alt=\"{escape(caption)}\"><figcaption>{escape(caption)}</figcaption></figure>"


def _f3(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)
