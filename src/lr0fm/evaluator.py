"""Cells -> predictions -> records, in one pass over the images for all resolutions and models.

Each image is decoded once (in a DataLoader worker, or its JPEG bytes on the device); the
protocol makes its HR and LR views from that one decode, once per group of models whose views
are the same pixels (lr0fm.gpu_resize on the device, bit for bit the PIL chain, or PIL in the
workers); every model encodes its views; its cached text classifier scores them. Progress is
saved every ``checkpoint_every`` images per model, so a killed run resumes where it stopped and
ends with records identical to an uninterrupted run.
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
from .images import composite_on_white
from .protocol import HR, Protocol, ProtocolError, parse_resolutions
from .records import FORMAT as RECORD_FORMAT
from .records import res_key
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
    amp: str | None = None            # None | "bf16" | "fp16"
    limit: int | None = None          # first N images only (quick looks; recorded)
    topk: int = 5
    checkpoint_every: int = 1000      # images between saves of the resume point
    progress: bool = True
    variant: dict = field(default_factory=dict)  # e.g. {"lr_tokens": HASH} or {"sr": NAME}
    # where views are made: "pil" (in the workers) or "device" (lr0fm.gpu_resize, the same pixels);
    # None: device on CUDA, pil on CPU. Recorded with the run, not in the identity (same numbers).
    views: str | None = None
    # who decodes JPEGs: "pil" (workers) or "device" (torchvision.io.decode_jpeg in batches on the
    # model's device; other formats stay on PIL); None: device when views are made on CUDA.
    # Part of the identity: decoders may differ by a few levels.
    decoder: str | None = None

    def __post_init__(self) -> None:
        """The run options' checks, in one place for `lr0fm eval`, sweeps and the Python API."""
        from .errors import InputError

        self.resolutions = parse_resolutions(self.resolutions)
        for name, least in (("batch_size", 1), ("limit", 1), ("workers", 0), ("checkpoint_every", 1)):
            value = getattr(self, name)
            if value is not None and value < least:
                raise InputError(f"--{name.replace('_', '-')} {value} must be at least {least}")
        if self.amp not in (None, "bf16", "fp16"):
            raise InputError(f"--amp {self.amp!r} unknown; use bf16 or fp16 (or leave it out for fp32)")
        for name in ("views", "decoder"):
            if getattr(self, name) not in (None, "pil", "device"):
                raise InputError(f"--{name} {getattr(self, name)!r} unknown; use pil or device")


# image -> [R, S, S, 3] uint8 views (normalised later, on the model's device)
ViewFn = Callable[[Image.Image], np.ndarray]
JPEG_MAGIC = b"\xff\xd8\xff"


# -- what a worker sends per image -------------------------------------------------------------
class _Payload:
    """One image's worker output: the prepared RGB original for the device, and/or the PIL views
    of each group made in the worker, or the JPEG bytes for the device decoder; None: unreadable."""

    __slots__ = ("original", "views", "jpeg")

    def __init__(self, original=None, views=None, jpeg=None):
        self.original, self.views, self.jpeg = original, views, jpeg


class _Work:
    """What the workers do per image: decode (or only read JPEG bytes) and make the PIL-side views.
    ``pil_groups``: (index, view function, resolutions) of the groups whose views workers make."""

    def __init__(self, pil_groups, device_views: bool, device_decode: bool):
        self.pil_groups, self.device_views, self.device_decode = pil_groups, device_views, device_decode

    def __call__(self, data: LabeledImages, index: int):
        if self.device_decode and not self.pil_groups:
            try:
                encoded = data.encoded(index)
            except OSError:
                return None
            if encoded is not None and encoded[:3] == JPEG_MAGIC:
                return _Payload(jpeg=np.frombuffer(encoded, dtype=np.uint8).copy())
        try:
            image = data.load_image(index)
        except UNREADABLE:
            return None  # an unreadable file: skipped and counted
        try:
            views = {g: fn(image) if res is None else fn(image, res) for g, fn, res in self.pil_groups}
            original = np.array(composite_on_white(image), dtype=np.uint8) if self.device_views else None
        except Exception as e:  # a broken view maker (e.g. an SR model) is an error, never a skip
            raise ViewError(f"making the views of {data.sample_id(index)!r} failed: {type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''}; fix or drop --sr / the view "
                            "function and rerun") from e
        return _Payload(original=original, views=views)


class _ImageDataset(Dataset):
    def __init__(self, data: LabeledImages, indices: Sequence[int], work: _Work):
        self.data, self.indices, self.work = data, list(indices), work

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.indices[i], self.work(self.data, self.indices[i])


def _collate(items):
    return [i for i, _ in items], [p for _, p in items]


def default_workers(device: str = "cpu") -> int:
    """Decode workers per process: the cores this rank has, minus one for the main process.

    On CPU the model needs the cores too (capped at 8); on GPU decoding is the bottleneck."""
    cores = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    cap = 8 if torch.device(device).type == "cpu" else 32
    return max(0, min(cap, cores - 1))


def _autocast(device: torch.device, amp: str | None):
    if not amp:
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device_type=device.type, dtype=dtype)


# -- planning ----------------------------------------------------------------------------------
def _views_and_decoder(cfg: EvalConfig, protocol: Protocol, view_fn) -> tuple[str, str]:
    """Where views are made and who decodes, for this run (see EvalConfig)."""
    cuda = torch.device(cfg.device).type == "cuda"
    views = cfg.views or ("device" if cuda else "pil")
    if views == "device" and (view_fn is not None or not gpu_resize.supports(protocol)):
        if cfg.views == "device":
            raise ProtocolError("--views device makes the protocol's own views only (not with --sr or "
                                f"{protocol.interpolation!r} resizes); use --views pil")
        views = "pil"
    decoder = cfg.decoder or ("device" if views == "device" and cuda else "pil")
    if decoder == "device" and (views != "device" or protocol.rgb_last):
        if cfg.decoder == "device":
            raise ProtocolError("--decoder device needs --views device and a protocol that converts to RGB first")
        decoder = "pil"
    return views, decoder


def decoder_name(decoder: str, device: str) -> str:
    """The decoder as recorded in the identity."""
    return "pil" if decoder == "pil" else f"torchvision-{torch.device(device).type}"


def identify(model: ZeroShotModel, data: LabeledImages, protocol: Protocol, cfg: EvalConfig,
             decoder: str = "pil") -> Evaluation:
    """The identity of this evaluation (lr0fm.identity decides what is in it)."""
    return evaluation(model, data, protocol, amp=cfg.amp, topk=cfg.topk, variant=cfg.variant, limit=cfg.limit,
                      decoder=decoder_name(decoder, cfg.device))


def plan(model: ZeroShotModel, data: LabeledImages, cfg: EvalConfig, view_fn: ViewFn | None = None,
         protocol: Protocol | None = None):
    """What ``evaluate`` will compute: (effective cfg, data after --limit, protocol, identity,
    {resolution: cell id}, (views, decoder)). No image is decoded (``lr0fm sweep --dry-run`` uses
    it); file contents are hashed once and remembered (lr0fm.filedigest)."""
    protocol = protocol or model.protocol(cfg.resolutions)
    how = _views_and_decoder(cfg, protocol, view_fn)
    if cfg.limit is not None:
        data = data.subset(range(min(cfg.limit, len(data))))
    ev = identify(model, data, protocol, cfg, how[1])
    cells = {r: ev.cell(r) for r in cfg.resolutions}
    return cfg, data, protocol, ev, cells, how


# -- one model's share of a pass ---------------------------------------------------------------
@dataclass
class Job:
    """A model to evaluate on the data of a pass (``view_fn``: custom views, e.g. SR)."""

    model: ZeroShotModel
    cfg: EvalConfig
    view_fn: ViewFn | None = None
    protocol: Protocol | None = None


@dataclass
class _Share:
    job: Job
    protocol: Protocol            # with this pass's pending resolutions
    ev: Evaluation
    cells: dict
    pending: list
    group: int = -1               # index of its view group
    rows: list = field(default_factory=list)  # positions of its resolutions in the group's views
    classifier: torch.Tensor | None = None
    topk: np.ndarray | None = None
    valid: np.ndarray | None = None
    done: int = 0
    saved: int = 0
    partial_key: str = ""
    weights: torch.Tensor | None = None  # the classifier on the device


def _pixel_key(protocol: Protocol) -> str:
    """Models whose uint8 views are the same pixels share them (mean/std apply on the device)."""
    d = protocol.describe()
    return repr(sorted((k, v) for k, v in d.items() if k not in ("mean", "std", "source")))


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
                  wait: bool = True) -> list[list[dict] | None]:
    """Evaluate several models on one dataset in one pass: each image is decoded once and its
    views are made once per group of models with the same view pixels. Records are identical to
    separate ``evaluate`` runs. Jobs must share the run options (device, batch size, workers,
    limit, views, decoder); a job whose pass another process holds is None when ``wait=False``."""
    first = jobs[0].cfg
    for job in jobs[1:]:
        for name in ("device", "batch_size", "workers", "limit", "views", "decoder", "checkpoint_every"):
            if getattr(job.cfg, name) != getattr(first, name):
                raise ValueError(f"evaluate_many: jobs differ in {name}; run them separately")
    sharded = dist.shard_images()
    plans = [plan(j.model, data, j.cfg, j.view_fn, j.protocol) for j in jobs]
    limited = plans[0][1]
    hows = {p[5] for p in plans}
    views_on_device = any(h[0] == "device" for h in hows)
    device_decode = all(h[1] == "device" for h in hows)
    out: list[list[dict] | None] = [None] * len(jobs)
    busy: set[int] = set()
    with contextlib.ExitStack() as locks:
        shares = []
        for i, (job, (cfg, _, protocol, ev, cells, how)) in enumerate(zip(jobs, plans)):
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
            _run_pass(shares, limited, store, first, views_on_device, device_decode)
    for i, (cfg, _, _, _, cells, _) in enumerate(plans):
        if i not in busy:
            out[i] = [store.get(cells[r]) for r in cfg.resolutions]
    return out


def _run_pass(shares: list[_Share], data: LabeledImages, store: ResultsStore, cfg: EvalConfig,
              views_on_device: bool, device_decode: bool) -> None:
    started = time.time()
    log.info("evaluating %s (%d images) with %d model(s)", data.spec.label, len(data), len(shares))
    sharded = dist.shard_images()
    n = len(data)
    lo, hi = dist.block(n) if sharded else (0, n)
    m = hi - lo
    # view groups: shares with the same pixels share views; a custom view function is its own group
    groups: list[dict] = []
    by_key: dict[str, dict] = {}
    for share in shares:
        how = _views_and_decoder(share.job.cfg, share.protocol, share.job.view_fn)
        if share.job.view_fn is not None:
            fn = share.job.view_fn
            fn = fn.with_resolutions(share.pending) if hasattr(fn, "with_resolutions") else fn
            groups.append({"protocol": share.protocol, "res": list(share.pending), "fn": fn, "device": False,
                           "shares": [share]})
            continue
        key = _pixel_key(share.protocol) + how[0]
        if key not in by_key:
            by_key[key] = {"protocol": share.protocol, "res": [], "fn": None, "device": how[0] == "device",
                           "shares": []}
            groups.append(by_key[key])
        by_key[key]["shares"].append(share)
        by_key[key]["res"] = sorted(set(by_key[key]["res"]) | set(share.pending), key=res_key)
    for g, group in enumerate(groups):
        for share in group["shares"]:
            share.group, share.rows = g, [group["res"].index(r) for r in share.pending]
    pil_groups = [(g, grp["fn"] or grp["protocol"].views_uint8, None if grp["fn"] else grp["res"])
                  for g, grp in enumerate(groups) if not grp["device"]]
    work = _Work(pil_groups, views_on_device, device_decode)

    with dist.main_first() if sharded else contextlib.nullcontext():  # each classifier is built once
        for share in shares:
            share.classifier, _ = cached_classifier(share.job.model, data.spec.classnames, data.spec.templates,
                                                    store.classifier_cache, key=share.ev.classifier_key)
    for share in shares:
        cells = share.job.cfg.resolutions
        if dist.is_main() or not sharded:  # resume points holding a finished cell are stale
            store.drop_stale_partials(share.ev.id, [share.cells[r] for r in cells if store.complete(share.cells[r])])
        group_key = share.ev.resume_key(share.pending)
        share.partial_key = f"{group_key}-rank{dist.rank()}of{dist.world_size()}" if sharded else group_key
        k, R = min(share.job.cfg.topk, share.classifier.shape[1]), len(share.pending)
        state = store.load_partial(share.partial_key)
        if state is not None and state["topk"].shape == (R, m, k):
            share.topk, share.valid, share.done = state["topk"], state["valid"], int(state["done"])
            log.info("resuming %s at image %d of %d", data.spec.label, lo + share.done, n)
        else:
            share.topk, share.valid, share.done = np.full((R, m, k), -1, np.int32), np.zeros(m, bool), 0
        share.saved = share.done

    _loop(shares, groups, data, range(lo + min(s.done for s in shares), hi), lo, m, work, cfg, store, sharded)

    for share in shares:
        if sharded:  # rank order == block order: concatenating the blocks gives all n images
            parts = dist.all_gather((share.topk, share.valid))
            share.topk = np.concatenate([p[0] for p in parts], axis=1)
            share.valid = np.concatenate([p[1] for p in parts])
    labels = np.asarray([data.label(i) for i in range(n)], dtype=np.int32)
    ids = np.asarray([data.sample_id(i) for i in range(n)])
    run = {"seconds": round(time.time() - started, 2), "finished": round(time.time(), 3),
           "views": "device" if views_on_device else "pil", "models_in_pass": len(shares),
           "device": torch.device(cfg.device).type, "batch_size": cfg.batch_size}
    unreadable = None
    for share in shares:
        if not share.valid.any():  # nothing to score: an error, not a record that would stay "done"
            store.drop_partial(share.partial_key)
            unreadable = DatasetError(f"none of the {n} images of {data.spec.label} could be read (first: "
                                      f"{data.sample_id(0) if n else '-'!r}); check the files (formats, "
                                      "permissions) and rerun")
            continue
        if dist.is_main() or not sharded:
            for j, r in enumerate(share.pending):
                record = make_record(share.job.model, data, share.protocol, r, share.job.cfg, share.topk[j],
                                     share.valid, labels, ids, share.ev, share.cells[r])
                record["run"] = {**run, "resolutions_in_pass": list(share.pending),
                                 "views": "pil" if groups[share.group]["fn"] or not groups[share.group]["device"]
                                 else "device"}
                store.put(record, {"topk": share.topk[j], "labels": labels, "valid": share.valid, "ids": ids})
    if sharded:
        dist.barrier()  # the records are on disk before any rank reads them
    for share in shares:
        store.drop_partial(share.partial_key)
    if unreadable is not None:
        raise unreadable


@torch.no_grad()
def _loop(shares, groups, data, indices, lo, m, work, cfg, store, sharded) -> None:
    """The pass: batches of decoded images -> each group's views -> each model's top-k."""
    indices = list(indices)
    if not indices:
        return
    device = torch.device(cfg.device)
    cuda = device.type == "cuda"
    workers = default_workers(cfg.device) if cfg.workers is None else cfg.workers
    loader = DataLoader(_ImageDataset(data, indices, work), batch_size=cfg.batch_size, shuffle=False,
                        num_workers=workers, collate_fn=_collate, pin_memory=False,
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    for share in shares:
        share.weights = share.classifier.to(device)
        if cuda:  # conv stems run faster channels-last; a no-op for the math
            share.job.model.to(memory_format=torch.channels_last)
    show = cfg.progress and (dist.is_main() or not sharded)
    bar = _progress(show, m, indices[0] - lo, data.spec.label)
    for batch_indices, payloads in _batches(loader):
        if work.device_decode:
            payloads = _decode_on_device(payloads, device)
        ok = [p is not None for p in payloads]
        good = [p for p in payloads if p is not None]
        rows = np.asarray([i - lo for i, o in zip(batch_indices, ok) if o], dtype=np.int64)
        if good:
            for g, group in enumerate(groups):
                todo = [s for s in group["shares"] if int(rows.max()) >= s.done]
                if not todo:
                    continue
                if group["device"]:
                    originals = [p.original if torch.is_tensor(p.original) else torch.from_numpy(p.original)
                                 for p in good]
                    views = gpu_resize.make_views(group["protocol"], originals, group["res"], device=device)
                else:
                    views = torch.from_numpy(np.stack([p.views[g] for p in good])).to(device)
                for share in todo:
                    _score(share, views, rows, device, cuda, cfg.batch_size)
        all_rows = [i - lo for i in batch_indices]
        for share in shares:
            if max(all_rows) < share.done:
                continue
            share.done = max(all_rows) + 1
            if share.done - share.saved >= cfg.checkpoint_every:
                store.save_partial(share.partial_key, topk=share.topk, valid=share.valid, done=np.int64(share.done),
                                   cells=np.asarray([share.cells[r] for r in share.pending]))
                share.saved = share.done
        if bar is not None:
            bar.update(len(batch_indices))
    if bar is not None:
        bar.close()


def _score(share: _Share, views: torch.Tensor, rows: np.ndarray, device, cuda: bool, batch_size: int) -> None:
    """One model on its resolutions of a batch's views: top-k class indices into its arrays.

    ``views`` stays uint8; each forward batch is normalised just before its forward, and rows and
    resolutions are only indexed (copied) when some are left out: on a CPU the forward is ~97% of
    the pass and this keeps the rest near nothing (docs/performance.md)."""
    model, cfg = share.job.model, share.job.cfg
    keep = rows >= share.done  # rows before its resume point are already scored
    b, R = int(keep.sum()), len(share.rows)
    mine = views if keep.all() else views[torch.from_numpy(keep).to(views.device)]
    if share.rows != list(range(views.shape[1])):
        mine = mine[:, share.rows]
    flat = mine.flatten(0, 1)  # [b*R, S, S, 3] uint8
    feats = []
    with _autocast(device, cfg.amp):
        for i in range(0, flat.shape[0], batch_size):
            x = share.protocol.normalize_batch(flat[i:i + batch_size])  # [<=batch, 3, S, S]
            if cuda:  # conv stems run faster channels-last; a no-op for the math
                x = x.contiguous(memory_format=torch.channels_last)
            feats.append(model.encode_image(x))
    k = share.topk.shape[2]
    pred = (torch.cat(feats).float() @ share.weights).topk(k, dim=-1).indices.view(b, R, k)
    share.topk[:, rows[keep]] = pred.permute(1, 0, 2).cpu().numpy().astype(np.int32)
    share.valid[rows[keep]] = True


def _decode_on_device(payloads: list, device: torch.device) -> list:
    """JPEG bytes -> prepared RGB originals decoded in one batch on ``device``; a JPEG the device
    decoder refuses is unreadable, as a file PIL refuses is."""
    from torchvision.io import ImageReadMode, decode_jpeg

    at = [i for i, p in enumerate(payloads) if p is not None and p.jpeg is not None]
    if not at:
        return payloads
    data = [torch.from_numpy(payloads[i].jpeg) for i in at]
    try:
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:  # one bad file fails the batch: decode one by one to find it
        images = []
        for d in data:
            try:
                images.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                images.append(None)
    out = list(payloads)
    for i, image in zip(at, images):
        out[i] = None if image is None else _Payload(original=image.permute(1, 2, 0).contiguous())
    return out


@torch.no_grad()
def predict(model: ZeroShotModel, data: LabeledImages, indices: Sequence[int], classifier: torch.Tensor,
            view_fn: ViewFn, protocol: Protocol, num_views: int, cfg: EvalConfig, **_unused):
    """Top-k class indices for every (view, image) of ``indices`` with a given classifier, outside the
    results store: ([R, n, k] int32, [n] valid). For scripts (benchmarks/train_tokens_offline.py)."""
    sub = data.subset(indices)
    share = _Share(Job(model, cfg, view_fn), protocol, None, {}, list(protocol.resolutions)[:num_views])
    share.classifier, share.group, share.rows = classifier, 0, list(range(num_views))
    k = min(cfg.topk, classifier.shape[1])
    share.topk, share.valid = np.full((num_views, len(sub), k), -1, np.int32), np.zeros(len(sub), bool)
    group = {"protocol": protocol, "res": share.pending, "fn": view_fn, "device": False, "shares": [share]}
    work = _Work([(0, view_fn, None)], False, False)
    cfg = replace(cfg, checkpoint_every=10 ** 12)
    _loop([share], [group], sub, range(len(sub)), 0, len(sub), work, cfg, None, False)
    return share.topk, share.valid


def _batches(loader):
    """The loader's batches; a ViewError raised in a worker comes back as its own one line."""
    try:
        yield from loader
    except ViewError as e:
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        raise ViewError(lines[-1].split("ViewError: ", 1)[-1] if lines else "making the views failed") from None


def _progress(show: bool, total: int, initial: int, desc: str):
    if not show:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True,
                mininterval=1.0)


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
