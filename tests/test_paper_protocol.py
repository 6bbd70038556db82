"""--protocol paper reproduces the authors' transforms pixel for pixel; the choice and the
timm-style overrides are part of the identity."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from lr0fm.catalog import model_catalog, paper_protocol
from lr0fm.datasets import get_dataset
from lr0fm.evaluation import EvalConfig, plan
from lr0fm.models import choose_protocol, create_model
from lr0fm.protocol import ProtocolError
from lr0fm.records import protocol_of

from conftest import make_image

OPENCLIP_ROWS = sorted(n for n, e in paper_protocol().items() if e["protocol"] == "OpenCLIP")


def authors_openclip_chain(r, S):
    """CLIP_benchmark/data/__init__.py (their repo) for --model_name openclip: squash, no crop,
    RGB conversion after the resizes (their ToTensor/normalise left out: lr0fm normalises on the device)."""
    steps = [transforms.Resize(size=(S, S), interpolation=InterpolationMode.BICUBIC), lambda im: im.convert("RGB")]
    if r != "hr":
        steps.insert(0, transforms.Resize(size=(r, r), interpolation=InterpolationMode.BICUBIC))
    return transforms.Compose(steps)


@pytest.fixture()
def model_as(tiny_open_clip):
    def build(catalog_name):
        model = create_model(tiny_open_clip[0])
        model.info.extra["catalog_name"] = catalog_name
        return model
    return build


@pytest.mark.parametrize("name", OPENCLIP_ROWS)
def test_paper_protocol_of_openclip_rows_is_the_authors_squash_chain(name, model_as):
    model = choose_protocol(model_as(name), "paper")
    protocol = model.protocol()
    assert protocol.mode == "squash" and protocol.source.startswith("paper") and protocol.rgb_last
    S = protocol.input_size
    rng = np.random.default_rng(0)
    images = [make_image(rng, size) for size in ((97, 41), (33, 120), (64, 64))]
    images.append(images[0].convert("P", palette=Image.ADAPTIVE))  # palette: resized nearest, as theirs
    images.append(images[1].convert("RGBA"))
    for image in images:
        for r in (16, 32, 128, "hr"):
            theirs = np.asarray(authors_openclip_chain(r, S)(image))
            if r == "hr" and protocol.hr_via:  # their HR column went through a 224 px down step
                theirs = np.asarray(authors_openclip_chain(protocol.hr_via, S)(image))
            assert np.array_equal(np.asarray(protocol.view(image, r)), theirs), (name, image.mode, r)


def test_native_openclip_rows_differ_from_the_paper_where_the_audit_says(model_as):
    name = "openclip-vit-b-16-datacomp-xl"
    assert model_catalog()[name]["resize_mode"] == "shortest" and paper_protocol()[name]["paper_resize_mode"] == "squash"
    native = model_as(name)
    paper = choose_protocol(model_as(name), "paper")
    assert native.protocol().describe() != paper.protocol().describe()


def test_protocol_choice_and_overrides_change_the_identity(model_as, image_folder):
    data = get_dataset("imagefolder", root=image_folder)
    cfg = EvalConfig(resolutions=(16, "hr"), workers=0, progress=False)
    name = "openclip-vit-b-16-datacomp-xl"
    ids = {}
    for label, kw in {"native": {}, "paper": {"protocol": "paper"}, "squash": {"resize_mode": "squash"},
                      "hr_via": {"hr_via": 32}, "rgb_last": {"rgb_order": "last"},
                      "bilinear": {"interpolation": "bilinear"}}.items():
        ids[label] = plan(choose_protocol(model_as(name), **kw), data, cfg).evaluation
    assert len({ev.id for ev in ids.values()}) == len(ids)
    assert ids["squash"].protocol["source"] == "native+override"
    assert ids["paper"].protocol["source"].startswith("paper")


def test_paper_protocol_needs_a_paper_backbone(tiny_open_clip):
    with pytest.raises(ProtocolError, match="not one of the paper's backbones.*paper:FAMILY"):
        choose_protocol(create_model(tiny_open_clip[0]), "paper")
    with pytest.raises(ProtocolError, match="--protocol 'papr' unknown"):
        choose_protocol(create_model(tiny_open_clip[0]), "papr")


def test_cli_protocol_flags_reach_the_records(tiny_open_clip, image_folder, tmp_path):
    from lr0fm.cli import main
    from lr0fm.store import ResultsStore

    args = ["--model", tiny_open_clip[0], "--dataset", "imagefolder", "--data-root", str(image_folder),
            "--resolutions", "16,hr", "--workers", "0", "--no-progress"]
    assert main(["--out", str(tmp_path), "eval", *args]) == 0
    assert main(["--out", str(tmp_path), "eval", *args, "--resize-mode", "squash", "--interpolation", "bilinear"]) == 0
    records = ResultsStore(tmp_path).records()
    assert len(records) == 4 and len({r["evaluation"] for r in records}) == 2
    modes = {(p["mode"], p["interpolation"], p["source"]) for p in map(protocol_of, records)}
    assert modes == {("shortest", "bicubic", "native"), ("squash", "bilinear", "native+override")}


def test_compare_flags_rows_whose_protocol_is_not_the_papers(tmp_path):
    """The authors squashed their OpenCLIP rows: a native (shortest) run of one is flagged, a run
    with the paper's protocol is not."""
    from fake_records import put_fake
    from lr0fm.report.compare import compare
    from lr0fm.store import ResultsStore

    name = "openclip-vit-b-16-datacomp-xl"
    for mode, out in (("shortest", "native"), ("squash", "paper")):
        store = ResultsStore(tmp_path / out)
        for r, acc in ((16, 0.2), ("hr", 0.6)):
            put_fake(store, name, "dtd", r, acc, mode=mode, num_classes=47)
        flagged = [d for d in compare(store.records()).differences if d["kind"] == "protocol"]
        if mode == "shortest":
            assert len(flagged) == 1 and "the paper's for openclip-vit-b-16-datacomp-xl is squash 224 bicubic" \
                in flagged[0]["message"] and "CLIP_benchmark/data/__init__.py" in flagged[0]["message"]
        else:
            assert flagged == []


def _rgba_and_palette_images():
    rng = np.random.default_rng(3)
    rgba = make_image(rng, (97, 41)).convert("RGBA")
    rgba.putalpha(Image.fromarray((np.arange(97 * 41, dtype=np.uint32).reshape(41, 97) % 256).astype(np.uint8)))
    palette = make_image(rng, (33, 120)).convert("P", palette=Image.ADAPTIVE)
    return [rgba, palette, make_image(rng, (64, 64)).convert("L")]


@pytest.mark.parametrize("family", ["OpenCLIP", "openclip"])
def test_paper_family_protocol_on_a_non_catalog_model_is_the_authors_chain(tiny_open_clip, family):
    """A user's own open_clip model (no catalog row) run as the authors ran OpenCLIP: squash,
    resize in the file's own mode, RGB after; its own input size; pixel for pixel on RGBA,
    palette and grey images."""
    model = choose_protocol(create_model(tiny_open_clip[0]), f"paper:{family}")
    protocol = model.protocol()
    assert protocol.source == "paper:OpenCLIP" and protocol.mode == "squash" and protocol.rgb_last
    S = protocol.input_size
    assert S == create_model(tiny_open_clip[0]).protocol().input_size  # the model's own size
    assert protocol.hr_via == (None if S == 224 else 224)  # the family's HR route for other sizes
    for image in _rgba_and_palette_images():
        for r in (16, 32, "hr"):
            theirs = np.asarray(authors_openclip_chain(protocol.hr_via if r == "hr" and protocol.hr_via else r, S)(image))
            assert np.array_equal(np.asarray(protocol.view(image, r)), theirs), (image.mode, r)
    native = create_model(tiny_open_clip[0]).protocol()
    rgba = _rgba_and_palette_images()[0]
    assert not np.array_equal(np.asarray(native.view(rgba, 16)), np.asarray(protocol.view(rgba, 16)))


def test_paper_family_unknown_is_one_line_listing_the_families(tiny_open_clip):
    with pytest.raises(ProtocolError, match=r"paper:Foo: no such family.*CLIPA.*OpenCLIP.*SigLIP"):
        choose_protocol(create_model(tiny_open_clip[0]), "paper:Foo")


def test_rgb_order_and_hr_via_are_public_protocol_options(tiny_open_clip, image_folder, tmp_path):
    """--rgb-order last and --hr-via reproduce the paper family's chain by hand; the CLI, a sweep
    file and the API reach the same cells."""
    from lr0fm import evaluate
    from lr0fm.cli import main
    from lr0fm.records import protocol_of
    from lr0fm.store import ResultsStore

    by_hand = choose_protocol(create_model(tiny_open_clip[0]), resize_mode="squash", rgb_order="last", hr_via=224)
    family = choose_protocol(create_model(tiny_open_clip[0]), "paper:OpenCLIP").protocol()
    for image in _rgba_and_palette_images():
        for r in (16, "hr"):
            assert np.array_equal(np.asarray(by_hand.protocol().view(image, r)), np.asarray(family.view(image, r)))
    args = ["--model", tiny_open_clip[0], "--dataset", "imagefolder", "--data-root", str(image_folder),
            "--resolutions", "16,hr", "--workers", "0", "--no-progress"]
    assert main(["--out", str(tmp_path / "cli"), "eval", *args, "--protocol", "paper:openclip"]) == 0
    assert main(["--out", str(tmp_path / "cli"), "eval", *args, "--resize-mode", "squash", "--rgb-order", "last",
                 "--hr-via", "224"]) == 0
    records = ResultsStore(tmp_path / "cli").records()
    sources = {protocol_of(r)["source"] for r in records}
    assert sources == {"paper:OpenCLIP", "native+override"}
    assert all(protocol_of(r)["rgb_last"] and protocol_of(r)["mode"] == "squash" for r in records)
    config = tmp_path / "sweep.yaml"
    config.write_text(f"models: [{tiny_open_clip[0]}]\ndatasets: [{{key: imagefolder, data_root: {image_folder}}}]\n"
                      "resolutions: [16, hr]\nprotocol: paper:OpenCLIP\nworkers: 0\nprogress: false\n")
    assert main(["--out", str(tmp_path / "cli"), "sweep", str(config)]) == 0
    assert len(ResultsStore(tmp_path / "cli").records()) == 4  # the sweep found the CLI's cells done
    data = get_dataset("imagefolder", root=image_folder)
    api = evaluate(create_model(tiny_open_clip[0]), data, [16, "hr"], tmp_path / "cli", protocol="paper:OpenCLIP",
                   workers=0, progress=False)
    assert {r["cell"] for r in api} <= {r["cell"] for r in records}


def test_gallery_views_of_a_paper_protocol_record_are_the_evaluated_views(tiny_open_clip, tmp_path):
    """The semantic-error gallery remakes views from a record: for a paper-protocol record (RGB
    after resizing, HR through 224 px) they are the pixels the model was fed, on RGBA and palette
    images too."""
    from lr0fm.analysis.predictions import protocol_from
    from lr0fm.cli import main
    from lr0fm.records import protocol_of
    from lr0fm.store import ResultsStore

    folder = tmp_path / "images"
    for i, image in enumerate(_rgba_and_palette_images()):
        (folder / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        image.save(folder / f"class{i % 2}" / f"{i}.png")
    assert main(["--out", str(tmp_path / "out"), "eval", "--model", tiny_open_clip[0], "--dataset", "imagefolder",
                 "--data-root", str(folder), "--resolutions", "16,hr", "--workers", "0", "--no-progress",
                 "--protocol", "paper:OpenCLIP"]) == 0
    evaluated = choose_protocol(create_model(tiny_open_clip[0]), "paper:OpenCLIP").protocol()
    records = ResultsStore(tmp_path / "out").records()
    assert len(records) == 2
    data = get_dataset("imagefolder", root=folder)
    for record in records:
        remade, r = protocol_from(protocol_of(record)), record["resolution"]
        assert remade.rgb_last and remade.hr_via == evaluated.hr_via
        for i in range(len(data)):
            image = data.load_image(i)
            assert np.array_equal(np.asarray(remade.view(image, r)), np.asarray(evaluated.view(image, r))), (i, r)


def test_device_views_of_a_paper_protocol_are_the_authors_pixels(tiny_open_clip, tmp_path):
    """--views device makes views from the RGB original; a protocol that resizes before RGB
    (the authors' order) gets the worker's PIL views for palette/RGBA images instead, so device and
    PIL views give the same predictions, image by image."""
    from lr0fm.evaluation.loading import _Work
    from lr0fm import tensor_views

    folder = tmp_path / "images"
    for i, image in enumerate(_rgba_and_palette_images() * 2):
        (folder / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        image.save(folder / f"class{i % 2}" / f"{i}.png")
    data = get_dataset("imagefolder", root=folder)
    protocol = choose_protocol(create_model(tiny_open_clip[0]), "paper:OpenCLIP").protocol((16, 32, "hr"))
    work = _Work([], True, False, [(0, protocol, list(protocol.resolutions))])
    for i in range(len(data)):
        payload = work(data, i)
        sent = torch.from_numpy(payload.views[0]) if 0 in payload.views else torch.from_numpy(payload.original)
        made = tensor_views.make_views(protocol, [sent], list(protocol.resolutions))[0].numpy()
        assert np.array_equal(made, protocol.views_uint8(data.load_image(i))), data.sample_id(i)

    from lr0fm.evaluation import EvalConfig, evaluate
    from lr0fm.store import ResultsStore
    model = choose_protocol(create_model(tiny_open_clip[0]), "paper:OpenCLIP")
    preds = {}
    for views in ("pil", "device"):
        cfg = EvalConfig(resolutions=(16, "hr"), workers=0, progress=False, views=views)
        store = ResultsStore(tmp_path / views)
        records = evaluate(model, data, cfg, store)
        preds[views] = [store.load_predictions(r["cell"])["topk"].tolist() for r in records]
    assert preds["pil"] == preds["device"]
