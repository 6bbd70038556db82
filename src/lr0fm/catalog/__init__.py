"""Catalogs as versioned data files: models, the 15 benchmark datasets (one card each: splits,
where to get them, WAR weight, class count, hub copy, class-name variants), the paper's reference
results, the authors' preprocessing per backbone. Their content hashes are recorded with results."""
from __future__ import annotations

from functools import lru_cache

import yaml

from .. import resources

MODELS_FILE = "catalog/models.yaml"
PAPER_RESULTS_FILE = "catalog/paper_results.csv"
PAPER_PROTOCOL_FILE = "catalog/paper_protocol.yaml"
DATASET_CARDS = "catalog/datasets"  # one <key>.yaml per benchmark dataset


@lru_cache(maxsize=None)
def model_catalog() -> dict[str, dict]:
    """name -> entry of catalog/models.yaml."""
    data = yaml.safe_load(resources.read_text(MODELS_FILE))
    return {m["name"]: m for m in data["models"]}


def paper_families() -> dict[str, str]:
    """lower-cased family -> the family as the model catalog spells it (``--protocol paper:FAMILY``)."""
    return {e["family"].lower(): e["family"] for e in model_catalog().values() if e.get("family")}


@lru_cache(maxsize=None)
def dataset_cards() -> dict[str, dict]:
    """key -> card of each benchmark dataset (catalog/datasets/<key>.yaml), in the order of the
    paper's tables (the cards' ``order``)."""
    cards = [yaml.safe_load(f.read_text(encoding="utf-8"))
             for f in resources.folder_files(DATASET_CARDS, "*.yaml")]
    return {c["key"]: c for c in sorted(cards, key=lambda c: c["order"])}


def war_weights() -> dict[str, float]:
    """The published WAR weight of each benchmark dataset (other datasets weigh 1.0)."""
    return {k: float(c["war_weight"]) for k, c in dataset_cards().items()}


def class_counts() -> dict[str, int]:
    """C_d of each benchmark dataset, for the improved relative robustness Gamma (chance = 1 / C_d)."""
    return {k: int(c["num_classes"]) for k, c in dataset_cards().items()}


@lru_cache(maxsize=None)
def paper_protocol() -> dict[str, dict]:
    """name -> how the paper's authors preprocessed that backbone (catalog/paper_protocol.yaml):
    its protocol block with the backbone's input size, extra quirks and extra source merged in."""
    data = yaml.safe_load(resources.read_text(PAPER_PROTOCOL_FILE))
    out = {}
    for name, entry in data["backbones"].items():
        merged = {**data["protocols"][entry["protocol"]], **entry}
        merged["paper_quirks"] = [*merged["paper_quirks"], *merged.pop("extra_quirks", [])]
        if "extra_source" in merged:
            merged["paper_protocol_source"] += "; " + merged.pop("extra_source")
        out[name] = merged
    return out


@lru_cache(maxsize=None)
def dataset_sources() -> dict[str, dict]:
    """dataset key -> its hub copy (the card's ``hub``: format, repo, split, whether it holds the
    paper's images...) with the split the paper evaluated: ``paper_split``, ``paper_images``,
    ``paper_source``."""
    out = {}
    for key, card in dataset_cards().items():
        paper = card["splits"][card["default_split"]]
        out[key] = {**card["hub"], "paper_split": card["default_split"], "paper_images": paper["images"],
                    "paper_source": paper.get("source")}
    return out


@lru_cache(maxsize=None)  # the packaged files do not change while lr0fm runs; every record asks
def _catalog_hashes() -> tuple[tuple[str, str], ...]:
    files = tuple((f, resources.file_hash(f)) for f in (MODELS_FILE, PAPER_RESULTS_FILE, PAPER_PROTOCOL_FILE)
                  if resources.exists(f))
    return (*files, (DATASET_CARDS, resources.folder_hash(DATASET_CARDS, "*.yaml")))


def catalog_hashes() -> dict[str, str]:
    return dict(_catalog_hashes())

