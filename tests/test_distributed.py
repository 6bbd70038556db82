"""torchrun sharding (images and cells) gives the single-process records; tensor (GPU-path) views
agree with the PIL protocol within the documented tolerance."""
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lr0fm import distributed as dist
from lr0fm import gpu_resize
from lr0fm.cli import main
from lr0fm.datasets import get_dataset
from lr0fm.evaluate import EvalConfig, evaluate
from lr0fm.models import create_model
from lr0fm.protocol import HR, Protocol
from lr0fm.store import ResultsStore


def strip_run(record):
    return {k: v for k, v in record.items() if k != "run"}


def assert_same_results(a_root, b_root, n_records):
    a, b = ResultsStore(a_root), ResultsStore(b_root)
    ra, rb = a.records(), b.records()
    assert len(ra) == n_records and [strip_run(r) for r in ra] == [strip_run(r) for r in rb]
    for r in ra:
        pa, pb = a.load_predictions(r["cell"]), b.load_predictions(r["cell"])
        assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert not list((b.root / "partial").glob("*.npz"))


@pytest.fixture(scope="module")
def second_checkpoint(tiny_open_clip, tmp_path_factory):
    """The tiny architecture with other random weights: a second model for cell sharding."""
    import open_clip
    _, cfg, _ = tiny_open_clip
    torch.manual_seed(1)
    ckpt = tmp_path_factory.mktemp("second") / "tiny2.pt"
    torch.save(open_clip.create_model("lr0fm-tiny-vit", pretrained=None).state_dict(), ckpt)
    return f"open_clip:{cfg}:{ckpt}"


def test_blocks_partition_the_images():
    for n in (0, 1, 5, 12, 13):
        for w in (1, 2, 3, 5):
            blocks = [dist.block(n, r, w) for r in range(w)]
            assert blocks[0][0] == 0 and blocks[-1][1] == n
            assert all(blocks[i][1] == blocks[i + 1][0] for i in range(w - 1))
            assert max(hi - lo for lo, hi in blocks) - min(hi - lo for lo, hi in blocks) <= 1


@pytest.mark.slow
@pytest.mark.parametrize("two_models", [False, True], ids=["images-sharded", "cells-sharded"])
def test_torchrun_two_processes_match_single_process(two_models, tiny_open_clip, second_checkpoint, image_folder,
                                                     tmp_path, capsys):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    models = tiny_open_clip[0] + ("," + second_checkpoint if two_models else "")
    args = ["eval", "--model", models, "--dataset", "imagefolder", "--data-root", str(image_folder),
            "--resolutions", "16,32,hr", "--batch-size", "4", "--workers", "0", "--no-progress"]
    assert main(["--out", str(tmp_path / "single")] + args) == 0
    single_out = capsys.readouterr().out
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "lr0fm",
                             "--out", str(tmp_path / "ranks")] + args, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:  # never leave rank processes behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    assert_same_results(tmp_path / "single", tmp_path / "ranks", n_records=6 if two_models else 3)
    # rank 0 alone prints the report, with the same table as the single process
    assert stdout.count("results:") == 1
    assert single_out.split("results:")[0] == stdout.split("results:")[0]


# -- tensor views (the GPU path), checked on CPU ---------------------------------------------------
def _photo_like(rng, w, h):
    """Smooth colour field with a hard edge: closer to photo statistics than pixel noise."""
    small = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    a = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)).copy()
    a[h // 3: h // 2, :, 0] = 255
    return Image.fromarray(a)


def view_differences(mode, sizes, S=64, resolutions=(16, 32, 48, HR)):
    """Per resolution: (max, mean) |tensor view - PIL view| in /255 units over images of ``sizes``."""
    rng = np.random.default_rng(0)
    protocol = Protocol(S, (0.5,) * 3, (0.5,) * 3, mode=mode, resolutions=resolutions)
    images = [_photo_like(rng, w, h) for w, h in sizes]
    pil = torch.from_numpy(np.stack([protocol.views_uint8(im) for im in images])).float()
    hr = torch.from_numpy(np.concatenate([gpu_resize.HRCarrier(protocol)(im) for im in images]))
    tensor = gpu_resize.make_views(protocol, hr)
    assert tensor.dtype == torch.uint8 and tensor.shape == pil.shape
    d = (tensor.float() - pil).abs()
    return {r: (d[:, j].max().item(), d[:, j].mean().item()) for j, r in enumerate(resolutions)}


def test_tensor_views_agree_with_pil_protocol():
    rng = np.random.default_rng(1)
    any_aspect = [(int(rng.integers(40, 200)), int(rng.integers(40, 200))) for _ in range(12)]
    square = [(s, s) for s in (50, 96, 150, 200)]
    squash = view_differences("squash", any_aspect)
    shortest_square = view_differences("shortest", square)
    shortest_any = view_differences("shortest", any_aspect)
    print("\nsquash", squash, "\nshortest square", shortest_square, "\nshortest any aspect", shortest_any)
    for diffs in (squash, shortest_square, shortest_any):
        assert diffs[HR] == (0.0, 0.0)  # the HR view is the exact PIL chain
    for r in (16, 32, 48):
        # squash, and shortest on square images: only the cascaded resize differs
        assert squash[r][1] < 1.0 and squash[r][0] <= 32
        assert shortest_square[r][1] < 1.0 and shortest_square[r][0] <= 32
        # shortest on other aspects: the crop-before-down geometry adds a sub-pixel shift
        assert shortest_any[r][1] < 8.0


def test_tensor_views_refuse_filters_torch_lacks():
    protocol = Protocol(32, (0.5,) * 3, (0.5,) * 3, interpolation="lanczos")
    assert not gpu_resize.supports(protocol)
    with pytest.raises(ValueError, match="lanczos"):
        gpu_resize.make_views(protocol, torch.zeros(1, 32, 32, 3, dtype=torch.uint8))


def test_tensor_views_through_evaluate_are_a_separate_variant(tiny_open_clip, image_folder, tmp_path):
    model = create_model(tiny_open_clip[0])
    data = get_dataset("imagefolder", root=image_folder)
    store = ResultsStore(tmp_path)
    base = dict(resolutions=(16, HR), batch_size=5, workers=0, progress=False)
    exact = evaluate(model, data, EvalConfig(**base), store)
    tensor = evaluate(model, data, EvalConfig(**base, tensor_views=True), store)
    assert all(r["variant"] == {} for r in exact)
    assert all(r["variant"] == {"views": gpu_resize.TENSOR_VIEWS} for r in tensor)
    assert {r["cell"] for r in exact}.isdisjoint(r["cell"] for r in tensor)
    # the HR view is made identically on both paths, so its predictions are identical
    pe, pt = store.load_predictions(exact[1]["cell"]), store.load_predictions(tensor[1]["cell"])
    assert np.array_equal(pe["topk"], pt["topk"])
