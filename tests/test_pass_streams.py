"""The overlapped pass (lr0fm.evaluation.passes: a prefetch thread decodes batch k+1 and makes its
views, on a side stream on CUDA, while the main thread scores batch k) hands the scoring thread
exactly the views that a plain decode of one image at a time makes, while the device is kept busy
as a forward would keep it. On CUDA this is where a race between streams would show (torchvision's
nvjpeg writes its output on a stream of its own); on CPU the same test runs in CI, so the test
itself cannot rot between GPU sessions (benchmarks/gpu_check.sh runs its CUDA case)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.io import ImageReadMode, decode_jpeg

from lr0fm import tensor_views
from lr0fm.evaluation.calibrate import generate_jpegs, jpeg_dataset
from lr0fm.evaluation.loading import _batches, _collate, _ImageDataset, _Work
from lr0fm.evaluation.passes import ViewSet, _Prefetch, _Prepare
from lr0fm.evaluation.stages import StageClock
from lr0fm.protocol import HR, Protocol

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


def plain_views(path, protocol: Protocol, device: torch.device) -> np.ndarray:
    """One JPEG decoded alone on ``device`` and its views, with nothing else queued."""
    encoded = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
    image = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device).permute(1, 2, 0).contiguous()
    views = tensor_views.make_views(protocol, [image], device=device)[0].cpu().numpy()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return views


@pytest.mark.parametrize("device", DEVICES)
def test_overlapped_pass_hands_over_the_views_of_a_plain_decode(tmp_path, device):
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    n, batch, size = (512, 64, 224) if cuda else (24, 8, 64)
    paths = generate_jpegs(tmp_path / "jpegs", n)  # 500x375 and 375x500: two size groups per batch
    data = jpeg_dataset(paths, ["a", "b"], ["{}"])
    protocol = Protocol(size, (0.5,) * 3, (0.5,) * 3, resolutions=(16, 32, 64, 128, HR))
    vset = ViewSet(protocol, list(protocol.resolutions), None, True, [SimpleNamespace(resumed=0)])
    work = _Work([], device_views=True, device_decode=True)
    loader = DataLoader(_ImageDataset(data, range(n), work), batch_size=batch, num_workers=2, collate_fn=_collate)
    clock = StageClock(dev, events=cuda)
    got: dict[int, np.ndarray] = {}
    busy = torch.randn(2048, 2048, device=dev) if cuda else None
    with _Prefetch(_batches(iter(loader)), _Prepare([vset], work, 0, dev, clock), clock) as prepared:
        for b in prepared:
            views = b.views[0]
            if b.ready is not None:  # as lr0fm.evaluation.passes._batch_loop does
                current = torch.cuda.current_stream(dev)
                current.wait_event(b.ready)
                views.record_stream(current)
            if busy is not None:  # a forward's worth of work queued ahead of reading the views
                for _ in range(16):
                    busy = torch.nn.functional.normalize(busy @ busy, dim=1)
            # the copy waits for this thread's stream only: the prefetch thread goes on meanwhile
            for row, view in zip(b.rows, views.cpu().numpy()):
                got[int(row)] = view
    assert sorted(got) == list(range(n))
    differ = [i for i in range(n) if not np.array_equal(got[i], plain_views(paths[i], protocol, dev))]
    assert not differ, f"{len(differ)} of {n} images' views differ from a plain decode (first: {differ[:5]})"
    stages = clock.seconds(0)
    assert {"read", "decode", "views", "wait"} <= set(stages), stages
