"""Records in the store's format with chosen accuracies, for report/compare/analysis tests that
need numbers no tiny model produces (published accuracies, a given ranking). The identity is a
real ``lr0fm.identity.Evaluation``, so labels, cells and evaluation ids behave as for records
``lr0fm eval`` writes; tests with real runs cover the writer itself."""
from __future__ import annotations

import numpy as np

from lr0fm.identity import Evaluation, digest
from lr0fm.metrics import CELL_METRICS
from lr0fm.protocol import Protocol
from lr0fm.records import new_record


def fake_record(model: str, dataset: str, resolution, top1: float, *, variant: dict | None = None,
                split: str = "test", limit: int | None = None, mode: str = "shortest", input_size: int = 224,
                num_classes: int | None = 10, n_images: int | None = 100, n_skipped: int = 0, amp: str = "fp32",
                dataset_key: str | None = None, samples: str | None = None, finished: float = 0.0,
                top5: float | None = None, data: dict | None = None, data_root: str | None = None,
                source: str = "native") -> dict:
    """One cell of the evaluation these arguments describe, built by ``lr0fm.records.new_record``
    (without ``predictions_sha256`` and ``numbers_digest``, which ``ResultsStore.put`` adds).
    ``data``: the identity's data part (``identity.data_part`` of a real dataset) instead of one
    made up from the other arguments. Every per-cell metric (``CELL_METRICS``) is ``top1`` unless given."""
    key = dataset_key or dataset
    n = (n_images or 0) + n_skipped
    protocol = Protocol(input_size=input_size, mean=(0.5,) * 3, std=(0.5,) * 3, mode=mode, source=source)
    data = data or {"key": key, "name": dataset, "split": split, "options": {}, "n": n,
                    "samples": samples or digest([key, split, n]), "classnames": digest(["classes", num_classes]),
                    "templates": digest(["templates"]), "num_classes": num_classes}
    ev = Evaluation(
        model={"backend": "test", "id": model, "weights": digest(["weights", model]), "kwargs": {}, "text": {}},
        data=data,
        protocol={**protocol.describe(), "decoder": "pil"}, numerics={"amp": amp, "topk": 5},
        variant=dict(variant or {}), limit=limit)
    return new_record(ev, resolution, model=model, model_id=model, backend="test", weights=None, model_extra={},
                      dataset=dataset, dataset_key=key, num_classes=num_classes, data_root=data_root,
                      metrics={**dict.fromkeys(CELL_METRICS, top1), **({} if top5 is None else {"top5": top5})},
                      n_images=n_images, skipped_ids=[f"skipped{i}" for i in range(n_skipped)],
                      run={"finished": finished, "views": "pil"}, lr0fm_version="test")


def put_fake(store, *args, predictions: dict | None = None, **kwargs) -> dict:
    """Store ``fake_record(*args, **kwargs)`` (with placeholder predictions unless given)."""
    record = fake_record(*args, **kwargs)
    n = record["n_images"] or 0
    store.put(record, predictions or {"topk": np.zeros((n, 1), np.int32), "labels": np.zeros(n, np.int32),
                                      "valid": np.ones(n, bool), "ids": np.arange(n).astype(str)})
    return store.get(record["cell"])
