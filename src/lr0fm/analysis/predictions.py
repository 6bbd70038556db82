"""Semantic LR errors: when a model is wrong at low resolution, is its guess a near miss?

From the predictions ``lr0fm eval`` stored, for each LR resolution: the Wu-Palmer similarity in
WordNet between the LR top-1 prediction and the true class for every LR error, against the
similarity of a random wrong class to the true class (the chance baseline, fixed seed). An error
is *semantically close* when WuP >= ``threshold``. Also: a gallery of images the model gets right
at HR and wrong at LR, shown as the LR view with both labels.
"""
from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..datasets.base import LabeledImages
from ..errors import InputError
from ..identity import data_matcher
from ..protocol import HR, Protocol
from ..records import label_records, primary_per_dataset, protocol_of, select, variant_of
from ..store import ResultsStore
from . import pyplot, save_figure, slug, write_csv, write_json
from .wordnet import class_synsets, load_wordnet, wup

DEFAULT_THRESHOLD = 0.5


@dataclass
class ErrorSummary:
    """LR errors at one resolution (images valid at HR and LR whose true and predicted class map to WordNet)."""

    resolution: int
    n_images: int
    hr_top1: float
    lr_top1: float
    n_errors: int            # LR top-1 errors with both classes in WordNet
    n_flips: int             # right at HR, wrong at LR
    mean_wup_errors: float   # WuP(LR prediction, true class) over the errors
    mean_wup_random: float   # WuP(random wrong class, true class), one draw per error
    close_share: float       # share of errors with WuP >= threshold
    random_close_share: float


@dataclass
class Example:
    resolution: int
    id: str
    true: str
    predicted: str
    wup: float


@dataclass
class SemanticErrors:
    model: str
    dataset: str
    threshold: float
    mapping: str                       # "wnids" | "lemma"
    num_classes: int
    unmapped_classes: list[str]
    summaries: list[ErrorSummary]
    examples: list[Example] = field(default_factory=list)
    variant: dict = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)   # the evaluation's protocol (makes the gallery's LR views)
    evaluation: str = ""                           # the evaluation whose predictions these are
    notes: list[str] = field(default_factory=list)  # which evaluation, and the others that matched

    def table(self) -> str:
        mapped = self.num_classes - len(self.unmapped_classes)
        lines = [f"== {self.model} on {self.dataset}: LR errors in WordNet "
                 f"({mapped}/{self.num_classes} classes mapped via {self.mapping}; close = WuP >= {self.threshold:g})",
                 f"{'res':>5}{'images':>8}{'HR top1':>9}{'LR top1':>9}{'errors':>8}{'flips':>7}"
                 f"{'WuP err':>9}{'WuP rnd':>9}{'close err':>11}{'close rnd':>11}"]
        for s in self.summaries:
            lines.append(f"{s.resolution:>5}{s.n_images:>8}{100 * s.hr_top1:>9.1f}{100 * s.lr_top1:>9.1f}"
                         f"{s.n_errors:>8}{s.n_flips:>7}{_f(s.mean_wup_errors):>9}{_f(s.mean_wup_random):>9}"
                         f"{_f(s.close_share):>11}{_f(s.random_close_share):>11}")
        if self.unmapped_classes:
            shown = ", ".join(self.unmapped_classes[:8]) + (" ..." if len(self.unmapped_classes) > 8 else "")
            lines.append(f"(not in WordNet, left out: {shown})")
        return "\n".join(lines + self.notes)

    def stem(self) -> str:
        """File stem: model, dataset, variant and evaluation (analyses of two evaluations never overwrite)."""
        return "predictions_" + slug(self.model, self.dataset, *(f"{k}-{v}" for k, v in sorted(self.variant.items())),
                                     *([self.evaluation[:8]] if self.evaluation else []))

    def save(self, directory: Path, data: LabeledImages | None = None) -> dict[str, Path]:
        """JSON + CSV; with ``data`` (the evaluated dataset) also the gallery PNG."""
        directory = Path(directory)
        rows = [{"model": self.model, "dataset": self.dataset, **asdict(s)} for s in self.summaries]
        paths = {"json": write_json(directory / f"{self.stem()}.json", asdict(self)),
                 "csv": write_csv(directory / f"{self.stem()}.csv", rows)}
        if data is not None and self.examples:
            paths["png"] = plot_gallery(self.examples, data, protocol_from(self.protocol),
                                        directory / f"{self.stem()}_gallery.png",
                                        title=f"{self.model} on {self.dataset}: right at HR, wrong at LR")
        return paths


def _f(x: float) -> str:
    return "-" if x != x else f"{x:.3f}"


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def summarize_errors(resolution: int, hr_pred: np.ndarray, lr_pred: np.ndarray, labels: np.ndarray,
                     valid: np.ndarray, synsets: Sequence, threshold: float = DEFAULT_THRESHOLD,
                     seed: int = 0) -> tuple[ErrorSummary, np.ndarray]:
    """Summary of the LR errors at one resolution, and the indices of the flips (right at HR, wrong at LR).

    ``hr_pred``/``lr_pred`` are top-1 class indices, ``valid`` marks images readable in both passes,
    ``synsets[c]`` is class c's synset or None (such classes are left out of the WuP statistics).
    """
    rng = np.random.default_rng(seed)
    mapped = np.array([s is not None for s in synsets])
    mapped_classes = np.flatnonzero(mapped)
    hr_ok, lr_ok = (hr_pred == labels) & valid, (lr_pred == labels) & valid
    flips = np.flatnonzero(hr_ok & ~lr_ok)
    errors = np.flatnonzero(valid & ~lr_ok & mapped[labels] & mapped[lr_pred])
    wup_err, wup_rnd = [], []
    for i in errors:
        y = int(labels[i])
        others = mapped_classes[mapped_classes != y]
        wup_err.append(wup(synsets[int(lr_pred[i])], synsets[y]))
        if len(others):
            wup_rnd.append(wup(synsets[int(rng.choice(others))], synsets[y]))
    n = int(valid.sum())
    summary = ErrorSummary(
        resolution=resolution, n_images=n,
        hr_top1=float(hr_ok.sum() / n) if n else float("nan"), lr_top1=float(lr_ok.sum() / n) if n else float("nan"),
        n_errors=len(errors), n_flips=len(flips),
        mean_wup_errors=_mean(wup_err), mean_wup_random=_mean(wup_rnd),
        close_share=_mean([w >= threshold for w in wup_err]),
        random_close_share=_mean([w >= threshold for w in wup_rnd]))
    return summary, flips


def matching_records(store: ResultsStore, model: str, data: LabeledImages, variant: dict | None = None,
                     where: Sequence[tuple[str, str]] = ()) -> tuple[dict[int | str, dict], list[str]]:
    """resolution -> record of one evaluation of ``model`` on ``data`` with HR and LR cells, and
    notes saying which evaluation it is. An evaluation matches when its data are these images
    with these labels and class names (cut to its --limit); when several match (another limit,
    templates, precision...), the one ``lr0fm report`` uses for SAR/WAR is taken (no --limit,
    most images, newest) among those ``where`` keeps. Cells whose predictions file is missing or
    changed are an error telling to rerun ``lr0fm eval``, which recomputes them."""
    variant = variant or {}
    spec = data.spec
    same_data = data_matcher(data)
    candidates = [r for r in select(label_records(store.records()), where)
                  if model in (r["model"], r.get("model_id")) and r.get("dataset_key") == spec.key
                  and variant_of(r) == variant and same_data(r["identity"])]
    evaluations: dict[str, dict] = {}
    for r in candidates:
        evaluations.setdefault(r["evaluation"], {})[r["resolution"]] = r
    usable = [g for g in evaluations.values() if HR in g and len(g) > 1]
    if not usable:
        what = f" matching --where {' '.join(f'{k}={v}' for k, v in where)}" if where else ""
        raise InputError(f"no stored HR and LR predictions of {model} on these {spec.label} images{what} in "
                         f"{store.root}; run 'lr0fm eval --model {model} --dataset {spec.key}' with the same data "
                         "first (same --out)")
    # the report's rule for SAR/WAR, applied across all matches (one model, one dataset here)
    kept, _ = primary_per_dataset([{**r, "model_label": model, "dataset": spec.key} for g in usable for r in g.values()])
    chosen = next(g for g in usable if g[HR]["evaluation"] == kept[0]["evaluation"])
    def describe(group: dict) -> str:
        hr = group[HR]
        return f"evaluation {hr['evaluation'][:12]}: {hr['model_label']} on {hr['dataset_label']}"
    notes = [describe(chosen)]
    if len(usable) > 1:
        notes.append(f"({len(usable) - 1} other evaluation(s) match: "
                     f"{'; '.join(describe(g) for g in usable if g is not chosen)}; --where evaluation=ID selects one)")
    broken = [res for res, r in chosen.items() if not store.complete(r["cell"], warn=False)]
    if broken:
        raise InputError(f"the stored predictions of {model} on {spec.label} at {', '.join(map(str, broken))} are "
                         f"missing or changed; rerun 'lr0fm eval --model {model} --dataset {spec.key}' with the same "
                         "options (same --out), which recomputes them")
    return chosen, notes


def protocol_from(p: dict) -> Protocol:
    """The Protocol a record describes (``lr0fm.records.protocol_of``): the views the model saw."""
    return Protocol.from_description(p, resolutions=(HR,))


def semantic_errors(store: ResultsStore, model: str, data: LabeledImages, threshold: float = DEFAULT_THRESHOLD,
                    seed: int = 0, gallery: int = 6, variant: dict | None = None, wordnet_root: str | None = None,
                    where: Sequence[tuple[str, str]] = ()) -> SemanticErrors:
    """Per LR resolution: how semantically close the stored LR errors of ``model`` on ``data`` are
    (one evaluation: see ``matching_records``)."""
    if not 0 <= threshold <= 1:
        raise InputError(f"--threshold {threshold} must be a Wu-Palmer similarity between 0 and 1")
    records, notes = matching_records(store, model, data, variant, where)
    wn = load_wordnet(wordnet_root)
    classnames = list(data.spec.classnames)
    synsets, mapping = class_synsets(wn, data.spec.key, classnames)
    hr = store.load_predictions(records[HR]["cell"])
    summaries, examples = [], []
    for resolution in sorted((r for r in records if r != HR), key=int):
        lr = store.load_predictions(records[resolution]["cell"])
        if not np.array_equal(lr["ids"], hr["ids"]):
            continue  # not the same images (cannot happen within one evaluation group)
        summary, flips = summarize_errors(int(resolution), hr["topk"][:, 0], lr["topk"][:, 0], hr["labels"],
                                          hr["valid"] & lr["valid"], synsets, threshold, seed)
        summaries.append(summary)
        shown = np.random.default_rng(seed).choice(flips, size=min(gallery, len(flips)), replace=False)
        for i in sorted(shown):
            y, p = int(hr["labels"][i]), int(lr["topk"][i, 0])
            w = wup(synsets[p], synsets[y]) if synsets[p] is not None and synsets[y] is not None else float("nan")
            examples.append(Example(int(resolution), str(hr["ids"][i]), classnames[y], classnames[p], w))
    return SemanticErrors(model=model, dataset=data.spec.label, threshold=threshold, mapping=mapping,
                          num_classes=len(classnames),
                          unmapped_classes=[c for c, s in zip(classnames, synsets) if s is None],
                          summaries=summaries, examples=examples, variant=dict(variant or {}),
                          protocol=protocol_of(records[HR]), evaluation=records[HR]["evaluation"], notes=notes)


def plot_gallery(examples: Sequence[Example], data: LabeledImages, protocol: Protocol, path: Path,
                 title: str = "") -> Path:
    """One row per resolution: the LR views of the examples, titled with true and LR-predicted class."""
    plt = pyplot()
    index_of = {data.sample_id(i): i for i in range(len(data))}
    resolutions = sorted({e.resolution for e in examples})
    cols = max(sum(e.resolution == r for e in examples) for r in resolutions)
    width = max(1.9 * cols, 4.0)
    fig, axes = plt.subplots(len(resolutions), cols, figsize=(width, 2.3 * len(resolutions) + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, r in enumerate(resolutions):
        for col, e in enumerate(e for e in examples if e.resolution == r):
            ax = axes[row, col]
            if e.id in index_of:
                ax.imshow(protocol.view(data.load_image(index_of[e.id]), r))
            ax.set_title(f"{r} px  WuP {_f(e.wup)}\ntrue: {e.true[:22]}\nLR: {e.predicted[:22]}", fontsize=7)
    if title:
        fig.suptitle(textwrap.fill(title, int(width * 11)), fontsize=8)  # model specs can be long paths
    return save_figure(fig, path)
