"""Cells -> predictions -> records, in one pass over the images for all resolutions and models.

Each image is decoded once (in a DataLoader worker, or its JPEG bytes on the device); the
protocol makes its HR and LR views from that one decode, once per view set (the models whose views
are the same pixels (lr0fm.tensor_views on the device, bit for bit the PIL chain, or PIL in the
workers); every model encodes its views; its cached text classifier scores them. Progress is
saved every ``checkpoint_every`` images per model, so a killed run resumes where it stopped and
ends with records identical to an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from types import SimpleNamespace
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import distributed as dist
from .. import tensor_views
from ..classifier import cached_classifier
from ..datasets.base import DatasetError, LabeledImages
from ..identity import Evaluation, same_views_key
from ..models.base import ModelInfo, ZeroShotModel
from ..options import EvalConfig
from ..protocol import Protocol
from ..records import make_record, res_key
from ..store import PassBusy, ResultsStore
from .loading import (UNREADABLE, EndWithParent, ViewFn, _batches, _collate, _decode_on_device, _ImageDataset, _Work,
                      default_workers, worker_died)
from .plan import plan, views_and_decoder
from .stages import StageClock, make_trace_folder, profiler_trace

log = logging.getLogger("lr0fm")


# -- what a worker sends per image -------------------------------------------------------------


def _autocast(device: torch.device, amp: str | None):
    if not amp:
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device_type=device.type, dtype=dtype)


# -- planning ----------------------------------------------------------------------------------


# -- one model's share of a pass ---------------------------------------------------------------
@dataclass
class Job:
    """A model to evaluate on the data of a pass (``view_fn``: custom views, e.g. SR)."""

    model: ZeroShotModel
    cfg: EvalConfig
    view_fn: ViewFn | None = None
    protocol: Protocol | None = None


@dataclass(frozen=True)
class ImageShard:
    """Block ``index`` of ``count`` contiguous blocks of a pass's images (lr0fm.distributed.block)."""

    index: int
    count: int


@dataclass
class ImageShardResult:
    """One model's predictions on one block of a pass, and what its records are made from."""

    shard: ImageShard
    lo: int
    hi: int
    model_info: object            # the model's ModelInfo: all lr0fm.records.make_record reads of a model
    protocol: Protocol
    cfg: EvalConfig
    ev: Evaluation
    cells: dict                   # resolution -> cell id
    pending: list                 # the resolutions of this pass, in the order of topk's first axis
    partial_key: str
    topk: np.ndarray              # [R, hi - lo, k]
    valid: np.ndarray             # [hi - lo]
    labels: np.ndarray
    ids: np.ndarray
    run: dict

    ARRAYS = ("topk", "valid", "labels", "ids")

    def plain(self) -> dict:
        """Every field but the arrays as JSON data (``from_plain`` is its inverse): a shard written
        to a shared folder is read back without unpickling anything."""
        return {"shard": [self.shard.index, self.shard.count], "lo": self.lo, "hi": self.hi,
                "model_info": self.model_info.as_dict(), "protocol": self.protocol.describe(),
                "resolutions": list(self.protocol.resolutions), "cfg": asdict(self.cfg), "ev": asdict(self.ev),
                "cells": list(self.cells.items()), "pending": list(self.pending), "partial_key": self.partial_key,
                "run": self.run}

    @classmethod
    def from_plain(cls, d: dict, arrays: dict) -> "ImageShardResult":
        return cls(ImageShard(*d["shard"]), d["lo"], d["hi"], ModelInfo(**d["model_info"]),
                   Protocol.from_description(d["protocol"], d["resolutions"]), EvalConfig(**d["cfg"]),
                   Evaluation(**d["ev"]), dict(d["cells"]), d["pending"], d["partial_key"],
                   *(arrays[name] for name in cls.ARRAYS), d["run"])


@dataclass
class ViewSet:
    """The views one or more models of a pass share: a protocol's pixels at the union of their
    pending resolutions (or a custom view function's, e.g. SR, for one model), made on the device
    or in the workers."""

    protocol: Protocol
    res: list                     # resolutions, in res_key order
    fn: ViewFn | None             # a custom view function; None: the protocol's views
    device: bool                  # made on the device (lr0fm.tensor_views) rather than in the workers
    shares: list                  # the models' shares that score these views


@dataclass
class _Share:
    job: Job
    protocol: Protocol            # with this pass's pending resolutions
    ev: Evaluation
    cells: dict
    pending: list
    view_set: int = -1            # index of its view set
    rows: list = field(default_factory=list)  # positions of its resolutions in its view set's views
    classifier: torch.Tensor | None = None
    topk: np.ndarray | None = None
    valid: np.ndarray | None = None
    done: int = 0
    saved: int = 0
    partial_key: str = ""
    weights: torch.Tensor | None = None  # the classifier on the device
    resumed: int = 0              # images its resume point had already scored when this pass started
    index: int = 0                # its position among the pass's models (its stage times)
    unsaved: list = field(default_factory=list)  # (rows, top-k on the device) not yet in ``topk``
    row_index: torch.Tensor | None = None  # ``rows`` on the device


def evaluate(model: ZeroShotModel, data: LabeledImages, cfg: EvalConfig, store: ResultsStore,
             view_fn: ViewFn | None = None, protocol: Protocol | None = None, wait: bool = True) -> list[dict]:
    """Evaluate every requested resolution of one (model, dataset); return their records.

    Finished cells are skipped; the pending ones are computed in one pass over the images. One
    process at a time runs a pass of an evaluation (a lock in the store): with ``wait=False`` a
    pass another process holds raises ``PassBusy`` (the caller takes other work first).
    Under torchrun (``lr0fm.distributed``) the images are split over the ranks unless this rank
    was given the whole group; the records are the same as a single-process run's.
    """
    (records,) = evaluate_many([Job(model, cfg, view_fn, protocol)], data, store, wait=wait)
    if records is None:
        raise PassBusy(model.info.model_id)
    return records


def evaluate_many(jobs: Sequence[Job], data: LabeledImages, store: ResultsStore,
                  wait: bool = True, shard: ImageShard | None = None,
                  split_over_ranks: bool = False) -> list[list[dict] | None]:
    """Evaluate several models on one dataset in one pass: each image is decoded once and its
    views are made once per view set (models with the same view pixels). Records are identical to
    separate ``evaluate`` runs. Jobs must share the run options (device, batch size, workers,
    limit, views, decoder); a job whose pass another process holds is None when ``wait=False``.

    ``shard``: run only that block of the images and hand each model's predictions of it to
    ``store.put_shard`` instead of writing records (lr0fm.engines merges the shards of a pass
    into the records of the whole pass). ``split_over_ranks``: under torchrun every rank runs its
    block of the images (lr0fm.distributed.block) and rank 0 writes the records of all blocks."""
    first = jobs[0].cfg
    for job in jobs[1:]:
        for name in ("device", "batch_size", "workers", "limit", "views", "decoder", "checkpoint_every"):
            if getattr(job.cfg, name) != getattr(first, name):
                raise ValueError(f"evaluate_many: jobs differ in {name}; run them separately")
    if first.profile_trace:
        make_trace_folder(first.profile_trace)
    sharded = split_over_ranks and dist.active()
    plans = [plan(j.model, data, j.cfg, j.view_fn, j.protocol) for j in jobs]
    limited = plans[0].data
    views_on_device = any(p.views == "device" for p in plans)
    device_decode = all(p.decoder == "device" for p in plans)
    out: list[list[dict] | None] = [None] * len(jobs)
    busy: set[int] = set()
    with contextlib.ExitStack() as locks:
        shares = []
        for i, (job, p) in enumerate(zip(jobs, plans)):
            cfg, protocol, ev, cells = p.cfg, p.protocol, p.evaluation, p.cells
            pending = [r for r in cfg.resolutions if not store.complete(cells[r])]
            if sharded:
                pending = dist.broadcast(pending)  # every rank takes part in the same passes
            elif pending:
                try:
                    locks.enter_context(store.pass_lock(ev.id, wait=wait))
                except PassBusy:
                    busy.add(i)
                    continue
                pending = [r for r in cfg.resolutions if not store.complete(cells[r])]  # another process ran it
            if pending:
                shares.append(_Share(job, protocol.with_resolutions(pending), ev, cells, pending))
        if shares:
            _run_pass(shares, limited, store, first, views_on_device, device_decode, shard, sharded)
    for i, p in enumerate(plans):
        if i not in busy:
            out[i] = [store.get(p.cells[r]) for r in p.cfg.resolutions]
    return out


def _run_pass(shares: list[_Share], data: LabeledImages, store: ResultsStore, cfg: EvalConfig,
              views_on_device: bool, device_decode: bool, shard: ImageShard | None = None,
              sharded: bool = False) -> None:
    started = time.time()
    log.info("evaluating %s (%d images) with %d model(s)", data.spec.label, len(data), len(shares))
    n = len(data)
    lo, hi = dist.block(n) if sharded else dist.block(n, shard.index, shard.count) if shard else (0, n)
    m = hi - lo
    # view sets: shares with the same pixels share views; a custom view function is its own set
    view_sets: list[ViewSet] = []
    by_key: dict[str, dict] = {}
    for share in shares:
        views, _ = views_and_decoder(share.job.cfg, share.protocol, share.job.view_fn)
        if share.job.view_fn is not None:
            fn = share.job.view_fn
            fn = fn.with_resolutions(share.pending) if hasattr(fn, "with_resolutions") else fn
            view_sets.append(ViewSet(share.protocol, list(share.pending), fn, False, [share]))
            continue
        key = same_views_key(share.protocol) + views
        if key not in by_key:
            by_key[key] = ViewSet(share.protocol, [], None, views == "device", [])
            view_sets.append(by_key[key])
        by_key[key].shares.append(share)
        by_key[key].res = sorted(set(by_key[key].res) | set(share.pending), key=res_key)
    for g, vset in enumerate(view_sets):
        for share in vset.shares:
            share.view_set, share.rows = g, [vset.res.index(r) for r in share.pending]
    pil_sets = [(g, vs.fn or vs.protocol.views_uint8, None if vs.fn else vs.res, vs.res)
                  for g, vs in enumerate(view_sets) if not vs.device]
    rgb_last = [(g, vs.protocol, vs.res) for g, vs in enumerate(view_sets)
                if vs.device and vs.protocol.rgb_last]
    work = _Work(pil_sets, views_on_device, device_decode, rgb_last)

    check_readable(data)
    with dist.main_first() if sharded else contextlib.nullcontext():  # each classifier is built once
        for share in shares:
            share.classifier, _ = cached_classifier(share.job.model, data.spec.classnames, data.spec.templates,
                                                    store.classifier_cache, key=share.ev.classifier_key)
    for i, share in enumerate(shares):
        share.index = i
        cells = share.job.cfg.resolutions
        if dist.is_main() or not sharded:  # resume points holding a finished cell are stale
            store.drop_stale_partials(share.ev.id, [share.cells[r] for r in cells if store.complete(share.cells[r])])
        group_key = share.ev.resume_key(share.pending)
        share.partial_key = (f"{group_key}-rank{dist.rank()}of{dist.world_size()}" if sharded else
                             f"{group_key}-shard{shard.index}of{shard.count}" if shard and shard.count > 1 else group_key)
        k, R = min(share.job.cfg.topk, share.classifier.shape[1]), len(share.pending)
        state = store.load_partial(share.partial_key)
        if state is not None and state["topk"].shape == (R, m, k):
            share.topk, share.valid, share.done = state["topk"], state["valid"], int(state["done"])
            share.resumed = share.done
            log.info("resuming %s at image %d of %d", data.spec.label, lo + share.done, n)
        else:
            share.topk, share.valid, share.done = np.full((R, m, k), -1, np.int32), np.zeros(m, bool), 0
        share.saved = share.done

    clock = _loop(shares, view_sets, data, range(lo + min(s.done for s in shares), hi), lo, m, work, cfg, store,
                  sharded)

    for share in shares:
        if sharded:  # rank order == block order: concatenating the blocks gives all n images
            parts = dist.all_gather((share.topk, share.valid))
            share.topk = np.concatenate([p[0] for p in parts], axis=1)
            share.valid = np.concatenate([p[1] for p in parts])
    whole = shard is None
    lo, hi = (0, n) if whole else (lo, hi)
    labels = np.asarray([data.label(i) for i in range(lo, hi)], dtype=np.int32)
    ids = np.asarray([data.sample_id(i) for i in range(lo, hi)])
    results = [ImageShardResult(
        shard or ImageShard(0, 1), lo, hi, share.job.model.info, share.protocol, share.job.cfg, share.ev,
        dict(share.cells), list(share.pending), share.partial_key, share.topk, share.valid, labels, ids,
        {"seconds": round(time.time() - started, 2), "views": _views_of(view_sets[share.view_set]),
         "resumed_images": share.resumed, "models_in_pass": len(shares), "device": torch.device(cfg.device).type,
         "batch_size": cfg.batch_size, "stages": clock.seconds(share.index)}) for share in shares]
    if not whole:  # the caller (lr0fm.engines) merges the blocks of all shards into the records
        for result in results:
            store.put_shard(result)
        return
    unreadable = None
    for result in results:
        if dist.is_main() or not sharded:
            try:
                write_records(store, data, [result], {"finished": round(time.time(), 3)})
            except DatasetError as e:  # nothing to score: an error, not a record that would stay "done"
                unreadable = e
    if sharded:
        dist.barrier()  # the records are on disk before any rank reads them
    for share in shares:
        store.drop_partial(share.partial_key)
    if unreadable is not None:
        raise unreadable


def write_records(store: ResultsStore, data: LabeledImages, shards: Sequence[ImageShardResult], run: dict) -> list[str]:
    """One model's predictions, as image blocks of one pass (any order), -> the records and
    predictions of its cells; the cells written. The one place records of a pass are written:
    in one process, under torchrun and by every engine (lr0fm.engines.units.commit). A cell that is
    already complete is left as it is (an attempt that ends late changes no finished record), also
    when another process writes it at the same moment (``ResultsStore.commit_lock``)."""
    shards = sorted(shards, key=lambda s: s.shard.index)
    topk = np.concatenate([s.topk for s in shards], axis=1)
    valid = np.concatenate([s.valid for s in shards])
    labels = np.concatenate([s.labels for s in shards])
    ids = np.concatenate([s.ids for s in shards])
    first = shards[0]
    if not valid.any():
        for s in shards:
            store.drop_partial(s.partial_key)
        raise DatasetError(f"none of the {len(ids)} images of {data.spec.label} could be read (first: "
                           f"{ids[0] if len(ids) else '-'!r}); check the files (formats, permissions) and rerun")
    model = SimpleNamespace(info=first.model_info)  # all make_record reads of a model
    run = {**first.run, **run, "seconds": round(sum(s.run["seconds"] for s in shards), 2),
           "resolutions_in_pass": list(first.pending), "resumed_images": sum(s.run["resumed_images"] for s in shards)}
    stages = _summed([s.run.get("stages") or {} for s in shards])
    if stages:
        run["stages"] = stages
    if len(shards) > 1:
        run["shards"] = len(shards)
    written = []
    with store.commit_lock(first.ev.id):  # another process finishing the same cells writes them once
        for j, r in enumerate(first.pending):
            cell = first.cells[r]
            if store.complete(cell, warn=False):
                continue
            record = make_record(model, data, r, topk[j], valid, labels, ids, first.ev, run=run)
            store.put(record, {"topk": topk[j], "labels": labels, "valid": valid, "ids": ids})
            written.append(cell)
    for s in shards:
        store.drop_partial(s.partial_key)
    store.drop_stale_partials(first.ev.id, [first.cells[r] for r in first.pending])
    return written


def _summed(stages: list[dict]) -> dict:
    """The stage times of a pass's shards, added up (each shard ran its own batch loop)."""
    out: dict = {}
    for part in stages:
        for name, seconds in part.items():
            out[name] = round(out.get(name, 0.0) + seconds, 4)
    return out


def check_readable(data: LabeledImages) -> None:
    """Some image can be read, before any classifier is built and cached: data with no readable
    image is one error, not a pass that can only fail. Stops at the first image whose header
    Pillow opens (a file path or the sample's bytes: no decode, so the pass still decodes each
    image once) or, where that fails, that its loader decodes (a loader of other files)."""
    from PIL import Image

    for i in range(len(data)):
        ref = data.samples[i][0]
        try:
            source = ref if isinstance(ref, (str, os.PathLike)) else io.BytesIO(data.encoded(i) or b"")
            with Image.open(source):
                return
        except UNREADABLE:
            pass
        try:
            data.load_image(i)
            return
        except UNREADABLE:
            continue
    raise _none_readable(data)


def _none_readable(data: LabeledImages) -> DatasetError:
    return DatasetError(f"none of the {len(data)} images of {data.spec.label} could be read (first: "
                        f"{data.sample_id(0) if len(data) else '-'!r}); check the files (formats, permissions) and rerun")


def _views_of(vset: "ViewSet") -> str:
    """Where a view set's views were made, as records say it."""
    return "pil" if vset.fn or not vset.device else "device"


@torch.no_grad()
def _loop(shares, view_sets, data, indices, lo, m, work, cfg, store, sharded) -> StageClock:
    """The pass: batches of decoded images -> each view set's views -> each model's top-k; the
    stage times (lr0fm.evaluation.stages). A prefetch thread prepares batch k+1 (reads it from the
    DataLoader, decodes it and makes its views, on a side CUDA stream on the GPU) while this thread
    scores batch k; top-k stays on the device until a resume point or the end (one copy each), so
    the device is never waited for per batch."""
    device = torch.device(cfg.device)
    clock = StageClock(device, events=cfg.profile, trace=bool(cfg.profile_trace))
    indices = list(indices)
    if not indices:
        return clock
    cuda = device.type == "cuda"
    workers = default_workers(cfg.device) if cfg.workers is None else cfg.workers
    loader = DataLoader(_ImageDataset(data, indices, work), batch_size=cfg.batch_size, shuffle=False,
                        num_workers=workers, collate_fn=_collate, pin_memory=False,
                        persistent_workers=False, prefetch_factor=4 if workers else None,
                        worker_init_fn=EndWithParent() if workers else None)
    for share in shares:
        share.weights = share.classifier.to(device)
        share.unsaved = []
        share.row_index = torch.tensor(share.rows, device=device)
        if cuda:  # conv stems run faster channels-last; a no-op for the math
            share.job.model.to(memory_format=torch.channels_last)
    show = cfg.progress and (dist.is_main() or not sharded)
    bar = _progress(show, m, indices[0] - lo, data.spec.label)
    started = time.perf_counter()
    try:
        with profiler_trace(cfg.profile_trace, device, f"{data.spec.label}-{os.getpid()}") as step:
            # the workers start here, in this thread: PyTorch's handler for a worker that dies is this thread's
            batches = iter(loader)
            prepare = _Prepare(view_sets, work, lo, device, clock)
            with _Prefetch(_batches(batches), prepare, clock) as prepared:
                _batch_loop(shares, view_sets, prepared, lo, cfg, store, clock, bar, step)
    except RuntimeError as e:
        died = worker_died(e)
        if died is None:
            raise
        raise died from None
    clock.add("wall", time.perf_counter() - started)
    if bar is not None:
        bar.close()
    return clock


class _Prepared:
    """A batch ready to score: its image indices, the rows of the readable ones, and each view
    set's views ([b, R, S, S, 3] uint8 on the device); ``ready``: the side stream's event after them."""

    __slots__ = ("indices", "rows", "views", "ready")

    def __init__(self, indices, rows, views, ready=None):
        self.indices, self.rows, self.views, self.ready = indices, rows, views, ready


class _Prepare:
    """Batch -> _Prepared, in the prefetch thread: decode on the device, views per view set. On
    CUDA on its own stream, so what it queues (and any wait inside torchvision or tensor_views)
    never holds up the models' stream; host arrays go through pinned memory."""

    def __init__(self, view_sets, work, lo: int, device: torch.device, clock: StageClock):
        self.view_sets, self.work, self.lo, self.device, self.clock = view_sets, work, lo, device, clock
        # high priority: its few small kernels run between the forward's, so a batch is ready early
        self.stream = torch.cuda.Stream(device, priority=-1) if device.type == "cuda" else None
        self.previous = None  # this stream's event after the last batch

    def __call__(self, batch) -> _Prepared:
        batch_indices, payloads = batch
        clock, stream = self.clock, self.stream
        with contextlib.ExitStack() as on_side:
            if stream is not None:  # a thread's current device and stream are its own
                on_side.enter_context(torch.cuda.device(self.device))
                on_side.enter_context(torch.cuda.stream(stream))
            if self.work.device_decode:
                if self.previous is not None:
                    # torchvision's nvjpeg allocates its output on this stream but writes it on a stream
                    # of its own, without waiting for this one: memory the last batch freed here may still
                    # be read by its view kernels until they finish (waits in this thread only)
                    self.previous.synchronize()
                with clock.stage("decode", stream=stream):
                    payloads = _decode_on_device(payloads, self.device)
            ok = [p is not None for p in payloads]
            good = [p for p in payloads if p is not None]
            rows = np.asarray([i - self.lo for i, o in zip(batch_indices, ok) if o], dtype=np.int64)
            views = {}
            with clock.stage("views", stream=stream):
                for g, vset in enumerate(self.view_sets):
                    # view sets whose models all resume past this batch are skipped
                    if not good or not any(int(rows.max()) >= s.resumed for s in vset.shares):
                        continue
                    if vset.device:
                        # an original, or the finished views a worker made for this view set (_Work's rgb_last_sets)
                        originals = [torch.from_numpy(p.views[g]) if g in p.views else
                                     p.original if torch.is_tensor(p.original) else torch.from_numpy(p.original)
                                     for p in good]
                        views[g] = tensor_views.make_views(vset.protocol, originals, vset.res, device=self.device)
                    elif stream is None:
                        views[g] = torch.from_numpy(np.stack([p.views[g] for p in good])).to(self.device)
                    else:  # stacked straight into pinned memory, copied without waiting
                        arrays = [p.views[g] for p in good]
                        host = torch.empty((len(arrays), *arrays[0].shape), dtype=torch.from_numpy(arrays[0]).dtype,
                                           pin_memory=True)
                        np.stack(arrays, out=host.numpy())
                        views[g] = host.to(self.device, non_blocking=True)
            ready = None
            if stream is not None:
                ready = torch.cuda.Event()
                ready.record(stream)
                self.previous = ready
        return _Prepared(batch_indices, rows, views, ready)


class _Prefetch:
    """Runs ``prepare`` over ``batches`` in a thread, one batch ahead of the consumer; iterate it in
    a ``with`` block. An error in the thread is raised in the consumer; leaving the block (an
    error, Ctrl-C) stops the thread."""

    def __init__(self, batches, prepare, clock: StageClock, depth: int = 1):
        self.batches, self.prepare, self.clock = batches, prepare, clock
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lr0fm-prefetch", daemon=True)

    _END = object()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                with self.clock.stage("read"):
                    batch = next(self.batches, self._END)
                if batch is self._END:
                    break
                if not self._put(self.prepare(batch)):
                    return
            self._put(self._END)
        except BaseException as e:  # handed to the consumer, which raises it
            self._put(e)

    def __enter__(self):
        self.thread.start()
        return self

    def __iter__(self):
        while True:
            with self.clock.stage("wait"):
                item = self.queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def _batch_loop(shares, view_sets, prepared, lo, cfg, store, clock, bar, step) -> None:
    """Every prepared batch: top-k per model of its view set; the resume point every checkpoint_every images."""
    current = torch.cuda.current_stream(cfg.device) if clock.cuda else None
    for batch in prepared:
        if batch.ready is not None:  # the side stream's work for this batch comes first
            current.wait_event(batch.ready)
            for views in batch.views.values():
                views.record_stream(current)  # its memory is not reused before the models are done with it
        for g, views in batch.views.items():
            for share in view_sets[g].shares:
                if int(batch.rows.max()) >= share.done:
                    _score(share, views, batch.rows, cfg.device, clock.cuda, cfg.batch_size, clock)
        all_rows = [i - lo for i in batch.indices]
        for share in shares:
            if max(all_rows) < share.done:
                continue
            share.done = max(all_rows) + 1
            if share.done - share.saved >= cfg.checkpoint_every:
                _save(share, store, clock)
        step()
        if bar is not None:
            bar.update(len(batch.indices))
    for share in shares:
        _flush_topk(share, clock)


def _save(share: _Share, store: ResultsStore, clock: StageClock) -> None:
    """The resume point of a share: its top-k so far, to the host and to the store."""
    _flush_topk(share, clock)
    clock.settle()  # the device is idle here anyway
    with clock.stage("store"):
        store.save_partial(share.partial_key, topk=share.topk, valid=share.valid, done=np.int64(share.done),
                           cells=np.asarray([share.cells[r] for r in share.pending]))
    share.saved = share.done


def _flush_topk(share: _Share, clock: StageClock) -> None:
    """The top-k the device holds for a share -> its host array, in one copy."""
    if not share.unsaved:
        return
    rows = np.concatenate([r for r, _ in share.unsaved])
    with clock.stage("topk_copy", share.index):
        preds = torch.cat([p for _, p in share.unsaved]).cpu().numpy()  # [n, R, k]
    share.topk[:, rows] = preds.transpose(1, 0, 2)
    share.unsaved = []


def _score(share: _Share, views: torch.Tensor, rows: np.ndarray, device, cuda: bool, batch_size: int,
           clock: StageClock) -> None:
    """One model on its resolutions of a batch's views: top-k class indices, kept on the device
    (``share.unsaved``) until the next resume point.

    ``views`` stays uint8; each forward batch is normalised just before its forward, and rows and
    resolutions are only indexed (copied) when some are left out: on a CPU the forward is ~97% of
    the pass and this keeps the rest near nothing (docs/performance.md). Nothing here waits for
    the device."""
    model, cfg = share.job.model, share.job.cfg
    keep = rows >= share.done  # rows before its resume point are already scored
    b, R = int(keep.sum()), len(share.rows)
    with clock.stage("forward", share.index):
        mine = views if keep.all() else views.index_select(0, torch.from_numpy(np.flatnonzero(keep)).to(views.device))
        if share.rows != list(range(views.shape[1])):
            mine = mine.index_select(1, share.row_index)
        flat = mine.flatten(0, 1)  # [b*R, S, S, 3] uint8
        feats = []
        with _autocast(torch.device(device), cfg.amp):
            for i in range(0, flat.shape[0], batch_size):
                x = share.protocol.normalize_batch(flat[i:i + batch_size])  # [<=batch, 3, S, S]
                if cuda:  # conv stems run faster channels-last; a no-op for the math
                    x = x.contiguous(memory_format=torch.channels_last)
                feats.append(model.encode_image(x))
    with clock.stage("scoring", share.index):
        k = share.topk.shape[2]
        pred = (torch.cat(feats).float() @ share.weights).topk(k, dim=-1).indices.view(b, R, k)
        share.unsaved.append((rows[keep], pred.to(torch.int32)))
    share.valid[rows[keep]] = True


@torch.no_grad()
def predict(model: ZeroShotModel, data: LabeledImages, indices: Sequence[int], classifier: torch.Tensor,
            view_fn: ViewFn, protocol: Protocol, num_views: int, cfg: EvalConfig, **_unused):
    """Top-k class indices for every (view, image) of ``indices`` with a given classifier, outside the
    results store: ([R, n, k] int32, [n] valid). For scripts (benchmarks/train_tokens_offline.py)."""
    sub = data.subset(indices)
    share = _Share(Job(model, cfg, view_fn), protocol, None, {}, list(protocol.resolutions)[:num_views])
    share.classifier, share.view_set, share.rows = classifier, 0, list(range(num_views))
    k = min(cfg.topk, classifier.shape[1])
    share.topk, share.valid = np.full((num_views, len(sub), k), -1, np.int32), np.zeros(len(sub), bool)
    vset = ViewSet(protocol, share.pending, view_fn, False, [share])
    work = _Work([(0, view_fn, None, share.pending)], False, False)
    cfg = replace(cfg, checkpoint_every=10 ** 12)
    _loop([share], [vset], sub, range(len(sub)), 0, len(sub), work, cfg, None, False)
    return share.topk, share.valid


def _progress(show: bool, total: int, initial: int, desc: str):
    if not show:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True,
                mininterval=1.0)


