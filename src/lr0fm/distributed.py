"""Multi-process evaluation under ``torchrun``: which rank does what, and gathering the results.

Two ways to split work, chosen by ``plan_cells``:

* **cells**: with at least as many (model, dataset) groups as ranks, each rank runs whole groups
  alone (round-robin) and writes their records itself -- no communication inside a group;
* **images**: with fewer groups than ranks, every rank runs every group on a contiguous block of
  its images; the blocks' top-k predictions are gathered and rank 0 writes the records.

A record is written by exactly one rank, atomically (``ResultsStore.put``), so the store is safe
to share. Cell ids do not depend on the number of ranks: a distributed run writes the same
records as a single-process one (only the ``run`` timing differs). Resume: each rank saves its own
partial file (keyed by rank and world size), so rerunning with the same ``--nproc_per_node``
resumes every block; with another world size, unfinished groups restart.

Outside torchrun everything here is a no-op for a world of one.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Sequence

import torch
import torch.distributed as dist

def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (also after the process group is gone: torchrun's RANK says who prints)."""
    return rank() == 0 if active() else os.environ.get("RANK", "0") == "0"


def check_device(device: str, amp: str | None = None) -> str:
    """``device`` if this machine has it and can autocast to ``amp`` there; else one InputError
    line -- called before any model is built or anything written (eval, sweep, train-tokens,
    analyze, synth)."""
    from .errors import InputError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"--device {device!r} is not a device torch knows; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise InputError(f"--device {device}: {why}; use --device cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise InputError(f"--device {device}: only {n} CUDA GPU(s) are visible (cuda:0 to cuda:{n - 1}); "
                             f"pick one of them")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise InputError(f"--device {device}: lr0fm runs on cpu, cuda, cuda:N or mps")
    if amp and not _autocasts(dev, amp):
        raise InputError(f"--amp {amp}: this torch cannot autocast to {amp} on {dev.type}; "
                         f"leave --amp out (float32)")
    return device


def _autocasts(dev: torch.device, amp: str) -> bool:
    """Whether autocast really computes in ``amp`` on ``dev`` (tried on a tiny matmul): for a dtype
    a device does not support torch only warns and runs float32, which would be recorded as amp."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the "disabling autocast" warning: the dtype check says it
            with torch.autocast(device_type=dev.type, dtype=dtype):
                out = torch.ones(2, 2, device=dev) @ torch.ones(2, 2, device=dev)
        return out.dtype == dtype
    except RuntimeError:
        return False


def init(device: str = "cpu", amp: str | None = None) -> str:
    """Check ``device`` and ``amp`` (check_device), join the torchrun process group (gloo on CPU,
    nccl on CUDA) and return this rank's device.

    Without torchrun (WORLD_SIZE unset or 1) only the check happens and ``device`` is returned.
    """
    check_device(device, amp)
    local = _local_device(device)
    if local != device:  # under torchrun 'cuda' means this rank's cuda:LOCAL_RANK
        check_device(local)
    if env_world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        return local
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return _local_device(device)


def _local_device(device: str) -> str:
    """'cuda' -> 'cuda:LOCAL_RANK' under torchrun, so each rank drives its own GPU."""
    if device == "cuda" and env_world_size() > 1:
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def block(n: int, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """This rank's contiguous block [lo, hi) of n items (sizes differ by at most one)."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    return n * r // w, n * (r + 1) // w


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a list of one outside torchrun)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class main_first:
    """Rank 0 runs the block first, then the others (e.g. build a cache file once, then read it)."""

    def __enter__(self):
        if not is_main():
            barrier()

    def __exit__(self, *_exc):
        if is_main():
            barrier()
        return False


def plan_cells(groups: Sequence[Any]) -> tuple[list[int], bool]:
    """(indices of ``groups`` this rank runs, whether their images are sharded over the ranks).

    As many groups as ranks or more: each rank runs a contiguous block of groups alone
    (contiguous, so a model is built on as few ranks as possible). Fewer: every rank runs every
    group on its block of images.
    """
    w = world_size()
    if w == 1:
        return list(range(len(groups))), False
    if len(groups) >= w:
        lo, hi = block(len(groups))
        return list(range(lo, hi)), False
    return list(range(len(groups))), True


def gather_ordered(items: list[tuple[int, Any]]) -> list[Any]:
    """Each rank's (position, value) pairs -> all values in position order, on every rank."""
    merged = [pair for part in all_gather(items) for pair in part]
    return [value for _, value in sorted(merged, key=lambda p: p[0])]
