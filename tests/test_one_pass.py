"""One decode for many models, views made on the device equal to PIL's, JPEGs decoded by
torchvision: each checked on CPU against the plain single-model PIL path."""
from pathlib import Path

import numpy as np
import pytest

from lr0fm.datasets import get_dataset
from lr0fm.evaluation import EvalConfig, evaluate
from lr0fm.models import create_model
from lr0fm.store import ResultsStore
from lr0fm.runner import Group, run_groups

from conftest import make_image

TUX = Path("/usr/share/tuxpaint/stamps")


def strip_run(record):
    return {k: v for k, v in record.items() if k != "run"}


def same_predictions(store_a, store_b, records_a, records_b):
    assert [r["cell"] for r in records_a] == [r["cell"] for r in records_b]
    for a, b in zip(records_a, records_b, strict=True):
        pa, pb = store_a.load_predictions(a["cell"]), store_b.load_predictions(b["cell"])
        assert all(np.array_equal(pa[k], pb[k]) for k in pa)


class CountingLoader:
    """Wraps a dataset's loader to count decodes (workers=0: one process)."""

    def __init__(self, load):
        self.load, self.calls = load, 0

    def __call__(self, ref):
        self.calls += 1
        return self.load(ref)


def test_many_models_one_decode_records_identical_to_separate_runs(tiny_open_clip, tiny_hf_clip, image_folder,
                                                                   tmp_path):
    specs = [tiny_open_clip[0], tiny_hf_clip[0]]
    options = dict(workers=0, progress=False, batch_size=5)
    res = [16, 32, "hr"]
    data = get_dataset("imagefolder", root=image_folder)
    counter = CountingLoader(data.load)
    data.load = counter
    together = ResultsStore(tmp_path / "together")
    records = run_groups([Group(s, data) for s in specs], res, together, **options)
    assert counter.calls == len(data)  # every image decoded once for both models
    assert {r["run"]["models_in_pass"] for r in records} == {2}
    apart = ResultsStore(tmp_path / "apart")
    separate = [r for s in specs
                for r in evaluate(create_model(s), get_dataset("imagefolder", root=image_folder),
                                  EvalConfig(resolutions=res, **options), apart)]
    assert [strip_run(r) for r in records] == [strip_run(r) for r in separate]
    same_predictions(together, apart, records, separate)


def test_many_models_with_other_view_pixels_and_resume(tiny_open_clip, image_folder, tmp_path):
    """A model with other view pixels (squash) is its own view group; a model already finished is
    skipped while the other runs."""
    from lr0fm.models import choose_protocol
    options = dict(workers=0, progress=False, batch_size=4)
    data = get_dataset("imagefolder", root=image_folder)
    store = ResultsStore(tmp_path / "s")
    first = evaluate(create_model(tiny_open_clip[0]), data, EvalConfig(resolutions=(16, "hr"), **options), store)
    records = run_groups([Group(tiny_open_clip[0], data)], [16, "hr"], store, protocol={"resize_mode": "squash"},
                         **options) + first
    squash = choose_protocol(create_model(tiny_open_clip[0]), resize_mode="squash")
    alone = ResultsStore(tmp_path / "alone")
    ref = evaluate(squash, data, EvalConfig(resolutions=(16, "hr"), **options), alone)
    assert [strip_run(r) for r in records[:2]] == [strip_run(r) for r in ref]
    assert len(store.records()) == 4


@pytest.mark.skipif(not TUX.is_dir(), reason="Debian tuxpaint-stamps-default not installed (make test installs it)")
@pytest.mark.parametrize("mode", ["shortest", "squash"])
def test_device_views_on_cpu_equal_pil_on_odd_shaped_photos(tiny_open_clip, tmp_path, mode):
    from lr0fm.models import choose_protocol
    model = choose_protocol(create_model(tiny_open_clip[0]), resize_mode=mode)
    data = get_dataset("tuxpaint").subset(range(0, 230, 4))
    shapes = {data.load_image(i).size for i in range(0, len(data), 5)}
    assert len({round(w / h, 1) for w, h in shapes}) > 3  # odd aspect ratios
    base = dict(resolutions=(16, 32, 64, 128, "hr"), workers=0, progress=False)
    pil_store, dev_store = ResultsStore(tmp_path / "pil"), ResultsStore(tmp_path / "dev")
    pil = evaluate(model, data, EvalConfig(**base, views="pil"), pil_store)
    dev = evaluate(model, data, EvalConfig(**base, views="device"), dev_store)
    assert [r["run"]["views"] for r in dev] == ["device"] * 5 and [r["run"]["views"] for r in pil] == ["pil"] * 5
    # the same protocol, so the same cells (the views are recorded, not part of the identity)
    assert [strip_run(r) for r in pil] == [strip_run(r) for r in dev]
    same_predictions(pil_store, dev_store, pil, dev)


def test_decoder_device_on_cpu_reads_jpeg_bytes_and_is_part_of_the_identity(tiny_open_clip, tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "jpegs"
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            make_image(rng, (50 + 9 * i, 41 + 3 * i)).save(root / c / f"{i}.jpg", quality=90)
    (root / "a" / "grey.jpg").parent.mkdir(exist_ok=True)
    make_image(rng, (44, 60)).convert("L").save(root / "a" / "grey.jpg")
    (root / "b" / "bad.jpg").write_bytes(b"\xff\xd8\xff" + b"not really a jpeg")
    model = create_model(tiny_open_clip[0])
    data = get_dataset("imagefolder", root=root)
    base = dict(resolutions=(16, "hr"), workers=0, progress=False, views="device")
    store = ResultsStore(tmp_path / "res")
    pil = evaluate(model, data, EvalConfig(**base, decoder="pil"), store)
    dev = evaluate(model, data, EvalConfig(**base, decoder="device"), store)
    assert pil[0]["evaluation"] != dev[0]["evaluation"]
    assert dev[0]["identity"]["protocol"]["decoder"] == "torchvision-cpu"
    assert pil[0]["identity"]["protocol"]["decoder"] == "pil"
    for a, b in zip(pil, dev):
        assert a["n_skipped"] == b["n_skipped"] == 1 and b["skipped_ids"] == ["b/bad.jpg"]
        pa, pb = store.load_predictions(a["cell"])["topk"], store.load_predictions(b["cell"])["topk"]
        # libjpeg-turbo on both sides here; on a GPU nvjpeg may differ by a few levels
        assert (pa[:, 0] == pb[:, 0]).mean() >= 12 / 13


def test_views_and_decoder_options_are_checked(tiny_open_clip, image_folder, tmp_path):
    from lr0fm.errors import InputError
    from lr0fm.protocol import ProtocolError
    with pytest.raises(InputError, match="unknown"):
        EvalConfig(views="gpu")
    model = create_model(tiny_open_clip[0])
    data = get_dataset("imagefolder", root=image_folder)
    with pytest.raises(ProtocolError, match="--decoder device needs --views device"):
        evaluate(model, data, EvalConfig(resolutions=("hr",), workers=0, progress=False, views="pil",
                                         decoder="device"), ResultsStore(tmp_path))
