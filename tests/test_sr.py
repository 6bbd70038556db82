"""SR baselines: bicubic == the plain protocol; randomly initialised spandrel networks saved in their
original checkpoint formats and loaded back through ``sr_view_fn``; ``lr0fm eval --sr``."""
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_image
from lr0fm.cli import main
from lr0fm.errors import InputError
from lr0fm.protocol import HR, Protocol
from lr0fm.records import variant_of
from lr0fm.sr import sr_view_fn
from lr0fm.store import ResultsStore

MEAN = STD = (0.5, 0.5, 0.5)


@pytest.fixture(scope="module")
def esrgan_file(tmp_path_factory):
    """A tiny x2 ESRGAN (RRDBNet) saved as a plain state dict with the original (old-arch) key names."""
    from spandrel.architectures.ESRGAN import ESRGAN
    torch.manual_seed(0)
    net = ESRGAN(num_filters=8, num_blocks=1, scale=2)
    path = tmp_path_factory.mktemp("sr") / "tiny_esrgan_x2.pth"
    torch.save(net.state_dict(), path)
    assert "model.1.sub.0.RDB1.conv1.0.weight" in net.state_dict()  # the original ESRGAN layout
    return path


@pytest.fixture(scope="module")
def swinir_file(tmp_path_factory):
    """A tiny x2 SwinIR saved like the official release: {'params': state_dict}."""
    from spandrel.architectures.SwinIR import SwinIR
    torch.manual_seed(0)
    net = SwinIR(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, mlp_ratio=2,
                 upscale=2, upsampler="pixelshuffle")
    path = tmp_path_factory.mktemp("sr") / "tiny_swinir_x2.pth"
    torch.save({"params": net.state_dict()}, path)
    return path


def _image(size=(53, 41)):
    return make_image(np.random.default_rng(1), size, color=(200, 40, 90))


@pytest.mark.parametrize("mode", ["shortest", "squash"])
def test_bicubic_is_the_plain_protocol(mode):
    protocol = Protocol(input_size=48, mean=MEAN, std=STD, mode=mode, resolutions=(8, 16, 32, HR))
    view_fn, sr_id = sr_view_fn(protocol, "bicubic")
    assert sr_id == "bicubic"
    for size in [(53, 41), (30, 70)]:
        img = _image(size)
        np.testing.assert_array_equal(view_fn(img), protocol.views_uint8(img))


def test_bicubic_upsamples_bicubically_under_other_protocols():
    # A bilinear protocol: the down step stays the protocol's, the up step is bicubic.
    protocol = Protocol(input_size=48, mean=MEAN, std=STD, mode="squash", interpolation="bilinear",
                        resolutions=(16, HR))
    img = _image()
    views = sr_view_fn(protocol, "bicubic")[0](img)
    lr = img.resize((16, 16), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(views[0], np.asarray(lr.resize((48, 48), Image.Resampling.BICUBIC)))
    np.testing.assert_array_equal(views[1], protocol.views_uint8(img)[1])


@pytest.mark.parametrize("fixture, arch", [("esrgan_file", "ESRGAN"), ("swinir_file", "SwinIR")])
def test_spandrel_weights(fixture, arch, request):
    import hashlib

    import spandrel
    path = request.getfixturevalue(fixture)
    protocol = Protocol(input_size=40, mean=MEAN, std=STD, mode="shortest", resolutions=(8, 12, HR))
    view_fn, sr_id = sr_view_fn(protocol, str(path))
    assert sr_id == f"spandrel:{arch}:{hashlib.sha256(path.read_bytes()).hexdigest()[:32]}"
    assert view_fn.upsampler.scale == 2
    img = _image()
    views = view_fn(img)
    assert views.shape == (3, 40, 40, 3) and views.dtype == np.uint8
    np.testing.assert_array_equal(views[2], protocol.views_uint8(img, [HR])[0])  # HR untouched

    # Each LR view is the network's output on the LR image, then the protocol's resize to S.
    net = spandrel.ModelLoader().load_from_file(path).eval()
    for j, r in enumerate((8, 12)):
        lr = protocol.lr_pil(img, r)
        x = torch.from_numpy(np.asarray(lr).copy()).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            y = net(x)
        assert y.shape[-2:] == (2 * lr.size[1], 2 * lr.size[0])
        sr = Image.fromarray((y[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
        np.testing.assert_array_equal(views[j], np.asarray(protocol.finish(sr)))
    # a random network is not an identity: the SR views differ from the bicubic baseline
    assert not np.array_equal(views[:2], sr_view_fn(protocol, "bicubic")[0](img)[:2])


def test_pickles_without_the_network_and_subsets_resolutions(esrgan_file):
    protocol = Protocol(input_size=32, mean=MEAN, std=STD, resolutions=(8, 16, HR))
    view_fn, _ = sr_view_fn(protocol, str(esrgan_file))
    img = _image()
    expected = view_fn(img)
    blob = pickle.dumps(view_fn)
    assert len(blob) < esrgan_file.stat().st_size  # the loaded network is not shipped to workers
    np.testing.assert_array_equal(pickle.loads(blob)(img), expected)
    np.testing.assert_array_equal(view_fn.with_resolutions([16, HR])(img), expected[1:])


def test_bad_sr_specs(tmp_path):
    protocol = Protocol(input_size=32, mean=MEAN, std=STD)
    with pytest.raises(InputError, match="neither 'bicubic' nor an existing weights file"):
        sr_view_fn(protocol, "esrgan-please")
    with pytest.raises(InputError, match="neither 'bicubic' nor an existing weights file"):
        sr_view_fn(protocol, str(tmp_path / "missing.pth"))
    unknown = tmp_path / "unknown.pth"
    torch.save({"some.layer.weight": torch.zeros(3, 3)}, unknown)
    with pytest.raises(InputError, match="does not recognise"):
        sr_view_fn(protocol, str(unknown))
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(InputError, match="cannot be read"):
        sr_view_fn(protocol, str(garbage))
    other = tmp_path / "weights.onnx"
    other.write_bytes(b"\0" * 16)
    with pytest.raises(InputError, match="cannot be read"):
        sr_view_fn(protocol, str(other))


def _eval(out, spec, folder, *extra):
    return main(["--out", str(out), "eval", "--model", spec, "--dataset", "imagefolder", "--data-root", str(folder),
                 "--no-progress", "--batch-size", "4", *extra])


def test_cli_eval_with_sr(tiny_open_clip, image_folder, esrgan_file, tmp_path, capsys):
    spec = tiny_open_clip[0]
    out = tmp_path / "res"
    # first only 16 px, then more: the second run computes just the missing cells with SR views
    assert _eval(out, spec, image_folder, "--sr", str(esrgan_file), "-r", "16", "--workers", "0") == 0
    assert _eval(out, spec, image_folder, "--sr", str(esrgan_file), "-r", "16,32,hr", "--workers", "0") == 0
    records = ResultsStore(out).records()
    assert sorted(str(r["resolution"]) for r in records) == ["16", "32", "hr"]
    sr_id = variant_of(records[0])["sr"]
    assert sr_id.startswith("spandrel:ESRGAN:") and all(variant_of(r) == {"sr": sr_id} for r in records)
    assert all(r["n_images"] == 12 for r in records)

    capsys.readouterr()
    assert _eval(out, spec, image_folder, "--sr", "nope", "--workers", "0") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lr0fm: error: --sr 'nope'") and "\n" not in err


@pytest.mark.slow
def test_cli_sr_in_workers_and_bicubic_baseline(tiny_open_clip, image_folder, esrgan_file, tmp_path):
    spec = tiny_open_clip[0]
    out, out_w = tmp_path / "res", tmp_path / "res_workers"
    assert _eval(out, spec, image_folder, "--sr", str(esrgan_file), "-r", "16,hr", "--workers", "0") == 0
    # DataLoader workers (the SR network loaded lazily in each worker, on CPU) give the same predictions
    assert _eval(out_w, spec, image_folder, "--sr", str(esrgan_file), "-r", "16,hr", "--workers", "2") == 0
    store, store_w = ResultsStore(out), ResultsStore(out_w)
    assert len(store.records()) == len(store_w.records()) == 2
    for r, rw in zip(store.records(), store_w.records(), strict=True):
        assert r["cell"] == rw["cell"]
        np.testing.assert_array_equal(store.load_predictions(r["cell"])["topk"],
                                      store_w.load_predictions(rw["cell"])["topk"])

    # the bicubic baseline is recorded as its own variant, with the plain run's accuracies
    assert _eval(out, spec, image_folder, "--sr", "bicubic", "-r", "16,hr", "--workers", "0") == 0
    assert _eval(out, spec, image_folder, "-r", "16,hr", "--workers", "0") == 0
    by_variant = {}
    for r in ResultsStore(out).records():
        by_variant.setdefault(json.dumps(variant_of(r), sort_keys=True), {})[str(r["resolution"])] = r["top1"]
    assert by_variant['{"sr": "bicubic"}'] == by_variant["{}"]
