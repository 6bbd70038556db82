"""The paper's datasets from their hub copies (download=True): built here as hand-made snapshots
in an offline HF cache (webdataset) or save_to_disk folders (HF datasets), read under the paper
dataset's key, class names and templates, with the copy recorded and flagged by compare."""
import dataclasses
import io
import json
import shutil
import tarfile

import numpy as np
import pytest

from lr0fm.datasets import DatasetError, get_dataset
from lr0fm.datasets import paper
from lr0fm.datasets.base import packaged_text
from lr0fm.datasets.paper import IncompleteDatasetWarning, hub_copy
from lr0fm.records import split_of
from lr0fm.report.compare import compare
from lr0fm.store import ResultsStore

from conftest import make_image
from test_hub_datasets import _add

COMMIT = "0123456789abcdef0123456789abcdef01234567"
DTD = packaged_text("dtd", "classnames")


def _png(rng, color) -> bytes:
    buf = io.BytesIO()
    make_image(rng, (36, 28), color).save(buf, "PNG")
    return buf.getvalue()


def write_wds_copy(folder, classnames, labels, split="test"):
    """A CLIP_benchmark webdataset copy: one shard of PNGs with hub label indices, its own names and
    templates (which the paper dataset must not take)."""
    rng = np.random.default_rng(0)
    (folder / split).mkdir(parents=True)
    with tarfile.open(folder / split / "0.tar", "w") as tar:
        for j, label in enumerate(labels):
            _add(tar, f"s{j:07d}.png", _png(rng, (20 * label % 255, 90, 160)))
            _add(tar, f"s{j:07d}.cls", str(label).encode())
    (folder / split / "nshards.txt").write_text("1\n")
    (folder / "classnames.txt").write_text("\n".join(classnames) + "\n")
    (folder / "zeroshot_classification_templates.txt").write_text("a hub template of {c}.\n")
    return folder


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """put(key, classnames, labels): that key's catalog hub repo as an offline HF cache snapshot."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def put(key, classnames, labels):
        source, entry = hub_copy(key)
        assert source.startswith("wds:")
        repo_cache = tmp_path / "hub" / f"datasets--{entry['repo'].replace('/', '--')}"
        write_wds_copy(tmp_path / "made" / key, classnames, labels, entry["split"])
        shutil.copytree(tmp_path / "made" / key, repo_cache / "snapshots" / COMMIT)
        (repo_cache / "refs").mkdir()
        (repo_cache / "refs" / "main").write_text(COMMIT)
        return entry
    return put


def _dtd_from_hub(root):
    with pytest.warns(IncompleteDatasetWarning, match="1,880"):  # a handful of images, not the paper's 1,880
        return get_dataset("dtd", root=root, download=True)


@pytest.mark.parametrize("order", ["same", "permuted"])
def test_dtd_download_reads_the_hub_copy_under_its_own_key(hub_cache, tmp_path, order):
    hub_names = list(DTD) if order == "same" else list(reversed(DTD))
    if order == "permuted":  # written otherwise, matched by normalised name
        hub_names = [n.replace("-", " ").title() for n in hub_names]
    hub_labels = [0, 5, 46, 12, 5, 30]
    hub_cache("dtd", hub_names, hub_labels)
    root = tmp_path / "empty"
    with pytest.raises(DatasetError) as missing:  # without download nothing changes
        get_dataset("dtd", root=root)
    assert "\n" not in str(missing.value) and "download=True" in str(missing.value)
    assert "clip-benchmark/wds_vtab-dtd" in str(missing.value)

    data = _dtd_from_hub(root)
    spec = data.spec
    assert (spec.key, spec.name, spec.split) == ("dtd", "dtd", "test")
    assert spec.classnames == tuple(DTD) and spec.templates == tuple(packaged_text("dtd", "templates"))
    assert spec.options == {"source": "wds:clip-benchmark/wds_vtab-dtd", "hub_split": "test", "matches_paper": None}
    # each image keeps its class: lr0fm's label is the packaged index of the hub class's name
    expected = [len(DTD) - 1 - l if order == "permuted" else l for l in hub_labels]  # reversed names
    assert [data.label(i) for i in range(len(data))] == expected
    if order == "permuted":
        assert expected != hub_labels
    assert data.ids[:2] == ["s0000000", "s0000001"] and data.load_image(2).size == (36, 28)
    assert "hub copy wds:clip-benchmark/wds_vtab-dtd" in spec.description


def test_cli_download_records_the_copy_and_compare_flags_it(hub_cache, tmp_path, tiny_open_clip):
    from lr0fm.cli import main
    hub_cache("dtd", DTD, [3, 1, 4, 1, 5, 9])
    out = tmp_path / "res"
    with pytest.warns(IncompleteDatasetWarning):
        assert main(["--out", str(out), "eval", "--model", tiny_open_clip[0], "-d", "dtd", "--download",
                     "--data-root", str(tmp_path / "empty"), "--resolutions", "16,hr", "--workers", "0",
                     "--no-progress"]) == 0
    records = ResultsStore(out).records()
    assert sorted(str(r["resolution"]) for r in records) == ["16", "hr"]
    for r in records:
        assert (r["dataset"], r["dataset_key"], split_of(r), r["n_images"]) == ("dtd", "dtd", "test", 6)
        assert r["identity"]["data"]["options"] == {"source": "wds:clip-benchmark/wds_vtab-dtd",
                                                    "hub_split": "test", "matches_paper": None}
    flagged = [d for d in compare(records, [16]).differences if d["kind"] == "hub_copy"]
    assert len(flagged) == 1 and flagged[0]["dataset"] == "dtd"
    assert "wds:clip-benchmark/wds_vtab-dtd" in flagged[0]["message"] and "not established" in flagged[0]["message"]
    # a copy the catalog says holds the paper's images is not flagged
    same = json.loads(json.dumps(records))
    for r in same:
        r["identity"]["data"]["options"]["matches_paper"] = True
    assert not [d for d in compare(same, [16]).differences if d["kind"] == "hub_copy"]


def test_a_key_without_hub_copy_says_what_to_download_where(tmp_path):
    root = tmp_path / "ucf"
    with pytest.raises(DatasetError) as e:
        get_dataset("ucf101", root=root, download=True)
    message = str(e.value)
    assert "\n" not in message and message.startswith("ucf101: ") and "no hub copy" in message
    assert f"{root}/UCF-101-midframes/" in message and f"{root}/split_zhou_UCF101.json" in message
    assert "$LR0FM_DATA" not in message


def test_class_names_that_do_not_match_are_refused_in_one_line(hub_cache, tmp_path):
    renamed = ["woolly mammoth", *DTD[1:]]
    hub_cache("dtd", renamed, [0, 1])
    with pytest.raises(DatasetError) as e:
        get_dataset("dtd", root=tmp_path / "empty", download=True)
    message = str(e.value)
    assert "\n" not in message and "'woolly mammoth' of its hub copy wds:clip-benchmark/wds_vtab-dtd" in message
    assert "dtd-r1.0.1.tar.gz" in message  # what to place instead


def test_a_copy_with_other_classes_is_refused(hub_cache, tmp_path):
    hub_cache("dtd", DTD[:46], [0, 1])
    with pytest.raises(DatasetError, match=r"has 46 classes, lr0fm's dtd has 47"):
        get_dataset("dtd", root=tmp_path / "empty", download=True)


def test_hub_copy_stands_in_for_the_paper_split_only(hub_cache, tmp_path):
    hub_cache("dtd", DTD, [0, 1])
    with pytest.raises(DatasetError, match="option 'partition' applies to files under"):
        get_dataset("dtd", root=tmp_path / "empty", download=True, partition=2)
    with pytest.raises(DatasetError, match="stands in for the paper's val split only"):
        get_dataset("eurosat", root=tmp_path / "empty", split="test", download=True)


def test_uncached_hub_copy_offline_is_one_line(tmp_path):
    """(HF_HUB_OFFLINE=1, and no snapshot of clip-benchmark/wds_vtab-pets anywhere)"""
    from huggingface_hub import constants
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        with pytest.raises(DatasetError) as e:
            get_dataset("pets", root=tmp_path / "empty", download=True)
    message = str(e.value)
    assert "\n" not in message and message.startswith("pets: no files under")
    assert "hf download clip-benchmark/wds_vtab-pets --repo-type dataset" in message


def test_hfds_copy_classlabel_names_are_matched(tmp_path, monkeypatch):
    """An HF datasets copy (here a save_to_disk folder standing in for the hub repo): its ClassLabel
    names, written another way and in another order, map onto the packaged pets classes."""
    datasets = pytest.importorskip("datasets")
    pets = packaged_text("pets", "classnames")
    theirs = [n.lower().replace(" ", "_") for n in reversed(pets)]
    rng = np.random.default_rng(1)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=theirs)})
    rows = {"image": [{"bytes": _png(rng, (0, 0, 255)), "path": None} for _ in range(3)], "label": [0, 36, 2]}
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(
        str(tmp_path / "pets_hf"))
    sources = {"pets": {"format": "hfds", "repo": str(tmp_path / "pets_hf"), "split": "test",
                        "paper_split": "test", "matches_paper": False}}
    monkeypatch.setattr(paper, "dataset_sources", lambda: sources)
    with pytest.warns(IncompleteDatasetWarning):
        data = get_dataset("pets", root=tmp_path / "empty", download="hub")
    assert [data.label(i) for i in range(3)] == [36, 0, 34]
    assert data.spec.options == {"source": f"hfds:{tmp_path / 'pets_hf'}", "hub_split": "test",
                                 "matches_paper": False}
    assert data.spec.classnames == tuple(pets)


def test_sweep_download_at_top_level_or_per_dataset(hub_cache, tmp_path):
    from lr0fm.sweep import expand, load_config
    hub_cache("dtd", DTD, [7, 8])
    config = tmp_path / "sweep.yaml"
    config.write_text(json.dumps({"models": ["x"], "download": True, "resolutions": [16],
                                  "datasets": [{"key": "dtd", "data_root": "empty"},
                                               {"key": "tuxpaint", "download": False}]}))
    loaded = load_config(config)
    assert [d["download"] for d in loaded.datasets] == [True, False]
    with pytest.warns(IncompleteDatasetWarning):
        dtd, tux = (g.data for g in expand(loaded))
    assert dtd.spec.options["source"] == "wds:clip-benchmark/wds_vtab-dtd" and len(dtd) == 2
    assert "source" not in tux.spec.options
    config.write_text(json.dumps({"models": ["x"], "datasets": [{"key": "dtd", "data_root": "empty"}]}))
    with pytest.raises(DatasetError, match="download=True"):  # without download nothing changes
        expand(load_config(config))


# --- class-name variants of hub copies (each card's label_aliases) ------------------------------

FLOWERS = packaged_text("flowers", "classnames")
# TFDS oxford_flowers102 spells 3 of the 102 classes otherwise (VTAB, and so wds_vtab-flowers, keep them)
TFDS_FLOWERS = {15: "globe-flower", 59: "pink-yellow dahlia?", 92: "ball moss"}


def _tfds_flowers() -> list[str]:
    return [TFDS_FLOWERS.get(i, n) for i, n in enumerate(FLOWERS)]


@pytest.mark.parametrize("order", ["same", "reversed"])
def test_flowers_copy_with_tfds_spellings_loads_in_the_papers_order(hub_cache, tmp_path, order):
    hub_names = _tfds_flowers() if order == "same" else list(reversed(_tfds_flowers()))
    ours = [15, 59, 92, 0, 101, 59]  # the three TFDS spellings first
    hub_labels = ours if order == "same" else [len(FLOWERS) - 1 - l for l in ours]
    hub_cache("flowers", hub_names, hub_labels)
    assert [hub_names[l] for l in hub_labels[:3]] == ["globe-flower", "pink-yellow dahlia?", "ball moss"]
    with pytest.warns(IncompleteDatasetWarning, match="6,149"):
        data = get_dataset("flowers", root=tmp_path / "empty", download=True)
    assert [data.label(i) for i in range(len(data))] == ours
    assert [data.spec.classnames[l] for l in ours[:3]] == ["globe flower", "pink and yellow dahlia", "air plant"]
    assert data.spec.classnames == tuple(FLOWERS)
    assert data.spec.options["source"] == "wds:clip-benchmark/wds_vtab-flowers"


def test_flowers_copy_without_the_aliases_is_refused_at_the_first_unknown_spelling(hub_cache, tmp_path):
    """The aliases are what maps the copy: without them, 'pink-yellow dahlia?' (label 59) is the first
    name that matches none ('globe-flower' normalises to 'globe flower' on its own)."""
    hub_cache("flowers", _tfds_flowers(), [0, 1])
    flowers = next(d for d in paper.DATASETS if d.key == "flowers")
    with pytest.raises(DatasetError) as e:
        paper.build_from_hub(dataclasses.replace(flowers, label_aliases={}), tmp_path / "empty", "test")
    message = str(e.value)
    assert "\n" not in message and "class 'pink-yellow dahlia?' of its hub copy" in message


def test_flowers_copy_with_an_unknown_name_is_refused_in_one_line(hub_cache, tmp_path):
    hub_cache("flowers", [*_tfds_flowers()[:40], "woolly mammoth", *_tfds_flowers()[41:]], [0, 40])
    with pytest.raises(DatasetError) as e:
        get_dataset("flowers", root=tmp_path / "empty", download=True)
    message = str(e.value)
    assert "\n" not in message and message.startswith("flowers: class 'woolly mammoth' of its hub copy")
    assert "catalog/datasets/flowers.yaml label_aliases" in message and "102flowers.tgz" in message


def test_caltech101_vtab_copy_leaves_its_background_class_out(hub_cache, tmp_path):
    """CLIP_benchmark's VTAB Caltech-101 has 102 classes, 'background' (BACKGROUND_Google) among them,
    in another order: the card's alias null leaves those images out; the rest map by name."""
    ours = packaged_text("caltech101", "classnames")
    hub_names = [*ours[4:], "background", *reversed(ours[:4])]  # 'background' at hub label 97
    hub_labels = [97, 0, 97, 100, 96, 97]
    hub_cache("caltech101", hub_names, hub_labels)
    with pytest.warns(IncompleteDatasetWarning):
        data = get_dataset("caltech101", root=tmp_path / "empty", download=True)
    assert [data.label(i) for i in range(len(data))] == [4, 1, 100]
    assert data.ids == ["s0000001", "s0000003", "s0000004"]  # the background images' ids went with them
    assert data.spec.num_classes == 101 and "its class 'background' left out" in data.spec.description
    assert data.load_image(2).size == (36, 28)


@pytest.mark.parametrize("key", [d.key for d in paper.DATASETS if d.label_aliases])
def test_every_alias_maps_its_spelling_onto_the_papers_label(key):
    """A copy spelling every aliased class its other way, in lr0fm's order (plus the classes an alias
    leaves out), maps each class onto its own label."""
    dataset = next(d for d in paper.DATASETS if d.key == key)
    ours = packaged_text(key, "classnames")
    spelling = {name: hub for hub, name in dataset.label_aliases.items() if name is not None}
    theirs = [spelling.get(n, n) for n in ours] + [hub for hub, name in dataset.label_aliases.items() if name is None]
    assert sum(a != b for a, b in zip(theirs, ours)) == len(spelling)
    labels = paper._hub_labels(key, "wds:x", theirs, ours, dataset.label_aliases, "place the files")
    assert labels == [*range(len(ours)), *[None] * (len(theirs) - len(ours))]
