"""The benchmark's dataset cards (catalog/datasets/<key>.yaml): each card is complete and
consistent with the lister it names and the class list it orders labels by."""
from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from lr0fm import resources
from lr0fm.catalog import DATASET_CARDS, catalog_hashes, class_counts, dataset_cards, dataset_sources, war_weights
from lr0fm.datasets import REGISTRY
from lr0fm.datasets.base import packaged_text
from lr0fm.datasets.paper import DATASETS, LISTERS, _squashed

ROOT = Path(__file__).resolve().parents[1]
CARD_FILES = sorted((ROOT / "src" / "lr0fm" / DATASET_CARDS).glob("*.yaml"))
KEYS = [f.stem for f in CARD_FILES]


def test_fifteen_cards_in_the_papers_table_order():
    cards = dataset_cards()
    assert len(cards) == 15 and sorted(cards) == KEYS
    assert [c["order"] for c in cards.values()] == list(range(1, 16))
    assert list(cards)[:2] == ["imagenet1k", "imagenet_a"] and list(cards)[-1] == "ucf101"
    assert [d.key for d in DATASETS] == list(cards)  # registered in that order


@pytest.mark.parametrize("key", KEYS)
def test_card_is_complete_and_consistent(key):
    card = yaml.safe_load((ROOT / "src" / "lr0fm" / DATASET_CARDS / f"{key}.yaml").read_text())
    assert card["version"] == 1 and card["key"] == key and card["title"]
    reference = packaged_text(*card["label_order"].split("/"))
    assert card["num_classes"] == len(reference) == len(packaged_text(key, "classnames"))
    assert 0 < card["war_weight"] <= 1
    assert card["default_split"] in card["splits"]
    for split in card["splits"].values():
        assert split["what"] and isinstance(split["images"], int) and split["images"] > 0
    assert card["splits"][card["default_split"]]["source"]  # where the paper's split is defined
    # the lister takes exactly its fixed arguments and the user options the card lists
    lister = LISTERS[card["lister"]]
    params = [n for n in inspect.signature(lister).parameters if n not in ("files", "split")]
    assert sorted(params) == sorted([*card["lister_args"], *card["options"]])
    assert "{root}" in card["get"]
    assert card["torchvision"] is None or set(card["torchvision"]) == {"class", "kwargs"}


@pytest.mark.parametrize("key", KEYS)
def test_hub_copy_and_label_aliases(key):
    card = dataset_cards()[key]
    hub = card["hub"]
    for copy in [hub, *hub.get("alternatives", [])]:
        assert copy["format"] in ("wds", "hfds", None)
        if copy["format"]:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+", copy["repo"]) and copy["split"], key
        assert copy["matches_paper"] in (True, False, None)
        assert copy["hub_images"] is None or isinstance(copy["hub_images"], int)
    if hub["format"] is None or hub["matches_paper"] is False:  # no copy, or one of other images: say so
        assert hub.get("note"), key
    # each alias: a distinct spelling of one of lr0fm's names, or null (a class the paper has not)
    names = packaged_text(key, "classnames")
    aliases = card["label_aliases"] or {}
    assert all(name is None or name in names for name in aliases.values()), key
    assert len({_squashed(s) for s in aliases}) == len(aliases)
    ours = {_squashed(n): n for n in names}
    for spelling, name in aliases.items():  # a spelling of one class of ours never renames it to another
        assert ours.get(_squashed(spelling), name) == name, (key, spelling)
    assert card["class_lists_checked"], key  # what was compared, with the outcome


def test_flowers_card_covers_the_three_tfds_spellings():
    aliases = dataset_cards()["flowers"]["label_aliases"]
    assert aliases == {"globe-flower": "globe flower", "pink-yellow dahlia?": "pink and yellow dahlia",
                       "ball moss": "air plant"}


def test_public_readers_come_from_the_cards():
    cards = dataset_cards()
    assert war_weights() == {k: c["war_weight"] for k, c in cards.items()}
    assert war_weights()["eurosat"] == 1.0 and war_weights()["imagenet_a"] == pytest.approx(0.970498446080589)
    assert class_counts() == {k: c["num_classes"] for k, c in cards.items()}
    sources = dataset_sources()
    assert (sources["eurosat"]["paper_split"], sources["eurosat"]["paper_images"]) == ("val", 5400)
    assert sources["dtd"]["repo"] == "clip-benchmark/wds_vtab-dtd" and sources["ucf101"]["repo"] is None
    for d in DATASETS:
        entry = REGISTRY[d.key]
        assert (entry.default_split, entry.num_classes) == (cards[d.key]["default_split"], cards[d.key]["num_classes"])
        assert f"{cards[d.key]['splits'][d.default_split]['images']:,} images" in entry.description


def test_the_cards_content_is_hashed_into_records(tmp_path, monkeypatch):
    assert re.fullmatch(r"[0-9a-f]{16}", catalog_hashes()[DATASET_CARDS])
    folder = tmp_path / "cards"
    folder.mkdir()
    (folder / "a.yaml").write_text("key: a\n")
    (folder / "b.yaml").write_text("key: b\n")
    monkeypatch.setattr(resources, "path", lambda rel: tmp_path / rel)
    first = resources.folder_hash("cards", "*.yaml")
    (folder / "notes.txt").write_text("not a card")
    assert resources.folder_hash("cards", "*.yaml") == first
    (folder / "b.yaml").write_text("key: b \n")
    assert resources.folder_hash("cards", "*.yaml") != first


def test_the_cards_ship_with_the_package():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["lr0fm"]
    package = ROOT / "src" / "lr0fm"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    assert set(CARD_FILES) <= shipped
