"""The paper's leaderboard (report --paper) and ranking your results among it (compare).

Expected values are computed here from the packaged CSV/YAML files read independently (csv, yaml)
with the paper's formulas, not through lr0fm.metrics."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

import lr0fm
from lr0fm.cli import main
from lr0fm.report.compare import compare
from lr0fm.report.paper import load_paper_results, paper_leaderboard
from lr0fm.store import ResultsStore

from fake_records import put_fake

PKG = Path(lr0fm.__file__).parent
RESOLUTIONS = (128, 64, 32, 16)


@pytest.fixture(scope="module")
def published():
    """(model, dataset, resolution) -> top-1 fraction, read with csv from the packaged file."""
    lines = [l for l in (PKG / "catalog" / "paper_results.csv").read_text().splitlines() if not l.startswith("#")]
    return {(r["model"], r["dataset"], r["resolution"]): float(r["top1"]) / 100 for r in csv.DictReader(lines)}


@pytest.fixture(scope="module")
def bench():
    cards = [yaml.safe_load(f.read_text()) for f in (PKG / "catalog" / "datasets").glob("*.yaml")]
    return {c["key"]: (c["num_classes"], c["war_weight"]) for c in cards}


def hand_scores(published, bench, model, res, datasets):
    """(SAR, WAR, {dataset: Gamma}) by the paper's formulas."""
    g, G = {}, {}
    for d in datasets:
        hr, lr = published[(model, d, "hr")], published[(model, d, str(res))]
        g[d] = lr / hr
        G[d] = g[d] * (1 - math.exp(-200 * (hr - 1 / bench[d][0]) ** 2))
    war = sum(bench[d][1] * G[d] for d in datasets) / sum(bench[d][1] for d in datasets)
    return sum(g.values()) / len(g), war, G


def test_load_paper_results_are_fractions(published):
    rows = load_paper_results()
    assert len(rows) == len(published)
    row = next(r for r in rows if (r["model"], r["dataset"], r["resolution"]) == ("clip-vit-b-32", "imagenet1k", "hr"))
    assert row["top1"] == pytest.approx(0.6341) and row["top5"] == pytest.approx(0.8883)
    assert {r["resolution"] for r in rows} == {"hr", 128, 64, 32, 16}
    rows[0]["top1"] = -1  # callers may modify their copy
    assert load_paper_results()[0]["top1"] != -1


def test_leaderboard_matches_hand_computation(published, bench):
    board = json.loads(paper_leaderboard(rank_by="WAR", json_out=True))
    row = next(x for x in board["resolutions"]["32"] if x["model"] == "clip-vit-b-32")
    # Two datasets by hand from their rows: 8.87/55.99 style ratios, with the chance-aware factor.
    for d in ("imagenet_a", "eurosat"):
        hr, lr = published[("clip-vit-b-32", d, "hr")], published[("clip-vit-b-32", d, "32")]
        assert row["gamma"][d] == pytest.approx(lr / hr)
        assert row["Gamma"][d] == pytest.approx(lr / hr * (1 - math.exp(-200 * (hr - 1 / bench[d][0]) ** 2)))
    sar, war, _ = hand_scores(published, bench, "clip-vit-b-32", 32, list(bench))
    assert row["SAR"] == pytest.approx(sar) and row["WAR"] == pytest.approx(war)


def test_leaderboard_has_every_backbone_at_every_resolution(published, bench):
    catalog = {m["name"] for m in yaml.safe_load((PKG / "catalog" / "models.yaml").read_text())["models"]}
    assert len(catalog) == 66
    for key in ("WAR", "SAR"):
        board = json.loads(paper_leaderboard(rank_by=key, json_out=True))
        assert board["incomplete"] == []  # all 66 x 15 x 5 accuracies are transcribed
        for res in RESOLUTIONS:
            rows = board["resolutions"][str(res)]
            assert {x["model"] for x in rows} == catalog and len(rows) == 66
            assert [x["rank"] for x in rows] == list(range(1, 67))
            assert [x[key] for x in rows] == sorted((x[key] for x in rows), reverse=True)
    # The text form ranks the same way: its 16 px block starts with the hand-computed best WAR.
    best = max(catalog, key=lambda m: hand_scores(published, bench, m, 16, list(bench))[1])
    text = paper_leaderboard()
    block = text.split("== 16 px")[1].splitlines()
    assert block[2].split()[:2] == ["1", best]


def _put(store, model, dataset, res, top1, *, num_classes=None, n_images=None, **kwargs):
    """A stored record; by default with the paper's class count and (for its split) image count."""
    from lr0fm.catalog import class_counts
    from lr0fm.report.paper import paper_split
    split, size = paper_split(dataset) or ("test", 100)
    if n_images is None:
        n_images = size if kwargs.get("split", "test") == split else 100
    put_fake(store, model, dataset, res, top1, num_classes=num_classes or class_counts().get(dataset),
             n_images=n_images, **kwargs)


COMMON = ("dtd", "pets", "eurosat")


@pytest.fixture
def store(tmp_path, published, bench):
    """'mine' = clip-vit-b-32's published accuracies on 3 datasets (eurosat's test split, 100 dtd images);
    'clip-vit-b-32' with no LR loss at all (squash resize), also with LR tokens at chance; plus tuxpaint."""
    st = ResultsStore(tmp_path / "results")
    for d in COMMON:
        for res in ("hr",) + RESOLUTIONS:
            acc = published[("clip-vit-b-32", d, str(res))]
            hr = published[("clip-vit-b-32", d, "hr")]
            _put(st, "mine", d, res, acc, num_classes=bench[d][0],  # eurosat: test split
                 n_images={"dtd": 100, "pets": 3669}.get(d))  # pets' test split is 3669 images
            _put(st, "clip-vit-b-32", d, res, hr, mode="squash", split="val" if d == "eurosat" else "test")
            _put(st, "clip-vit-b-32", d, res, hr if res == "hr" else 1 / bench[d][0],
                 variant={"lr_tokens": "0123456789abcdef"}, limit=100, mode="squash",
                 split="val" if d == "eurosat" else "test")
    for res in ("hr", 16):
        _put(st, "clip-vit-b-32", "tuxpaint", res, 0.5, num_classes=11, mode="squash")
    return st


def test_compare_ranks_your_models_among_the_papers(store, published, bench):
    cmp = compare(store.records(), RESOLUTIONS)
    assert sorted(cmp.datasets) == sorted(COMMON)
    tokens = "clip-vit-b-32+lr_tokens=0123456789ab"
    for res in RESOLUTIONS:
        entries = cmp.rankings[res]
        paper = {e.model: e for e in entries if e.source == "paper"}
        yours = {e.model: e for e in entries if e.source == "yours"}
        assert len(paper) == 66 and set(yours) == {"mine", "clip-vit-b-32", tokens}
        # Paper rows re-scored on the 3 common datasets, by hand.
        hand = {m: hand_scores(published, bench, m, res, COMMON)[1] for m in paper}
        assert paper["clip-vit-b-32"].robustness.WAR == pytest.approx(hand["clip-vit-b-32"])
        mine_war = hand["clip-vit-b-32"]  # 'mine' has clip-vit-b-32's accuracies
        assert yours["mine"].robustness.WAR == pytest.approx(mine_war)
        assert yours["mine"].rank == 1 + sum(w > mine_war + 1e-12 for w in hand.values())
        # No LR loss ranks first at 16 px (no backbone comes close); chance accuracy ranks after all 66.
        if res == 16:
            assert yours["clip-vit-b-32"].rank == 1
        assert yours[tokens].rank == 67
    # Base vs tokens are two rows, and the variant is set against its base.
    assert {(v["variant"], v["base"]) for v in cmp.variants} == {(tokens, "clip-vit-b-32")}


def test_compare_cli_prints_ranks_and_protocol_differences(store, capsys):
    assert main(["--out", str(store.root), "compare", "--resolutions", "16,32"]) == 0
    out = capsys.readouterr().out
    assert "== 16 px" in out and "== 32 px" in out and "== 64 px" not in out
    assert "mine (yours" in out and "clip-vit-b-32+lr_tokens=0123456789ab (yours" in out
    diffs = out.split("Differences from the paper's protocol:")[1]
    assert "tuxpaint not among the paper's 15 datasets" in diffs
    assert ("clip-vit-b-32: protocol native (squash 224 bicubic); the paper's for clip-vit-b-32 is shortest 224 "
            "bicubic") in diffs and "rerun with --protocol paper" in diffs
    assert "mine: eurosat split test; the paper used val" in diffs
    assert "only the first 100 images" in diffs
    assert "mine: dtd test split with 100 images; the paper's has 1880" in diffs and "mine: pets" not in diffs
    assert "compared on 3 of the paper's 15 datasets" in diffs
    assert "clip-vit-b-32: eurosat split" not in diffs  # val is the paper's split


def test_compare_json_parses_and_non_common_mode_is_flagged(store, capsys):
    assert main(["--out", str(store.root), "compare", "--json", "--rank-by", "SAR",
                 "--no-datasets-only-common", "--model", "clip-vit-b-32"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rank_by"] == "SAR" and data["datasets_only_common"] is False
    assert set(data["resolutions"]) == {"128", "64", "32", "16"}
    rows = data["resolutions"]["16"]
    assert {r["model"] for r in rows if r["source"] == "yours"} == {"clip-vit-b-32",
                                                                  "clip-vit-b-32+lr_tokens=0123456789ab"}
    assert len([r for r in rows if r["source"] == "paper"]) == 66
    # Paper rows over all 15 datasets here; yours over 3: flagged as not comparable.
    assert all(len(r["gamma"]) == 15 for r in rows if r["source"] == "paper")
    kinds = {d["kind"] for d in data["differences"]}
    assert {"not_comparable", "dataset", "limit", "variant"} <= kinds


def test_compare_user_errors_exit_2(tmp_path, store, capsys):
    assert main(["--out", str(tmp_path / "empty"), "compare"]) == 2
    assert "run 'lr0fm eval' first" in capsys.readouterr().err
    assert main(["--out", str(store.root), "compare", "--model", "nope"]) == 2
    assert "stored: " in capsys.readouterr().err
    assert main(["--out", str(store.root), "compare", "--resolutions", "8"]) == 2


def test_compare_shows_base_vs_tokens_on_offline_datasets_only(tmp_path, capsys):
    """No paper dataset evaluated (the offline default): no ranking, but base vs variant is shown."""
    st = ResultsStore(tmp_path / "offline")
    for res, base, tok in (("hr", 0.674, 0.665), (16, 0.443, 0.470), (32, 0.574, 0.565)):
        _put(st, "conse-effnet-lite0", "tuxpaint", res, base, num_classes=11)
        _put(st, "conse-effnet-lite0", "tuxpaint", res, tok, num_classes=11, variant={"lr_tokens": "ab" * 32})
    assert main(["--out", str(st.root), "compare"]) == 0
    out = capsys.readouterr().out
    line16 = next(l for l in out.splitlines() if l.strip().startswith("16 px"))
    assert "tuxpaint 44.3 -> 47.0%" in line16
    assert f"SAR {0.443 / 0.674:.3f} -> {0.470 / 0.665:.3f}" in line16
    assert "No ranking among the paper's backbones" in out
    assert main(["--out", str(st.root), "compare", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [v["resolution"] for v in data["variants"]] == [16, 32]
