"""The catalog data files: the authors' protocol per backbone (the dataset cards: test_dataset_cards.py)."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from lr0fm import resources
from lr0fm.catalog import DATASET_CARDS, PAPER_PROTOCOL_FILE, catalog_hashes, model_catalog, paper_protocol
from lr0fm.cli import main
from lr0fm.protocol import Protocol

SOURCE = re.compile(r"[\w./-]+\.(py|yaml|sh):\d+")  # at least one "path:line" reference
SHA = re.compile(r"[0-9a-f]{40}")


def test_every_backbone_has_a_paper_protocol_and_nothing_else():
    assert set(paper_protocol()) == set(model_catalog())
    assert len(paper_protocol()) == 66


@pytest.mark.parametrize("name", sorted(model_catalog()))
def test_paper_protocol_fields_are_valid(name):
    p = paper_protocol()[name]
    quirks = yaml.safe_load(resources.read_text(PAPER_PROTOCOL_FILE))["quirks"]
    # lr0fm's own Protocol accepts the mode, size, filter and normalisation
    Protocol(input_size=p["paper_input_size"], mean=tuple(p["paper_mean"]), std=tuple(p["paper_std"]),
             mode=p["paper_resize_mode"], interpolation=p["paper_interpolation"])
    assert p["paper_crop"] is (p["paper_resize_mode"] == "shortest")
    assert p["paper_quirks"] and set(p["paper_quirks"]) <= set(quirks)
    assert len(set(p["paper_quirks"])) == len(p["paper_quirks"])
    assert SOURCE.search(p["paper_protocol_source"]), p["paper_protocol_source"]
    assert SHA.fullmatch(p["paper_protocol_commit"])


def test_paper_protocol_audit_findings():
    paper, models = paper_protocol(), model_catalog()
    by_family = {}
    for name, m in models.items():
        by_family.setdefault(m["family"], set()).add(name)
    # OpenCLIP was evaluated with squash although open_clip's configs say shortest for most tags
    assert {paper[n]["paper_resize_mode"] for n in by_family["OpenCLIP"]} == {"squash"}
    assert any(models[n]["resize_mode"] == "shortest" for n in by_family["OpenCLIP"])
    assert paper["eva-clip-8b"]["paper_resize_mode"] == "squash"
    assert {paper[n]["paper_resize_mode"] for n in by_family["EVA-CLIP"] - {"eva-clip-8b"}} == {"shortest"}
    # BLIP and ALBEF were all fed 384 px, whatever the checkpoint's own size
    assert {paper[n]["paper_input_size"] for n in by_family["BLIP"] | by_family["ALBEF"]} == {384}
    for name, p in paper.items():
        native = models[name]["native_resolution"]
        if p["paper_input_size"] != native:
            assert "pos_embed_interpolated_to_384" in p["paper_quirks"], name
        # every script but OpenAI CLIP's skips the down step only when r == S, so the HR column
        # went through 224 px exactly for the models fed another size
        went_via_224 = p["protocol"] != "CLIP" and p["paper_input_size"] != 224
        assert ("hr_via_224" in p["paper_quirks"]) is went_via_224, name


def test_catalog_hashes_cover_the_new_files():
    assert {PAPER_PROTOCOL_FILE, DATASET_CARDS} <= set(catalog_hashes())


def test_models_paper_json(capsys):
    assert main(["models", "--paper", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    models, paper = model_catalog(), paper_protocol()
    assert [r["name"] for r in rows] == list(models)
    for r in rows:
        name = r["name"]
        for key in ("family", "backend", "native_resolution", "resize_mode"):
            assert r[key] == models[name][key]
        for key in ("paper_resize_mode", "paper_input_size", "paper_interpolation", "paper_crop",
                    "paper_quirks", "paper_protocol_source", "paper_protocol_commit"):
            assert r[key] == paper[name][key]
    squashed = {r["name"] for r in rows if r["resize_mode"] != r["paper_resize_mode"]}
    assert "openclip-vit-b-16-datacomp-xl" in squashed and "clip-vit-b-32" not in squashed
