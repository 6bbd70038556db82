"""Where an evaluation differs from the paper's (protocol, --limit, split, image count, hub copy,
class count, own data, interventions): what ``lr0fm compare`` flags beside a rank, so a rank is
read for what it is."""
from __future__ import annotations

from ..catalog import class_counts, model_catalog, paper_protocol
from ..records import limit_of, protocol_of, split_of, variant_of
from .paper import paper_datasets, paper_split


def join_names(items) -> str:
    return ", ".join(str(i) for i in items)


class Differences:
    """Collects protocol differences, each once, keeping the order found."""

    def __init__(self):
        self.items: list[dict] = []

    def add(self, kind: str, message: str, **data) -> None:
        if all(d["message"] != message for d in self.items):
            self.items.append({"kind": kind, "message": message, **data})


def paper_differences(by_label: dict[str, list[dict]], diffs: Differences) -> None:
    """Per-record settings that differ from the paper's (independent of the ranking itself)."""
    catalog, ncls, paper_ds = model_catalog(), class_counts(), set(paper_datasets())
    for label, recs in by_label.items():
        recs = [r for r in recs if r["dataset"] in paper_ds]
        entry = catalog.get(recs[0]["model"]) if recs else None
        paper = paper_protocol().get(entry["name"]) if entry else None
        if paper:  # what the authors ran for this backbone (catalog/paper_protocol.yaml)
            used = sorted({protocol_of(r).get("source", "native") for r in recs})
            theirs = (paper["paper_resize_mode"], int(paper["paper_input_size"]), paper["paper_interpolation"])
            ours = sorted({(p.get("mode"), p.get("input_size"), p.get("interpolation"))
                           for p in (protocol_of(r) for r in recs)})
            if ours and ours != [theirs]:
                diffs.add("protocol", f"{label}: protocol {', '.join(used)} ({join_names([' '.join(map(str, o)) for o in ours])});"
                          f" the paper's for {entry['name']} is {' '.join(map(str, theirs))} "
                          f"({paper['paper_protocol_source'].split(';')[0]}); rerun with --protocol paper to match",
                          model=label)
        limited = sorted({(limit_of(r), r["dataset"]) for r in recs if limit_of(r)})
        for limit in sorted({l for l, _ in limited}):
            ds = [d for l, d in limited if l == limit]
            diffs.add("limit", f"{label}: only the first {limit} images of {join_names(ds)} (--limit); the paper used all",
                      model=label, datasets=ds)
        for d in sorted({r["dataset"] for r in recs}):
            ds_recs = [r for r in recs if r["dataset"] == d]
            split, size = paper_split(d) or (None, None)
            bad = sorted({str(split_of(r)) for r in ds_recs} - {split})
            if split and bad:
                diffs.add("split", f"{label}: {d} split {join_names(bad)}; the paper used {split}", model=label, dataset=d)
            counts = sorted({r["n_images"] + r.get("n_skipped", 0) for r in ds_recs
                             if r.get("n_images") is not None and not limit_of(r) and split_of(r) == split})
            if size and counts and counts != [size]:
                diffs.add("n_images", f"{label}: {d} {split} split with {join_names(counts)} images; the paper's has {size}",
                          model=label, dataset=d)
            # read from a hub copy (download=True): flagged unless the catalog says it is the paper's split
            copies = sorted({(o.get("source"), o.get("hub_split"), str(o.get("matches_paper"))) for o in
                             (((r.get("identity") or {}).get("data") or {}).get("options") or {} for r in ds_recs)
                             if "matches_paper" in o and o["matches_paper"] is not True})
            for source, hub_split, matches in copies:
                what = "other images than" if matches == "False" else "not established to be"
                diffs.add("hub_copy", f"{label}: {d} read from the hub copy {source} ({hub_split} split): {what} the "
                          f"paper's {split or 'split'}{f' ({size} images)' if size else ''}", model=label, dataset=d)
            classes = sorted({r.get("num_classes") for r in ds_recs} - {None})
            if classes and classes != [ncls.get(d)]:
                diffs.add("classes", f"{label}: {d} with {join_names(classes)} classes; the paper's has {ncls.get(d)}",
                          model=label, dataset=d)
        own = sorted({(r["dataset"], r["dataset_key"]) for r in recs if r.get("dataset_key") not in (None, r["dataset"])})
        if own:
            diffs.add("data_source", f"{label}: {join_names(d for d, _ in own)} read as your own data "
                      f"({join_names(sorted({k for _, k in own}))}), not with lr0fm's loader of the paper's dataset",
                      model=label, datasets=[d for d, _ in own])
        variant = variant_of(recs[0]) if recs else None
        if variant:
            diffs.add("variant", f"{label}: intervention {join_names(sorted(variant))} on {recs[0]['model']}; the paper's "
                      "table holds base models only", model=label)
