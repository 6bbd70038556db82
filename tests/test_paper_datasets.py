"""The 15 LR0.FM benchmark loaders, each on a miniature replica of its official on-disk layout
(a few classes, tiny images, the real metadata file formats)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from lr0fm.catalog import class_counts
from lr0fm.datasets import REGISTRY, DatasetError, get_dataset
from lr0fm.datasets.base import packaged_text
from lr0fm.datasets.paper import DATASETS, IncompleteDatasetWarning

# Miniature copies never have the paper's image counts.
pytestmark = pytest.mark.filterwarnings("ignore::lr0fm.datasets.paper.IncompleteDatasetWarning")

KEYS = [d.key for d in DATASETS]


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


JPEG = _jpeg()


def put(path: Path, content: bytes | str = JPEG) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path


def names(key: str, file: str = "classnames") -> list[str]:
    return packaged_text(key, file)


def by_id(data) -> dict[str, int]:
    """sample id (path relative to root) -> label"""
    return {data.sample_id(i): data.label(i) for i in range(len(data))}


def test_all_fifteen_registered_with_the_benchmark_class_counts():
    assert len(KEYS) == 15
    counts = class_counts()
    for key in KEYS:
        assert REGISTRY[key].num_classes == counts[key] == len(names(key)), key
    assert REGISTRY["eurosat"].default_split == "val" and set(REGISTRY["eurosat"].splits) == {"val", "test"}


# --- ImageNet family --------------------------------------------------------------------------


def test_imagenet1k_class_folders(tmp_path):
    wnids = names("imagenet1k", "wnids")
    for w in (wnids[0], wnids[999]):
        for i in range(2):
            put(tmp_path / "val" / w / f"ILSVRC2012_val_{w}_{i}.JPEG")
    data = get_dataset("imagenet1k", root=tmp_path)
    assert data.spec.split == "val" and "50,000" in data.spec.description
    assert sorted(data.label(i) for i in range(len(data))) == [0, 0, 999, 999]
    assert data.spec.classnames[0] == "tench" and len(data.spec.classnames) == 1000
    assert np.asarray(data.load_image(0)).shape == (6, 8, 3)


def test_imagenet1k_flat_with_kaggle_solution(tmp_path):
    val = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    rows = {"ILSVRC2012_val_00000002": "n01443537", "ILSVRC2012_val_00000001": "n15075141"}
    for image in rows:
        put(val / f"{image}.JPEG")
    put(tmp_path / "LOC_val_solution.csv", "ImageId,PredictionString\n" + "".join(
        f"{image},{w} 1 2 30 40 {w} 5 6 7 8\n" for image, w in rows.items()))
    data = get_dataset("imagenet1k", root=tmp_path)
    assert by_id(data) == {"ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000001.JPEG": 999,
                           "ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000002.JPEG": 1}


def test_imagenet1k_flat_with_devkit_ids_mapped_through_meta_mat(tmp_path):
    # devkit ids are not label+1: id 1 is goldfish (label 1), id 2 tench (label 0); id 3 is a parent synset
    synsets = np.zeros(3, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    synsets[:] = [(1, "n01443537", 0), (2, "n01440764", 0), (3, "n00001740", 2)]
    devkit = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    scipy.io.savemat(devkit / "meta.mat", {"synsets": synsets})
    put(devkit / "ILSVRC2012_validation_ground_truth.txt", "2\n1\n1\n")
    for n in (1, 2, 3):
        put(tmp_path / "val" / f"ILSVRC2012_val_{n:08d}.JPEG")
    data = get_dataset("imagenet1k", root=tmp_path)
    assert [data.label(i) for i in range(3)] == [0, 1, 1]
    assert data.sample_id(0) == "val/ILSVRC2012_val_00000001.JPEG"


def test_imagenet1k_flat_without_label_file_says_what_to_add(tmp_path):
    put(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DatasetError, match="LOC_val_solution.csv"):
        get_dataset("imagenet1k", root=tmp_path)


@pytest.mark.parametrize("key, subdir, wnid_key", [
    ("imagenet_a", "imagenet-a", "imagenet_a"),
    ("imagenet_r", "imagenet-r", "imagenet_r"),
    ("imagenet_sketch", "sketch", "imagenet1k"),
])
def test_wnid_folder_datasets(tmp_path, key, subdir, wnid_key):
    wnids = names(wnid_key, "wnids")
    picks = [wnids[-1], wnids[0], wnids[len(wnids) // 2]]
    for n, w in enumerate(picks):
        for i in range(n + 1):
            put(tmp_path / subdir / w / f"{i}.jpg")
    put(tmp_path / subdir / "README.txt", "not an image folder")
    data = get_dataset(key, root=tmp_path)
    middle, last = len(wnids) // 2, len(wnids) - 1
    assert sorted(data.label(i) for i in range(len(data))) == [0, 0, middle, middle, middle, last]
    assert len(data.spec.classnames) == len(wnids)
    # a folder that is no class of this dataset (e.g. the root points at full ImageNet) is refused
    put(tmp_path / subdir / "n99999999" / "x.jpg")
    with pytest.raises(DatasetError, match="n99999999"):
        get_dataset(key, root=tmp_path)


def test_imagenet_a_labels_follow_its_200_wnids(tmp_path):
    put(tmp_path / "imagenet-a" / "n01498041" / "0.jpg")  # stingray: first of the 200
    put(tmp_path / "imagenet-a" / "n01531178" / "0.jpg")  # goldfinch: second
    data = get_dataset("imagenet_a", root=tmp_path)
    assert by_id(data) == {"imagenet-a/n01498041/0.jpg": 0, "imagenet-a/n01531178/0.jpg": 1}
    assert data.spec.classnames[:2] == ("stingray", "goldfinch")


def test_imagenet_v2_folders_are_class_indices_not_sorted_names(tmp_path):
    base = tmp_path / "imagenetv2-matched-frequency-format-val"
    for c in ("0", "10", "999", "2"):
        put(base / c / "a.jpeg")
    data = get_dataset("imagenet_v2", root=tmp_path)
    assert {Path(k).parent.name: v for k, v in by_id(data).items()} == {"0": 0, "10": 10, "999": 999, "2": 2}


# --- Caltech-101 ------------------------------------------------------------------------------


def make_caltech(root: Path, sizes=(("Faces", 33), ("airplanes", 31), ("yin_yang", 32))):
    for folder, n in (*sizes, ("BACKGROUND_Google", 5)):
        for i in range(1, n + 1):
            put(root / "101_ObjectCategories" / folder / f"image_{i:04d}.jpg")


def test_caltech101_holds_out_30_per_class_deterministically(tmp_path):
    make_caltech(tmp_path)
    data = get_dataset("caltech101", root=tmp_path)
    labels = [data.label(i) for i in range(len(data))]
    # Faces -> "off-center face" (0), airplanes -> "airplane" (5), yin_yang -> last class (100)
    assert {l: labels.count(l) for l in set(labels)} == {0: 3, 5: 1, 100: 2}
    assert data.spec.classnames[0] == "off-center face" and data.spec.classnames[5] == "airplane"
    assert not any("BACKGROUND" in data.sample_id(i) for i in range(len(data)))
    assert "seed 1234" in data.spec.description and "5,647" in data.spec.description
    again = get_dataset("caltech101", root=tmp_path)
    assert again.samples == data.samples
    other_seeds = {tuple(get_dataset("caltech101", root=tmp_path, seed=s).samples) for s in range(6)}
    assert "seed=5" in get_dataset("caltech101", root=tmp_path, seed=5).spec.description
    assert len(other_seeds) > 1  # the seed does pick the images


def test_caltech101_too_small_class_and_torchvision_layout(tmp_path):
    make_caltech(tmp_path / "caltech101", sizes=(("Faces", 31),))  # torchvision's download layout
    assert len(get_dataset("caltech101", root=tmp_path)) == 1
    make_caltech(tmp_path / "caltech101", sizes=(("ant", 30),))
    with pytest.raises(DatasetError, match="ant has 30 images"):
        get_dataset("caltech101", root=tmp_path)


# --- Split-file datasets ----------------------------------------------------------------------


def test_dtd_split_file(tmp_path):
    lines = ["banded/banded_0002.jpg", "zigzagged/zigzagged_0010.jpg", "polka-dotted/polka-dotted_0001.jpg"]
    for line in lines + ["braided/braided_0001.jpg"]:
        put(tmp_path / "dtd" / "images" / line)
    put(tmp_path / "dtd" / "labels" / "test1.txt", "\n".join(lines) + "\n")
    put(tmp_path / "dtd" / "labels" / "train1.txt", "braided/braided_0001.jpg\n")
    data = get_dataset("dtd", root=tmp_path)
    assert [data.label(i) for i in range(len(data))] == [0, 46, names("dtd").index("polka-dotted")]
    assert data.sample_id(1) == "dtd/images/zigzagged/zigzagged_0010.jpg"


def test_dtd_download_from_torchvision_then_parses_its_layout(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    calls = []

    class FakeDTD:  # writes what torchvision's DTD download leaves: <root>/dtd/dtd/...
        def __init__(self, root, download, split, partition):
            calls.append((root, download, split, partition))
            put(Path(root) / "dtd" / "dtd" / "images" / "woven" / "woven_0001.jpg")
            put(Path(root) / "dtd" / "dtd" / "labels" / "test1.txt", "woven/woven_0001.jpg\n")
    monkeypatch.setattr(tvd, "DTD", FakeDTD)
    data = get_dataset("dtd", root=tmp_path, download="torchvision")  # download=True reads the hub copy
    assert calls == [(str(tmp_path), True, "test", 1)]
    assert by_id(data) == {"dtd/dtd/images/woven/woven_0001.jpg": names("dtd").index("woven")}


def test_food101_test_list(tmp_path):
    base = tmp_path / "food-101"
    test = ["apple_pie/1011328", "waffles/12345", "hot_and_sour_soup/777"]
    for line in test + ["baklava/1"]:
        put(base / "images" / f"{line}.jpg")
    put(base / "meta" / "test.txt", "\n".join(test) + "\n")
    put(base / "meta" / "train.txt", "baklava/1\n")
    data = get_dataset("food101", root=tmp_path)
    assert [data.label(i) for i in range(3)] == [0, 100, names("food101").index("hot and sour soup")]
    assert len(data) == 3


def test_food101_missing_image_is_named(tmp_path):
    put(tmp_path / "food-101" / "meta" / "test.txt", "apple_pie/1011328\n")
    with pytest.raises(DatasetError, match=r"food-101/images/apple_pie/1011328\.jpg"):
        get_dataset("food101", root=tmp_path)


def test_sun397_partition_file(tmp_path):
    test = ["/a/abbey/sun_aaa.jpg", "/j/jail/indoor/sun_bbb.jpg", "/j/jail_cell/sun_ccc.jpg"]
    for line in test + ["/b/bar/sun_ddd.jpg"]:
        put(tmp_path / "SUN397" / line.lstrip("/"))
    put(tmp_path / "Partitions" / "Testing_01.txt", "\n".join(test) + "\n")
    put(tmp_path / "Partitions" / "Training_01.txt", "/b/bar/sun_ddd.jpg\n")
    data = get_dataset("sun397", root=tmp_path)
    # ClassName.txt order: /j/jail/indoor (line 207) before /j/jail_cell (line 208)
    assert [data.label(i) for i in range(len(data))] == [0, 206, 207]
    assert data.sample_id(1) == "SUN397/j/jail/indoor/sun_bbb.jpg"


def test_fgvc_aircraft_variant_test_list(tmp_path):
    data_dir = tmp_path / "fgvc-aircraft-2013b" / "data"
    test = {"1514522": "707-320", "0056978": "Boeing 717", "1234567": "F/A-18"}
    for image in (*test, "7654321"):
        put(data_dir / "images" / f"{image}.jpg")
    put(data_dir / "images_variant_test.txt", "".join(f"{i} {v}\n" for i, v in test.items()))
    put(data_dir / "images_variant_trainval.txt", "7654321 A380\n")
    put(data_dir / "variants.txt", "\n".join(names("fgvc_aircraft")) + "\n")
    data = get_dataset("fgvc_aircraft", root=tmp_path)
    reference = names("fgvc_aircraft")
    assert [data.label(i) for i in range(len(data))] == [0, reference.index("Boeing 717"), reference.index("F/A-18")]
    swapped = reference[1:2] + reference[:1] + reference[2:]
    put(data_dir / "variants.txt", "\n".join(swapped) + "\n")
    with pytest.raises(DatasetError, match="class order"):
        get_dataset("fgvc_aircraft", root=tmp_path)


def test_pets_class_ids_checked_against_breed_names(tmp_path):
    base = tmp_path / "oxford-iiit-pet"
    rows = ["Abyssinian_100 1 1 1", "american_bulldog_100 2 2 1", "yorkshire_terrier_1 37 2 25"]
    for row in rows:
        put(base / "images" / f"{row.split()[0]}.jpg")
    put(base / "annotations" / "test.txt", "\n".join(rows) + "\n")
    data = get_dataset("pets", root=tmp_path)
    assert [data.label(i) for i in range(3)] == [0, 1, 36]
    put(base / "annotations" / "test.txt", "american_bulldog_100 5 2 1\n")
    with pytest.raises(DatasetError, match="class id 5"):
        get_dataset("pets", root=tmp_path)


def test_flowers_takes_only_tstid(tmp_path):
    base = tmp_path / "flowers-102"
    for i in range(1, 7):
        put(base / "jpg" / f"image_{i:05d}.jpg")
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.array([[1, 1, 2, 102, 2, 1]])})
    scipy.io.savemat(base / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[3]]),
                                          "tstid": np.array([[4, 5, 6]])})
    data = get_dataset("flowers", root=tmp_path)
    assert by_id(data) == {"flowers-102/jpg/image_00004.jpg": 101, "flowers-102/jpg/image_00005.jpg": 1,
                           "flowers-102/jpg/image_00006.jpg": 0}
    (base / "imagelabels.mat").unlink()
    with pytest.raises(DatasetError, match="imagelabels.mat not found"):
        get_dataset("flowers", root=tmp_path)


# --- CoOp split files -------------------------------------------------------------------------


def coop(path: Path, parts: dict[str, list]) -> None:
    put(path, json.dumps({"train": [], "val": [], "test": [], **parts}))


def test_eurosat_val_and_test_parts(tmp_path):
    val = [["AnnualCrop/AnnualCrop_1.jpg", 0, "Annual Crop Land"], ["SeaLake/SeaLake_7.jpg", 9, "Sea or Lake"]]
    test = [["Forest/Forest_3.jpg", 1, "Forest"], ["SeaLake/SeaLake_8.jpg", 9, "Sea or Lake"],
            ["AnnualCrop/AnnualCrop_2.jpg", 0, "Annual Crop Land"]]
    for p, _, _ in val + test:
        put(tmp_path / "2750" / p)
    coop(tmp_path / "split_zhou_EuroSAT.json", {"val": val, "test": test})
    data = get_dataset("eurosat", root=tmp_path)
    assert data.spec.split == "val" and "5,400" in data.spec.description
    assert by_id(data) == {"2750/AnnualCrop/AnnualCrop_1.jpg": 0, "2750/SeaLake/SeaLake_7.jpg": 9}
    test_data = get_dataset("eurosat", root=tmp_path, split="test")
    assert test_data.spec.split == "test" and "8,100" in test_data.spec.description
    assert [test_data.label(i) for i in range(3)] == [1, 9, 0]
    assert test_data.spec.classnames[9] == "lake or sea"


def test_eurosat_inconsistent_coop_labels_raise(tmp_path):
    val = [["Forest/Forest_1.jpg", 1, "Forest"], ["River/River_1.jpg", 1, "River"]]
    for p, _, _ in val:
        put(tmp_path / "2750" / p)
    coop(tmp_path / "split_zhou_EuroSAT.json", {"val": val})
    with pytest.raises(DatasetError, match="label 1 to two different classes"):
        get_dataset("eurosat", root=tmp_path)


def test_cars_coop_year_first_names_map_to_clip_names(tmp_path):
    reference = names("cars")
    tesla = reference.index("Tesla Model S Sedan 2012")
    test = [["cars_test/00001.jpg", 0, "2000 AM General Hummer SUV"],
            ["cars_test/00002.jpg", tesla, "2012 Tesla Model S Sedan"]]
    for p, _, _ in test:
        put(tmp_path / p)
    put(tmp_path / "cars_train" / "00001.jpg")
    coop(tmp_path / "split_zhou_StanfordCars.json", {"train": [["cars_train/00001.jpg", 3, "x"]], "test": test})
    data = get_dataset("cars", root=tmp_path)
    assert [data.label(i) for i in range(2)] == [0, tesla]
    coop(tmp_path / "split_zhou_StanfordCars.json", {"test": [["cars_test/00001.jpg", 0, "1999 Flying Car"]]})
    with pytest.raises(DatasetError, match="Flying Car"):
        get_dataset("cars", root=tmp_path)


def test_ucf101_labels_by_name_not_coop_index(tmp_path):
    reference = names("ucf101")
    # CoOp numbers classes by classInd.txt, where HammerThrow comes after Hammering; the CLIP list
    # (sorted folder names) has them the other way round.
    test = [["Hammering/v_Hammering_g01_c01.jpg", 34, "Hammering"],
            ["Hammer_Throw/v_HammerThrow_g01_c01.jpg", 35, "Hammer_Throw"],
            ["Handstand_Pushups/v_HandstandPushups_g01_c01.jpg", 36, "Handstand_Pushups"],
            ["Apply_Eye_Makeup/v_ApplyEyeMakeup_g01_c01.jpg", 0, "Apply_Eye_Makeup"]]
    for p, _, _ in test:
        put(tmp_path / "ucf101" / "UCF-101-midframes" / p)
    coop(tmp_path / "ucf101" / "split_zhou_UCF101.json", {"test": test})
    data = get_dataset("ucf101", root=tmp_path)
    assert [data.label(i) for i in range(4)] == [reference.index("Hammering"), reference.index("Hammer Throw"),
                                                 reference.index("Hand Stand Pushups"), 0]
    assert reference.index("Hammer Throw") == 34


# --- Errors and options shared by all ---------------------------------------------------------

MISSING = {
    "imagenet1k": "val/", "imagenet_a": "imagenet-a/", "imagenet_v2": "imagenetv2-matched-frequency-format-val/",
    "imagenet_r": "imagenet-r/", "imagenet_sketch": "sketch/", "caltech101": "101_ObjectCategories/",
    "dtd": "dtd/labels/test1.txt", "food101": "food-101/meta/test.txt", "sun397": "Partitions/Testing_01.txt",
    "cars": "split_zhou_StanfordCars.json", "fgvc_aircraft": "fgvc-aircraft-2013b/data/images_variant_test.txt",
    "pets": "oxford-iiit-pet/annotations/test.txt", "flowers": "setid.mat", "eurosat": "split_zhou_EuroSAT.json",
    "ucf101": "split_zhou_UCF101.json",
}

# download=True reads the hub copy (its card's hub): every key but ucf101 has one
FETCHABLE = set(KEYS) - {"ucf101"}


@pytest.mark.parametrize("key", KEYS)
def test_missing_files_name_the_file_in_one_line(tmp_path, key):
    with pytest.raises(DatasetError) as err:
        get_dataset(key, root=tmp_path / "empty")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{key}: ")
    assert f"{tmp_path / 'empty'}/{MISSING[key]}" in message
    # offered only where a hub copy exists
    assert ("download=True" in message) == (key in FETCHABLE)


def test_sun397_images_missing_is_named(tmp_path):
    put(tmp_path / "Partitions" / "Testing_01.txt", "/a/abbey/sun_aaa.jpg\n")
    with pytest.raises(DatasetError, match="SUN397/a/abbey/sun_aaa.jpg not found"):
        get_dataset("sun397", root=tmp_path)


def test_custom_classnames_change_prompts_not_labels(tmp_path):
    put(tmp_path / "oxford-iiit-pet" / "images" / "Bombay_1.jpg")
    put(tmp_path / "oxford-iiit-pet" / "annotations" / "test.txt", "Bombay_1 8 1 4\n")
    custom = [f"breed {i}" for i in range(37)]
    data = get_dataset("pets", root=tmp_path, classnames=custom, templates=["a {} pet."])
    assert data.label(0) == 7 and data.spec.classnames[7] == "breed 7" and data.spec.templates == ("a {} pet.",)
    with pytest.raises(DatasetError, match="3 class names given for 37 classes"):
        get_dataset("pets", root=tmp_path, classnames=["a", "b", "c"])


def test_incomplete_copy_warns_with_the_paper_count(tmp_path):
    put(tmp_path / "oxford-iiit-pet" / "images" / "Bombay_1.jpg")
    put(tmp_path / "oxford-iiit-pet" / "annotations" / "test.txt", "Bombay_1 8 1 4\n")
    with pytest.warns(IncompleteDatasetWarning, match="3,669"):
        get_dataset("pets", root=tmp_path)


def test_unknown_option_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="unknown option 'seed'; dtd takes partition"):
        get_dataset("dtd", root=tmp_path, seed=3)
    with pytest.raises(DatasetError, match="cars takes no options"):
        get_dataset("cars", root=tmp_path, subdir="x")
