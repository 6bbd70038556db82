"""Cells -> predictions -> records, in one pass over the images for all resolutions.

Each image is decoded once (in a DataLoader worker); the protocol makes its HR and LR views from
that one decode; the model encodes all of them; the cached text classifier scores them. Progress
is saved every ``checkpoint_every`` images, so a killed run resumes where it stopped and ends
with records identical to an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from . import __version__
from . import distributed as dist
from . import gpu_resize
from .catalog import catalog_hashes
from .classifier import cached_classifier
from .datasets.base import DatasetError, LabeledImages
from .errors import ViewError
from .identity import Evaluation, evaluation
from .metrics import mean_per_class_recall
from .models.base import ZeroShotModel
from .protocol import HR, Protocol, ProtocolError, parse_resolutions
from .records import FORMAT as RECORD_FORMAT
from .store import PassBusy, ResultsStore

log = logging.getLogger("lr0fm")

# Decoding errors that mean "this file is unreadable": skip, count, report.
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError)


@dataclass
class EvalConfig:
    resolutions: Sequence[int | str] = (16, 32, 64, 128, HR)
    batch_size: int = 32
    workers: int | None = None
    device: str = "cpu"
    amp: str | None = None            # None | "bf16" | "fp16" (GPU)
    limit: int | None = None          # first N images only (quick looks; recorded)
    topk: int = 5
    checkpoint_every: int = 1000      # images between saves of the resume point
    progress: bool = True
    variant: dict = field(default_factory=dict)  # e.g. {"lr_tokens": HASH} or {"sr": NAME}
    # LR views made on the device from the HR view (lr0fm.gpu_resize; recorded in the variant).
    # None: on when the device is CUDA and no custom view function is given; False: exact PIL.
    tensor_views: bool | None = None

    def __post_init__(self) -> None:
        self.resolutions = parse_resolutions(self.resolutions)


# image -> [R, S, S, 3] uint8 views (normalised later, on the model's device)
ViewFn = Callable[[Image.Image], np.ndarray]


class _ViewDataset(Dataset):
    """index -> (index, [R,3,S,S] views or None when unreadable)."""

    def __init__(self, data: LabeledImages, indices: Sequence[int], view_fn: ViewFn):
        self.data, self.indices, self.view_fn = data, list(indices), view_fn

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        try:
            image = self.data.load_image(index)
        except UNREADABLE:
            return index, None  # an unreadable file: skipped and counted
        try:
            return index, self.view_fn(image)
        except Exception as e:  # a broken view maker (e.g. an SR model) is an error, never a skip
            raise ViewError(f"making the views of {self.data.sample_id(index)!r} failed: {type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''}; fix or drop --sr / the view "
                            "function and rerun") from e


def _collate(items):
    indices = [i for i, _ in items]
    ok = [v is not None for _, v in items]
    views = [torch.from_numpy(v) for _, v in items if v is not None]
    return torch.tensor(indices), torch.tensor(ok), (torch.stack(views) if views else None)


def default_workers(device: str = "cpu") -> int:
    """Decode workers per process: the cores this rank has, minus one for the main process.

    On CPU the model needs the cores too (capped at 8); on GPU decoding is the bottleneck."""
    cores = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    cap = 8 if torch.device(device).type == "cpu" else 32
    return max(0, min(cap, cores - 1))


def identify(model: ZeroShotModel, data: LabeledImages, protocol: Protocol, cfg: EvalConfig,
             tensor_views: bool = False) -> Evaluation:
    """The identity of this evaluation (lr0fm.identity decides what is in it)."""
    return evaluation(model, data, protocol, amp=cfg.amp, topk=cfg.topk, variant=cfg.variant, limit=cfg.limit,
                      views=gpu_resize.TENSOR_VIEWS if tensor_views else "pil")


def _autocast(device: torch.device, amp: str | None):
    if not amp:
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def predict(model: ZeroShotModel, data: LabeledImages, indices: Sequence[int], classifier: torch.Tensor,
            view_fn: ViewFn, protocol: Protocol, num_views: int, cfg: EvalConfig, on_batch: Callable | None = None,
            progress_total: int | None = None, progress_done: int = 0, device_views: Callable | None = None):
    """Top-k class indices for every (view, image) of ``indices``: ([R, n, k] int32, [n] valid).

    ``device_views`` (optional) turns the loader's uint8 batch into the [b, R, S, S, 3] views on
    the device (the tensor-views path: workers send one HR view per image).
    """
    n, k = len(indices), min(cfg.topk, classifier.shape[1])
    topk = np.full((num_views, n, k), -1, dtype=np.int32)
    valid = np.zeros(n, dtype=bool)
    if n == 0:
        return topk, valid
    workers = default_workers(cfg.device) if cfg.workers is None else cfg.workers
    device = torch.device(cfg.device)
    cuda = device.type == "cuda"
    if cuda:  # conv stems run faster channels-last; a no-op for the math
        model.to(memory_format=torch.channels_last)
    loader = DataLoader(_ViewDataset(data, indices, view_fn), batch_size=cfg.batch_size, shuffle=False,
                        num_workers=workers, collate_fn=_collate, pin_memory=cuda,
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    weights = classifier.to(device)
    position = {idx: j for j, idx in enumerate(indices)}
    bar = _progress(cfg, progress_total or n, progress_done, data.spec.key)
    for batch_indices, ok, views in _batches(loader):
        if views is not None:
            b = views.shape[0]
            views = views.to(device, non_blocking=True)
            if device_views is not None:
                views = device_views(views[:, 0])
            flat = protocol.normalize_batch(views.flatten(0, 1))  # [b*R,3,S,S]
            if cuda:
                flat = flat.contiguous(memory_format=torch.channels_last)
            with _autocast(device, cfg.amp):
                feats = torch.cat([model.encode_image(flat[i:i + cfg.batch_size])
                                   for i in range(0, flat.shape[0], cfg.batch_size)])
            pred = (feats.float() @ weights).topk(k, dim=-1).indices.view(b, num_views, k)
            pred = pred.permute(1, 0, 2).cpu().numpy().astype(np.int32)
            rows = [position[int(i)] for i, o in zip(batch_indices, ok) if o]
            topk[:, rows] = pred
            valid[rows] = True
        if bar is not None:
            bar.update(len(batch_indices))
        if on_batch is not None:
            on_batch([position[int(i)] for i in batch_indices], topk, valid)
    if bar is not None:
        bar.close()
    return topk, valid


def _batches(loader):
    """The loader's batches; a ViewError raised in a worker comes back as its own one line."""
    try:
        yield from loader
    except ViewError as e:
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        raise ViewError(lines[-1].split("ViewError: ", 1)[-1] if lines else "making the views failed") from None


def _progress(cfg: EvalConfig, total: int, initial: int, desc: str):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True,
                mininterval=1.0)


def plan(model: ZeroShotModel, data: LabeledImages, cfg: EvalConfig, view_fn: ViewFn | None = None,
         protocol: Protocol | None = None):
    """What ``evaluate`` will compute: (effective cfg, data after --limit, protocol, identity,
    {resolution: cell id}, tensor_views). No image is decoded (``lr0fm sweep --dry-run`` uses it);
    file contents are hashed once and remembered (lr0fm.filedigest)."""
    protocol = protocol or model.protocol(cfg.resolutions)
    tensor_views = (cfg.tensor_views if cfg.tensor_views is not None
                    else torch.device(cfg.device).type == "cuda" and view_fn is None and gpu_resize.supports(protocol))
    if tensor_views and (view_fn is not None or not gpu_resize.supports(protocol)):
        raise ProtocolError("tensor views need the protocol's own views with bicubic or bilinear resizes; "
                            "use tensor_views=False for this run")
    if cfg.limit is not None:
        data = data.subset(range(min(cfg.limit, len(data))))
    ev = identify(model, data, protocol, cfg, tensor_views)
    cells = {r: ev.cell(r) for r in cfg.resolutions}
    return cfg, data, protocol, ev, cells, tensor_views


def evaluate(model: ZeroShotModel, data: LabeledImages, cfg: EvalConfig, store: ResultsStore,
             view_fn: ViewFn | None = None, protocol: Protocol | None = None, wait: bool = True) -> list[dict]:
    """Evaluate every requested resolution of one (model, dataset); return their records.

    Finished cells are skipped; the pending ones are computed in one pass over the images. One
    process at a time runs a pass of an evaluation (a lock in the store): with ``wait=False`` a
    pass another process holds raises ``PassBusy`` (the caller takes other work first).
    Under torchrun (``lr0fm.distributed``) the images are split over the ranks unless this rank
    was given the whole group; the records are the same as a single-process run's.
    """
    cfg, data, protocol, ev, cells, tensor_views = plan(model, data, cfg, view_fn, protocol)
    pending = [r for r in cfg.resolutions if not store.complete(cells[r])]
    if dist.shard_images():
        pending = dist.broadcast(pending)  # every rank takes part in the same passes
        if pending:
            _evaluate_pending(model, data, cfg, store, protocol.with_resolutions(pending), pending, ev, cells,
                              view_fn, tensor_views)
    elif pending:
        with store.pass_lock(ev.id, wait=wait):
            pending = [r for r in cfg.resolutions if not store.complete(cells[r])]  # another process may have run it
            if pending:
                _evaluate_pending(model, data, cfg, store, protocol.with_resolutions(pending), pending, ev, cells,
                                  view_fn, tensor_views)
    return [store.get(cells[r]) for r in cfg.resolutions]


def _evaluate_pending(model, data, cfg, store, protocol, pending, ev: Evaluation, cells, view_fn,
                      tensor_views=False) -> None:
    started = time.time()
    sharded = dist.shard_images()
    with dist.main_first() if sharded else contextlib.nullcontext():  # the classifier is built once
        classifier, _ = cached_classifier(model, data.spec.classnames, data.spec.templates, store.classifier_cache,
                                       key=ev.classifier_key)
    # a custom view function (e.g. SR) must make only the pending resolutions' views
    view_fn = view_fn.with_resolutions(pending) if hasattr(view_fn, "with_resolutions") else view_fn
    device_views = None
    if tensor_views:  # workers send the HR view; the device makes every view from it
        view_fn = gpu_resize.HRCarrier(protocol)
        device_views = lambda hr: gpu_resize.make_views(protocol, hr)  # noqa: E731
    view_fn = view_fn or protocol.views_uint8
    n, R = len(data), len(pending)
    # The resume point is keyed by the evaluation and the pending set, so passes of one evaluation
    # over other resolution sets keep theirs. Resume points holding a finished cell are stale.
    group = ev.resume_key(pending)
    if dist.is_main() or not sharded:
        store.drop_stale_partials(ev.id, [cells[r] for r in cfg.resolutions if store.complete(cells[r])])
    # this process's images: all of them, or its block under torchrun -- with its own resume point
    lo, hi = dist.block(n) if sharded else (0, n)
    partial_key = f"{group}-rank{dist.rank()}of{dist.world_size()}" if sharded else group
    m = hi - lo
    state = store.load_partial(partial_key)
    k = min(cfg.topk, classifier.shape[1])
    if state is not None and state["topk"].shape == (R, m, k):
        topk, valid, done = state["topk"], state["valid"], int(state["done"])
        log.info("resuming %s at image %d of %d", data.spec.label, lo + done, n)
    else:
        topk, valid, done = np.full((R, m, k), -1, np.int32), np.zeros(m, bool), 0
    pending_cells = np.asarray([cells[r] for r in pending])

    last_save = [done]

    def checkpoint(rows, part_topk, part_valid):
        # rows are positions within the remaining range; copy into the full arrays
        nonlocal done
        idx = np.asarray(rows) + offset
        topk[:, idx] = part_topk[:, rows]
        valid[idx] = part_valid[rows]
        done = int(idx.max()) + 1
        if done - last_save[0] >= cfg.checkpoint_every:
            store.save_partial(partial_key, topk=topk, valid=valid, done=np.int64(done), cells=pending_cells)
            last_save[0] = done

    offset = done  # predict's positions start at this block's first unfinished image
    run_cfg = cfg if dist.is_main() or not sharded else replace(cfg, progress=False)
    predict(model, data, list(range(lo + done, hi)), classifier, view_fn, protocol, R, run_cfg, on_batch=checkpoint,
            progress_total=m, progress_done=done, device_views=device_views)
    if sharded:  # rank order == block order: concatenating the blocks gives all n images
        parts = dist.all_gather((topk, valid))
        topk, valid = np.concatenate([p[0] for p in parts], axis=1), np.concatenate([p[1] for p in parts])
    if not valid.any():  # nothing to score: an error, not a record that would stay "done"
        store.drop_partial(partial_key)
        first = data.sample_id(0) if n else "-"
        raise DatasetError(f"none of the {n} images of {data.spec.label} could be read (first: {first!r}); "
                           "check the files (formats, permissions) and rerun")
    if dist.is_main() or not sharded:
        labels = np.asarray([data.label(i) for i in range(n)], dtype=np.int32)
        ids = np.asarray([data.sample_id(i) for i in range(n)])
        run = {"seconds": round(time.time() - started, 2), "resolutions_in_pass": list(pending),
               "finished": round(time.time(), 3), "views": gpu_resize.TENSOR_VIEWS if tensor_views else "pil",
               "device": torch.device(cfg.device).type, "batch_size": cfg.batch_size}
        for j, r in enumerate(pending):
            record = make_record(model, data, protocol, r, cfg, topk[j], valid, labels, ids, ev, cells[r])
            record["run"] = run
            store.put(record, {"topk": topk[j], "labels": labels, "valid": valid, "ids": ids})
    if sharded:
        dist.barrier()  # the records are on disk before any rank reads them
    store.drop_partial(partial_key)


def make_record(model, data, protocol, resolution, cfg, topk, valid, labels, ids, ev: Evaluation, cell) -> dict:
    n_valid = int(valid.sum())
    correct1 = topk[valid, 0] == labels[valid]
    correct5 = (topk[valid] == labels[valid, None]).any(axis=1)
    skipped = [str(i) for i in ids[~valid]]
    spec = data.spec
    return {
        "format": RECORD_FORMAT, "cell": cell, "evaluation": ev.id, "identity": ev.describe(),
        "model": model.info.extra.get("catalog_name", model.info.model_id),
        "model_id": model.info.model_id, "backend": model.info.backend,
        "weights": model.info.weights, "weights_hash": ev.model["weights"],
        "model_extra": {k: v for k, v in model.info.extra.items() if not k.startswith("_")},
        "dataset": spec.label, "dataset_key": spec.key, "split": spec.split, "num_classes": spec.num_classes,
        "data_root": data.root,  # where it was read from; not part of the identity
        "resolution": resolution, "protocol": protocol.describe(resolution),
        "variant": cfg.variant, "limit": cfg.limit, "amp": ev.numerics["amp"],
        "top1": float(correct1.mean()), "top5": float(correct5.mean()),
        "mean_per_class_recall": mean_per_class_recall(labels[valid], topk[valid, 0], spec.num_classes),
        "n_images": n_valid, "n_skipped": len(skipped), "skipped_ids": skipped[:50],
        "classifier_key": ev.classifier_key, "catalog_hashes": catalog_hashes(), "lr0fm_version": __version__,
    }
