"""Hub dataset formats: CLIP_benchmark webdataset shards (wds:) and HF datasets (hfds:), built
here from the same images as an ImageFolder, evaluated end to end."""
import io
import pickle
import shutil
import tarfile

import numpy as np
import pytest

from lr0fm.datasets import DatasetError, fill_template, get_dataset
from lr0fm.evaluation import EvalConfig, evaluate
from lr0fm.identity import data_part
from lr0fm.models import create_model
from lr0fm.store import ResultsStore

from conftest import make_image

datasets = pytest.importorskip("datasets")

FOLDERS = ["cat", "dog", "red_car"]
CLASSNAMES = ["cat", "dog", "red car"]  # what ImageFolder makes of the folder names
FORMATS = ["PNG", "JPEG", "WEBP"]
SUFFIX = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
RESOLUTIONS = (16, 32, "hr")


def _encoded_images():
    """ImageFolder order (class folder, then file name): (folder, file name, label, bytes)."""
    rng = np.random.default_rng(0)
    out = []
    for label, (folder, color) in enumerate(zip(FOLDERS, [(255, 0, 0), (0, 255, 0), (0, 0, 255)])):
        for i in range(4):
            fmt = FORMATS[(label + i) % 3]
            buf = io.BytesIO()
            make_image(rng, (40 + 7 * i, 30 + 5 * i), color).save(buf, fmt)
            out.append((folder, f"{i}.{SUFFIX[fmt]}", label, buf.getvalue()))
    return out


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_wds(root, samples, split="test", shards=2, templates=("a photo of a {c}.",)):
    """CLIP_benchmark's layout: <split>/nshards.txt, <split>/<i>.tar of <key>.<ext> + <key>.cls."""
    (root / split).mkdir(parents=True)
    per = -(-len(samples) // shards)
    for s in range(shards):
        with tarfile.open(root / split / f"{s}.tar", "w") as tar:
            for j, (_, file_name, label, data) in enumerate(samples[s * per:(s + 1) * per], start=s * per):
                key = f"s{j:07d}"
                _add(tar, f"{key}.{file_name.rsplit('.', 1)[1]}", data)
                _add(tar, f"{key}.cls", str(label).encode())
    (root / split / "nshards.txt").write_text(f"{shards}\n")
    (root / "classnames.txt").write_text("\n".join(CLASSNAMES) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    return root


def hf_split(samples, **extra):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSNAMES),
                                  **{k: f for k, (f, _) in extra.items()}})
    rows = {"image": [{"bytes": data, "path": None} for *_, data in samples],
            "label": [label for _, _, label, _ in samples], **{k: v for k, (_, v) in extra.items()}}
    return datasets.Dataset.from_dict(rows, features=features)


def write_hfds(root, samples):
    datasets.DatasetDict({"test": hf_split(samples), "train": hf_split(samples[:3])}).save_to_disk(str(root))
    return root


@pytest.fixture(scope="module")
def tiny_model(tiny_open_clip):
    return create_model(tiny_open_clip[0])


@pytest.fixture()
def three_formats(tmp_path):
    """(image folder, wds folder, save_to_disk folder) holding the same 12 encoded images."""
    samples = _encoded_images()
    folder = tmp_path / "folder"
    for cls, file_name, _, data in samples:
        (folder / cls).mkdir(parents=True, exist_ok=True)
        (folder / cls / file_name).write_bytes(data)
    return folder, write_wds(tmp_path / "wds_tiny", samples), write_hfds(tmp_path / "hf_tiny", samples)


def _run(model, data, out, workers=0, **cfg):
    store = ResultsStore(out)
    records = evaluate(model, data, EvalConfig(resolutions=RESOLUTIONS, batch_size=5, workers=workers,
                                               progress=False, **cfg), store)
    return records, [store.load_predictions(r["cell"])["topk"] for r in records]


def strip_run(record):
    return {k: v for k, v in record.items() if k != "run"}


def test_imagefolder_wds_and_hfds_give_identical_predictions(tiny_model, three_formats, tmp_path):
    folder, wds_dir, hf_dir = three_formats
    ref_records, ref = _run(tiny_model, get_dataset("imagefolder", root=folder), tmp_path / "ref")
    wds = get_dataset(f"wds:{wds_dir}")
    hf = get_dataset(f"hfds:{hf_dir}", split="test")
    assert (wds.spec.key, wds.spec.name, wds.spec.split) == ("wds", "wds_tiny", "test")
    assert (hf.spec.key, hf.spec.name, hf.spec.classnames) == ("hfds", "hf_tiny", tuple(CLASSNAMES))
    assert wds.ids[:2] == ["s0000000", "s0000001"] and hf.ids[:2] == ["0", "1"]
    for data in (wds, hf):
        assert [l for _, l in data.samples] == [l for *_, l, _ in _encoded_images()]
        # the loader travels to DataLoader workers
        assert np.array_equal(np.asarray(pickle.loads(pickle.dumps(data.load))(data.samples[5][0])),
                              np.asarray(data.load_image(5)))
        records, preds = _run(tiny_model, data, tmp_path / data.spec.key, workers=2)
        assert [r["resolution"] for r in records] == list(RESOLUTIONS)
        for r, p, rr, rp in zip(records, preds, ref_records, ref):
            assert r["n_images"] == 12 and r["n_skipped"] == 0
            assert np.array_equal(p, rp), (data.spec.key, r["resolution"])
            assert r["top1"] == rr["top1"] and r["dataset"] == data.spec.name


def test_corrupt_members_are_skipped_and_counted(tiny_model, tmp_path):
    samples = _encoded_images()
    broken = list(samples)
    broken[4] = (*broken[4][:3], b"this is not an image")
    broken[9] = (*broken[9][:3], broken[9][3][:len(broken[9][3]) // 2])  # truncated
    wds = get_dataset(f"wds:{write_wds(tmp_path / 'wds', broken)}")
    hf = get_dataset(f"hfds:{write_hfds(tmp_path / 'hf', broken)}")
    for data, ids in ((wds, ["s0000004", "s0000009"]), (hf, ["4", "9"])):
        records, preds = _run(tiny_model, data, tmp_path / f"out-{data.spec.key}")
        for r in records:
            assert r["n_images"] == 10 and r["n_skipped"] == 2 and sorted(r["skipped_ids"]) == ids


def test_wds_classnames_and_templates_come_from_the_folder(three_formats, tmp_path):
    _, wds_dir, _ = three_formats
    data = get_dataset(f"wds:{wds_dir}")
    assert data.spec.classnames == tuple(CLASSNAMES)
    assert data.spec.templates == ("a photo of a {c}.",)
    assert fill_template(data.spec.templates[0], "red car") == "a photo of a red car."
    names = tmp_path / "names.txt"
    names.write_text("kitten\npuppy\nauto\n")
    given = get_dataset(f"wds:{wds_dir}", classnames=str(names), templates=["a {}"])
    assert given.spec.classnames == ("kitten", "puppy", "auto") and given.spec.templates == ("a {}",)
    names.write_text("one\ntwo\n")
    with pytest.raises(DatasetError, match="class index 2 but 2 class names"):
        get_dataset(f"wds:{wds_dir}", classnames=str(names))
    (wds_dir / "zeroshot_classification_templates.txt").write_text("no placeholder\n")
    with pytest.raises(DatasetError, match="placeholder"):
        get_dataset(f"wds:{wds_dir}")
    with pytest.raises(DatasetError, match="no split 'train'; choose one of test"):
        get_dataset(f"wds:{wds_dir}", split="train")


def test_wds_layout_errors_are_one_line(three_formats, tmp_path):
    _, wds_dir, _ = three_formats
    (wds_dir / "test" / "nshards.txt").write_text("3")
    with pytest.raises(DatasetError, match="lacks 1 of the 3 shards"):
        get_dataset(f"wds:{wds_dir}")
    (wds_dir / "test" / "nshards.txt").write_text("2")
    shard = wds_dir / "test" / "1.tar"
    shard.write_bytes(shard.read_bytes()[:1500])
    with pytest.raises(DatasetError, match="1.tar is truncated"):
        get_dataset(f"wds:{wds_dir}")
    with pytest.raises(DatasetError, match="neither a folder nor a hub repo id"):
        get_dataset(f"wds:{tmp_path}/nowhere")
    with pytest.raises(DatasetError, match="needs a source"):
        get_dataset("wds")


def test_hfds_columns_are_detected_and_can_be_overridden(tmp_path):
    samples = _encoded_images()[:6]
    plain = hf_split(samples, target=(datasets.Value("int64"), [1, 0, 1, 0, 1, 0]),
                     id=(datasets.Value("string"), [f"img-{i}" for i in range(6)]))
    plain.save_to_disk(str(tmp_path / "one"))
    data = get_dataset(f"hfds:{tmp_path / 'one'}")  # a single Dataset folder
    assert data.ids[0] == "img-0" and data.spec.options == {"image_column": "image", "label_column": "label"}
    assert [l for _, l in data.samples] == [0, 0, 0, 0, 1, 1]
    with pytest.raises(DatasetError, match="no class names; give --classnames"):
        get_dataset(f"hfds:{tmp_path / 'one'}", label_column="target")
    over = get_dataset(f"hfds:{tmp_path / 'one'}", label_column="target", classnames=["x", "y"])
    assert [l for _, l in over.samples] == [1, 0, 1, 0, 1, 0] and over.spec.classnames == ("x", "y")
    with pytest.raises(DatasetError, match="'nope' is not a column"):
        get_dataset(f"hfds:{tmp_path / 'one'}", image_column="nope")

    two = plain.add_column("thumb", [{"bytes": d, "path": None} for *_, d in samples]).cast_column(
        "thumb", datasets.Image())
    two.save_to_disk(str(tmp_path / "two"))
    with pytest.raises(DatasetError, match="several Image columns.*--image-column"):
        get_dataset(f"hfds:{tmp_path / 'two'}")
    thumb = get_dataset(f"hfds:{tmp_path / 'two'}", image_column="thumb")
    assert np.array_equal(np.asarray(thumb.load_image(2)), np.asarray(data.load_image(2)))
    datasets.DatasetDict({"test": plain}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DatasetError, match="no split 'validation'; choose one of test"):
        get_dataset(f"hfds:{tmp_path / 'dd'}", split="validation")


def test_cli_passes_hfds_columns(three_formats, tmp_path, tiny_open_clip, capsys):
    from lr0fm.cli import main
    _, wds_dir, hf_dir = three_formats
    base = ["--out", str(tmp_path / "res"), "eval", "--model", tiny_open_clip[0], "--resolutions", "16",
            "--workers", "0", "--no-progress"]
    assert main(base + ["--dataset", f"hfds:{hf_dir}", "--image-column", "image", "--label-column", "label"]) == 0
    record = ResultsStore(tmp_path / "res").records()[0]
    assert record["dataset"] == "hf_tiny" and record["identity"]["data"]["options"]["label_column"] == "label"
    assert main(base + ["--dataset", f"wds:{wds_dir}", "--image-column", "image"]) == 2
    assert "apply to hfds: datasets only" in capsys.readouterr().err


def _interrupting(load, after):
    calls = [0]

    def load_or_stop(ref):
        calls[0] += 1
        if calls[0] > after:
            raise KeyboardInterrupt("stopped")
        return load(ref)
    return load_or_stop


@pytest.mark.parametrize("prefix", ["wds", "hfds"])
def test_interrupted_run_resumes_to_identical_records(tiny_model, three_formats, tmp_path, prefix, caplog):
    _, wds_dir, hf_dir = three_formats
    source = wds_dir if prefix == "wds" else hf_dir
    ref_records, ref = _run(tiny_model, get_dataset(f"{prefix}:{source}"), tmp_path / "ref")
    data = get_dataset(f"{prefix}:{source}")
    load = data.load
    data.load = _interrupting(load, after=7)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_model, data, tmp_path / "out", checkpoint_every=2)
    assert list((tmp_path / "out" / "partial").glob("*.npz")) and not ResultsStore(tmp_path / "out").records()
    data.load = load
    with caplog.at_level("INFO", logger="lr0fm"):
        records, preds = _run(tiny_model, data, tmp_path / "out", checkpoint_every=2)
    assert "resuming" in caplog.text
    assert [strip_run(r) for r in records] == [strip_run(r) for r in ref_records]
    assert all(np.array_equal(a, b) for a, b in zip(preds, ref))


def test_identity_follows_content_not_the_folder(three_formats, tmp_path):
    _, wds_dir, hf_dir = three_formats
    for prefix, source in (("wds", wds_dir), ("hfds", hf_dir)):
        moved = shutil.copytree(source, tmp_path / "moved" / source.name)
        a, b = get_dataset(f"{prefix}:{source}"), get_dataset(f"{prefix}:{moved}")
        assert data_part(a) == data_part(b) and "source" not in a.spec.options
    before = data_part(get_dataset(f"wds:{wds_dir}"))["samples"]
    with tarfile.open(wds_dir / "test" / "0.tar", "a") as tar:  # one more sample: new listing, new content
        _add(tar, "zz.cls", b"0")
        _add(tar, "zz.png", _encoded_images()[0][3])
    changed = get_dataset(f"wds:{wds_dir}")
    assert len(changed) == 13 and changed.ids[6] == "zz" and data_part(changed)["samples"] != before


def test_wds_from_a_cached_hub_snapshot(three_formats, tmp_path, monkeypatch):
    """wds:OWNER/REPO reads huggingface_hub's cache (offline here): the same predictions' data,
    the repo recorded as the source."""
    from huggingface_hub import constants
    _, wds_dir, _ = three_formats
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_cache = tmp_path / "hub" / "datasets--lr0fm-test--wds_tiny"
    shutil.copytree(wds_dir, repo_cache / "snapshots" / commit)
    (repo_cache / "refs").mkdir()
    (repo_cache / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    hub = get_dataset("wds:lr0fm-test/wds_tiny")
    local = get_dataset(f"wds:{wds_dir}")
    assert hub.spec.name == "wds_tiny" and hub.spec.options == {"source": "lr0fm-test/wds_tiny"}
    assert hub.samples == local.samples and data_part(hub)["samples"] == data_part(local)["samples"]


@pytest.mark.parametrize("prefix", ["wds", "hfds"])
def test_uncached_hub_repo_offline_is_one_line(prefix):
    """(conftest sets HF_HUB_OFFLINE=1 before huggingface_hub is imported)"""
    with pytest.raises(DatasetError) as e:
        get_dataset(f"{prefix}:lr0fm-test/not-cached-anywhere")
    message = str(e.value)
    assert "\n" not in message and "lr0fm-test/not-cached-anywhere" in message
    assert "is not in the HF cache" in message
    assert ("hf download lr0fm-test/not-cached-anywhere --repo-type dataset --include 'test/*'" in message
            if prefix == "wds" else "HF_HUB_OFFLINE=0" in message)
