"""Catalogs as versioned data files: models, the 15 benchmark datasets (WAR weights, class
counts), the paper's reference results. Their content hashes are recorded with results."""
from __future__ import annotations

from functools import lru_cache

import yaml

from .. import resources

MODELS_FILE = "catalog/models.yaml"
BENCHMARK_FILE = "catalog/benchmark.yaml"
PAPER_RESULTS_FILE = "catalog/paper_results.csv"


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


@lru_cache(maxsize=None)  # the packaged files do not change while lr0fm runs; every record asks
def _catalog_hashes() -> tuple[tuple[str, str], ...]:
    return tuple((f, resources.file_hash(f)) for f in (MODELS_FILE, BENCHMARK_FILE, PAPER_RESULTS_FILE)
                 if resources.exists(f))


def catalog_hashes() -> dict[str, str]:
    return dict(_catalog_hashes())

