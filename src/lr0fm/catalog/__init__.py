"""Catalogs as versioned data files: models, the 15 benchmark datasets (WAR weights, class
counts), the paper's reference results, the authors' preprocessing per backbone, hub copies of
the datasets. Their content hashes are recorded with results."""
from __future__ import annotations

from functools import lru_cache

import yaml

from .. import resources

MODELS_FILE = "catalog/models.yaml"
BENCHMARK_FILE = "catalog/benchmark.yaml"
PAPER_RESULTS_FILE = "catalog/paper_results.csv"
PAPER_PROTOCOL_FILE = "catalog/paper_protocol.yaml"
DATASET_SOURCES_FILE = "catalog/dataset_sources.yaml"


@lru_cache(maxsize=None)
def model_catalog() -> dict[str, dict]:
    """name -> entry of catalog/models.yaml."""
    data = yaml.safe_load(resources.read_text(MODELS_FILE))
    return {m["name"]: m for m in data["models"]}


@lru_cache(maxsize=None)
def benchmark() -> dict:
    """catalog/benchmark.yaml: the 15 datasets with WAR weights and class counts."""
    return yaml.safe_load(resources.read_text(BENCHMARK_FILE))


def war_weights() -> dict[str, float]:
    return {k: float(v["war_weight"]) for k, v in benchmark()["datasets"].items()}


def class_counts() -> dict[str, int]:
    return {k: int(v["num_classes"]) for k, v in benchmark()["datasets"].items()}


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
    """dataset key -> its hub copy (or what to download instead) and how its split compares with
    the paper's (catalog/dataset_sources.yaml)."""
    return yaml.safe_load(resources.read_text(DATASET_SOURCES_FILE))["datasets"]


@lru_cache(maxsize=None)  # the packaged files do not change while lr0fm runs; every record asks
def _catalog_hashes() -> tuple[tuple[str, str], ...]:
    return tuple((f, resources.file_hash(f)) for f in (MODELS_FILE, BENCHMARK_FILE, PAPER_RESULTS_FILE,
                                                        PAPER_PROTOCOL_FILE, DATASET_SOURCES_FILE)
                 if resources.exists(f))


def catalog_hashes() -> dict[str, str]:
    return dict(_catalog_hashes())

