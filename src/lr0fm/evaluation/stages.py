"""Where a pass spends its time: seconds per stage, recorded in each record's ``run.stages``
(``run`` is not part of a result's identity) and printed by ``lr0fm eval/sweep --profile``.

The pass runs in two threads (lr0fm.evaluation.passes): a prefetch thread prepares batch k+1
while the main thread scores batch k.

* main thread: ``wait`` (for the next prepared batch: the prefetch thread was the slower one),
  ``forward`` (normalisation and the image tower), ``scoring`` (classifier product and top-k),
  ``topk_copy`` (top-k to the host, at resume points and the end) and ``store`` (resume points
  written); forward, scoring and topk_copy are per model, the others the pass's;
* prefetch thread, overlapped with the main thread: ``read`` (waiting for the DataLoader's
  workers, which read the files and, with PIL, decode and make the views), ``decode`` (JPEGs on
  the device) and ``views`` (made on the device, or the workers' views stacked and moved to it);
* ``wall``: the whole batch loop.

On a CPU every stage is ``perf_counter`` time. On CUDA the device's work is queued
asynchronously, so host clocks would time the queueing: decode, views, forward, scoring and
topk_copy are timed with CUDA events there, and only when profiling (``--profile``), read back
where the pass waits for the device anyway (resume points, the end); without it they are left
out and the pass adds no work to the device. ``--profile-trace DIR`` adds a torch.profiler trace
of batches 2 to 5 of each pass (``record_function`` ranges named ``lr0fm.<stage>``).
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict

import torch

# the stages whose work runs on the model's device (the rest are host time everywhere)
DEVICE_STAGES = ("decode", "views", "forward", "scoring", "topk_copy")
MODEL_STAGES = ("forward", "scoring", "topk_copy")
ORDER = ("wall", "wait", "read", "decode", "views", "forward", "scoring", "topk_copy", "store")


class StageClock:
    """Seconds per stage of one pass (per model for MODEL_STAGES). ``events``: time the device
    stages with CUDA events (CUDA only; otherwise they are not timed there). ``trace``: mark every
    stage as a ``record_function`` range for torch.profiler."""

    def __init__(self, device: torch.device, events: bool = False, trace: bool = False):
        self.device, self.cuda = device, device.type == "cuda"
        self.events = events and self.cuda
        self.trace = trace
        self.totals: dict = defaultdict(float)     # (stage, model index or None) -> seconds
        self._pending: list = []                    # (key, start event, end event) not read yet
        self._lock = threading.Lock()               # both threads add events

    @contextlib.contextmanager
    def stage(self, name: str, model: int | None = None, stream=None):
        """Time the block as stage ``name`` (of model ``model``); ``stream``: the CUDA stream its
        device work is queued on (default: the current one)."""
        key = (name, model if name in MODEL_STAGES else None)
        marked = torch.profiler.record_function(f"lr0fm.{name}") if self.trace else contextlib.nullcontext()
        if self.cuda and name in DEVICE_STAGES:
            if not self.events:
                with marked:
                    yield
                return
            stream = stream or torch.cuda.current_stream(self.device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            with marked:
                yield
            end.record(stream)
            with self._lock:
                self._pending.append((key, start, end))
            return
        t = time.perf_counter()
        try:
            with marked:
                yield
        finally:
            self.totals[key] += time.perf_counter() - t

    def add(self, name: str, seconds: float) -> None:
        self.totals[(name, None)] += seconds

    def settle(self) -> None:
        """Read back the CUDA events recorded so far (waits for their work to finish)."""
        with self._lock:
            pending, self._pending = self._pending, []
        for key, start, end in pending:
            end.synchronize()
            self.totals[key] += start.elapsed_time(end) / 1000.0

    def seconds(self, model: int) -> dict:
        """The pass's stages and model ``model``'s, in ORDER, rounded to 0.1 ms (those timed)."""
        self.settle()
        out = {}
        for name in ORDER:
            key = (name, model if name in MODEL_STAGES else None)
            if key in self.totals:
                out[name] = round(self.totals[key], 4)
        return out


def make_trace_folder(folder: str) -> None:
    """The folder of ``--profile-trace``, made now (before a pass builds or writes anything), or one line."""
    import os
    from pathlib import Path

    from ..errors import InputError

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        raise InputError(f"--profile-trace {folder}: cannot write a trace there ({e.strerror or e}); "
                         "give a writable folder") from None


@contextlib.contextmanager
def profiler_trace(folder: str | None, device: torch.device, name: str):
    """A torch.profiler session writing a trace of batches 2 to 5 to ``folder`` (TensorBoard's /
    Perfetto's JSON, one file per pass; none for a one-batch pass: the first batch only warms the
    profiler up; the folder is made beforehand, ``make_trace_folder``); yields its ``step`` (call
    once per batch), or a no-op."""
    if not folder:
        yield lambda: None
        return
    from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    with profile(activities=activities, schedule=schedule(wait=0, warmup=1, active=4, repeat=1),
                 on_trace_ready=tensorboard_trace_handler(folder, worker_name=safe), record_shapes=False) as prof:
        yield prof.step


def stage_table(records: list[dict], since: float | None = None) -> str:
    """The stage times of the passes behind ``records`` (those finished at or after ``since``),
    one row per model and pass: the text ``--profile`` prints."""
    rows, seen = [], set()
    for r in records:
        run = r.get("run") or {}
        stages = run.get("stages")
        if not stages or (since is not None and run.get("finished", 0) < since - 0.01):  # finished: rounded to ms
            continue
        key = (r.get("evaluation"), run.get("finished"))
        if key in seen:
            continue
        seen.add(key)
        rows.append((r.get("model", "?"), r.get("dataset", "?"), r.get("n_images", 0) - run.get("resumed_images", 0),
                     len(run.get("resolutions_in_pass") or [r.get("resolution")]), run.get("models_in_pass", 1),
                     run.get("device", "?"), stages))
    if not rows:
        return "stage times: no pass ran in this command (every cell was already done)"
    names = [n for n in ORDER if any(n in row[-1] for row in rows)]
    mw = max(len("model"), *(len(r[0]) for r in rows))
    dw = max(len("dataset"), *(len(r[1]) for r in rows))
    lines = ["stage times, seconds (run.stages; wait/read/decode/views/store are the pass's, shared by its models; "
             "read/decode/views overlap the forward):",
             f"  {'model':<{mw}}  {'dataset':<{dw}} {'images':>7} {'res':>3} {'dev':>4} "
             + " ".join(f"{n:>9}" for n in names) + f" {'pairs/s':>9}"]
    for model, dataset, n, res, _models, device, stages in rows:
        wall = stages.get("wall")
        rate = f"{n * res / wall:,.1f}" if wall else "-"
        lines.append(f"  {model:<{mw}}  {dataset:<{dw}} {n:>7} {res:>3} {device:>4} "
                     + " ".join(f"{stages[s]:>9.3f}" if s in stages else f"{'-':>9}" for s in names)
                     + f" {rate:>9}")
    if any(row[5] == "cuda" for row in rows) and not any("forward" in row[-1] for row in rows):
        lines.append("  (on CUDA the device stages are timed with --profile only)")
    return "\n".join(lines)


__all__ = ["StageClock", "make_trace_folder", "profiler_trace", "stage_table"]
