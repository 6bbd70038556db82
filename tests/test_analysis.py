"""lr0fm.analysis: layer-wise similarity (cosine, linear CKA), semantic LR errors (WordNet), robustness
vs model properties (Spearman), and the ``lr0fm analyze`` commands on tiny random models."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lr0fm import resources
from lr0fm.analysis.layers import layer_similarity, linear_cka
from lr0fm.datasets import get_dataset
from lr0fm.datasets.base import DatasetError, DatasetSpec, LabeledImages
from lr0fm.errors import InputError
from lr0fm.models import create_model
from lr0fm.models.towers import find_tower
from lr0fm.store import ResultsStore

from fake_records import fake_record, put_fake

wordnet_files = pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(),
                                   reason="Debian package wordnet not installed")


# -- layers --------------------------------------------------------------------------------------

def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA from its definition with Gram matrices: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n

    def hsic(k, l):
        return np.trace(k @ h @ l @ h) / (n - 1) ** 2

    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_linear_cka_matches_hsic_definition_and_invariances():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 6)), rng.normal(size=(30, 9))
    y[:, :3] += 2 * x[:, :3]  # partly related
    assert linear_cka(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(hsic_cka(x, y), rel=1e-9)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    rotated = torch.from_numpy(3.0 * x @ q + 5.0)  # rotation, isotropic scale and shift leave CKA at 1
    assert linear_cka(torch.from_numpy(x), rotated) == pytest.approx(1.0, abs=1e-9)
    assert 0 < linear_cka(torch.from_numpy(x), torch.from_numpy(y)) < 1


@pytest.mark.parametrize("fixture", ["tiny_open_clip", "tiny_hf_clip"])
def test_layer_similarity_is_one_for_hr_and_below_one_at_16px(fixture, request, image_folder):
    spec = request.getfixturevalue(fixture)[0]
    model = create_model(spec)
    data = get_dataset("imagefolder", root=image_folder)
    result = layer_similarity(model, data, ["hr", 16], limit=6, batch_size=4)
    tower = find_tower(model)
    assert result.layers == ["embed"] + [f"block{i + 1}" for i in range(tower.depth)]
    assert result.n_images == 6
    # a second, separately computed HR view: identical features
    assert result.cosine[0] == pytest.approx([1.0] * len(result.layers), abs=1e-5)
    assert result.cka[0] == pytest.approx([1.0] * len(result.layers), abs=1e-5)
    # 16 px views of noise images lose detail: the blocks' features move away from HR
    assert max(result.cosine[1][1:]) < 0.999
    assert min(result.cka[1]) < 0.9999


def test_layer_similarity_pools_patch_tokens_only(tiny_open_clip, image_folder):
    """The pooled block output is the mean of the patch tokens (class token excluded)."""
    from lr0fm.models.towers import LayerRecorder
    from lr0fm.analysis.layers import pool_layers
    model = create_model(tiny_open_clip[0])
    tower = find_tower(model)
    x = torch.randn(2, 3, 64, 64)
    with LayerRecorder(tower) as rec:
        model.encode_image(x)
    pooled = pool_layers(rec.features, tower)
    tokens = rec.features["block2"]
    assert tokens.shape[1] == 1 + 16  # class token + 4x4 patches
    torch.testing.assert_close(pooled["block2"], tokens[:, 1:].mean(1))
    torch.testing.assert_close(pooled["embed"], rec.features["embed"].mean((2, 3)))


# -- WordNet and semantic errors -------------------------------------------------------------------

@wordnet_files
def test_wordnet_known_wu_palmer_values():
    from lr0fm.analysis.wordnet import load_wordnet, wup
    wn = load_wordnet()
    assert wn.get_version() == "3.0"
    # published in the NLTK WordNet HOWTO: dog~cat 0.857..., hit~slap 0.25
    assert wup(wn.synset("dog.n.01"), wn.synset("cat.n.01")) == pytest.approx(6 / 7)
    assert wup(wn.synset("hit.v.01"), wn.synset("slap.v.01")) == pytest.approx(0.25)
    assert wup(wn.synset("dog.n.01"), wn.synset("dog.n.01")) == 1.0


@wordnet_files
def test_class_synsets_from_wnids_and_lemmas():
    from lr0fm.analysis.wordnet import class_synsets, load_wordnet
    from lr0fm.datasets.base import packaged_text
    wn = load_wordnet()
    names = packaged_text("imagenet1k", "classnames")
    synsets, how = class_synsets(wn, "imagenet1k", names)
    assert how == "wnids" and synsets[0].name() == "tench.n.01" and len(synsets) == 1000
    # ImageNet-V2 shares ImageNet-1k's class list and has no wnids file of its own
    synsets_v2, how_v2 = class_synsets(wn, "imagenet_v2", packaged_text("imagenet_v2", "classnames"))
    assert how_v2 == "wnids" and synsets_v2 == synsets
    tux, how = class_synsets(wn, "tuxpaint", ["musical instrument", "fruit", "no such thing xyz"])
    assert how == "lemma"
    assert [s.name() if s else None for s in tux] == ["musical_instrument.n.01", "fruit.n.01", None]


def test_missing_wordnet_says_how_to_install(tmp_path):
    from lr0fm.analysis.wordnet import load_wordnet
    with pytest.raises(DatasetError, match="apt-get install wordnet"):
        load_wordnet(str(tmp_path))


CLASSES = ("dog", "cat", "car", "truck")


def toy_data() -> LabeledImages:
    spec = DatasetSpec("toy", "test", CLASSES, ("a photo of a {}.",))
    return LabeledImages(spec, [(f"img{i}", i // 2) for i in range(8)])


def put_cell(store, data, resolution, top1, valid, model="toy-model", **kwargs):
    """A stored cell of ``model`` on ``data`` (its real data identity) with these top-1 predictions."""
    from lr0fm.identity import data_part
    labels = np.array([y for _, y in data.samples], np.int32)
    return put_fake(store, model, data.spec.key, resolution, float((top1 == labels)[valid].mean()),
                    n_images=int(valid.sum()), n_skipped=int((~valid).sum()), data=data_part(data),
                    predictions={"topk": np.stack([top1, (top1 + 1) % 4], 1).astype(np.int32), "labels": labels,
                                 "valid": valid, "ids": np.array([data.sample_id(i) for i in range(len(data))])},
                    **kwargs)


@wordnet_files
def test_semantic_errors_share_on_stored_predictions(tmp_path):
    from lr0fm.analysis.predictions import semantic_errors
    from lr0fm.analysis.wordnet import load_wordnet
    store, data = ResultsStore(tmp_path), toy_data()
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    lr = np.array([1, 0, 0, 1, 3, 2, 0, 1])      # errors: dog->cat, cat->dog, car->truck, truck->dog, truck->cat
    lr_valid = np.ones(8, bool)
    lr_valid[7] = False                           # the last one was unreadable in the LR pass: left out
    put_cell(store, data, "hr", labels.copy(), np.ones(8, bool))
    put_cell(store, data, 16, lr, lr_valid)
    result = semantic_errors(store, "toy-model", data, threshold=0.5, gallery=0)
    (s,) = result.summaries
    wn = load_wordnet()
    syn = {c: wn.synsets(c, "n")[0] for c in CLASSES}
    expected = [syn[a].wup_similarity(syn[b]) for a, b in
                [("cat", "dog"), ("dog", "cat"), ("truck", "car"), ("dog", "truck")]]
    assert (s.resolution, s.n_images, s.n_errors, s.n_flips) == (16, 7, 4, 4)
    assert s.hr_top1 == 1.0 and s.lr_top1 == pytest.approx(3 / 7)
    assert s.mean_wup_errors == pytest.approx(np.mean(expected))
    assert s.close_share == pytest.approx(np.mean([w >= 0.5 for w in expected]))  # 3 of 4 (truck->dog is 0.4)
    assert 0 < s.mean_wup_random < 1 and 0 <= s.random_close_share <= 1
    assert result.mapping == "lemma" and result.unmapped_classes == []
    with pytest.raises(InputError, match="lr0fm eval"):
        semantic_errors(store, "other-model", data)


# -- robustness vs model properties -----------------------------------------------------------------

def test_models_spearman_equals_scipy():
    from scipy.stats import spearmanr

    from lr0fm.analysis.models import robustness_vs_properties
    catalog = {m["name"]: m for m in yaml.safe_load(resources.read_text("catalog/models.yaml"))["models"]}
    names = [n for n, m in catalog.items() if m.get("params_vision_m") and m.get("params_text_m")][:6]
    lr_acc = [0.30, 0.10, 0.45, 0.20, 0.25, 0.50]
    records = []
    for name, acc in zip(names, lr_acc):
        records += [fake_record(name, "toy", "hr", 0.8), fake_record(name, "toy", 16, acc)]
        # the same model in bf16 and with LR tokens: other evaluations, not other points
        records += [fake_record(name, "toy", "hr", 0.8, amp="bf16"), fake_record(name, "toy", 16, 0.8, amp="bf16")]
        records += [fake_record(name, "toy", r, 0.8, variant={"lr_tokens": "ab" * 32}) for r in ("hr", 16)]
    records += [fake_record("not-in-catalog", "toy", r, 0.5) for r in ("hr", 16)]
    result = robustness_vs_properties(records, "user")
    params = [catalog[n]["params_vision_m"] + catalog[n]["params_text_m"] for n in names]
    sar = [a / 0.8 for a in lr_acc]
    rho, p = spearmanr(params, sar)
    (c,) = [c for c in result.correlations if c.property == "params_m" and c.metric == "SAR"]
    assert (c.source, c.resolution, c.n) == ("user", 16, 6)
    assert c.rho == pytest.approx(rho) and c.p == pytest.approx(p)
    assert result.skipped == ["not-in-catalog"]
    assert sorted(p["model"] for p in result.points) == sorted(f"{n} [amp=fp32]" for n in names)
    assert any("variants left out" in n for n in result.notes)


def test_models_user_source_without_catalog_models_is_a_clear_error():
    from lr0fm.analysis.models import robustness_vs_properties
    records = [fake_record("mine", "toy", r, 0.5) for r in ("hr", 16)]
    with pytest.raises(InputError, match="catalog"):
        robustness_vs_properties(records, "user")


# -- CLI ---------------------------------------------------------------------------------------------

@wordnet_files
def test_analyze_commands_on_tiny_model(tiny_open_clip, image_folder, tmp_path, capsys):
    from lr0fm.cli import main
    out = tmp_path / "res"
    common = ["--model", tiny_open_clip[0], "--dataset", "imagefolder", "--data-root", str(image_folder)]
    assert main(["--out", str(out), "analyze", "predictions", *common]) == 2  # nothing evaluated yet
    assert "lr0fm eval" in capsys.readouterr().err
    assert main(["--out", str(out), "eval", *common, "-r", "16,hr", "--workers", "0", "--no-progress"]) == 0
    assert main(["--out", str(out), "analyze", "predictions", *common, "--gallery", "2"]) == 0
    text = capsys.readouterr().out
    assert "WuP" in text and "red car" in text  # 'red car' is not a WordNet lemma: reported as left out
    (record,) = [r for r in ResultsStore(out).records() if r["resolution"] == 16]
    assert f"evaluation {record['evaluation'][:12]}" in text
    # an altered predictions file: one line saying to rerun eval, which recomputes it
    preds = ResultsStore(out).predictions_path(record["cell"])
    original = preds.read_bytes()
    preds.write_bytes(original[:-10])
    assert main(["--out", str(out), "analyze", "predictions", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lr0fm: error:") and "at 16 are missing or changed; rerun 'lr0fm eval" in err.splitlines()[-1]
    assert main(["--out", str(out), "eval", *common, "-r", "16,hr", "--workers", "0", "--no-progress"]) == 0
    assert preds.read_bytes() == original  # recomputed: the same predictions
    assert main(["--out", str(out), "analyze", "predictions", *common, "--gallery", "2"]) == 0
    capsys.readouterr()
    assert main(["--out", str(out), "analyze", "layers", *common, "-r", "16", "--limit", "4"]) == 0
    assert "block2" in capsys.readouterr().out
    assert main(["--out", str(out), "analyze", "models", "--source", "paper"]) == 0
    assert "native_resolution" in capsys.readouterr().out
    files = {p.name for p in (out / "analysis").iterdir()}
    assert any(f.startswith("layers_") and f.endswith(".png") for f in files)
    assert any(f.startswith("predictions_") and f.endswith(".csv") for f in files)
    assert {"models_paper_WAR.png", "models_paper_correlations.csv"} <= files


def test_analysis_picks_one_evaluation_says_which_and_survives_a_deleted_predictions_file(tmp_path, caplog):
    """Several evaluations of one model on the same images: HR and LR come from one of them (the
    full one by default, --where another); a deleted predictions file is one line, not a crash."""
    from lr0fm.analysis.predictions import matching_records
    from lr0fm.identity import data_part
    from lr0fm.records import parse_where
    store, data = ResultsStore(tmp_path), toy_data()
    labels = np.array([y for _, y in data.samples])
    ones = np.ones(8, bool)
    full = [put_cell(store, data, r, labels, ones, finished=1.0) for r in ("hr", 16)]
    bf16 = [put_cell(store, data, r, labels, ones, amp="bf16", finished=2.0) for r in ("hr", 16)]
    cut = data.subset(range(4))
    limited = [put_fake(store, "toy-model", "toy", r, 1.0, n_images=4, limit=4, data=data_part(cut), finished=3.0,
                        predictions={"topk": np.zeros((4, 2), np.int32), "labels": labels[:4], "valid": ones[:4],
                                     "ids": np.array([cut.sample_id(i) for i in range(4)])}) for r in ("hr", 16)]
    other_images = toy_data()
    other_images.samples = [(f"other{i}", y) for i, y in other_images.samples]
    put_cell(store, other_images, "hr", labels, ones)  # another dataset's images: never matched
    assert len({r["evaluation"] for r in full + bf16 + limited}) == 3

    chosen, notes = matching_records(store, "toy-model", data)
    # no --limit first, then most images, then newest: the bf16 run
    assert {res: r["cell"] for res, r in chosen.items()} == {"hr": bf16[0]["cell"], 16: bf16[1]["cell"]}
    assert bf16[0]["evaluation"][:12] in notes[0] and "2 other evaluation(s)" in notes[1]
    chosen, _ = matching_records(store, "toy-model", data, where=parse_where(["limit=4"]))
    assert {r["evaluation"] for r in chosen.values()} == {limited[0]["evaluation"]}
    chosen, _ = matching_records(store, "toy-model", data, where=parse_where(["amp=fp32", "limit=none"]))
    assert [chosen[r]["cell"] for r in ("hr", 16)] == [r["cell"] for r in full]

    store.predictions_path(bf16[1]["cell"]).unlink()
    with pytest.raises(InputError, match="missing or changed; rerun 'lr0fm eval"):
        with caplog.at_level(logging.WARNING, logger="lr0fm"):
            matching_records(store, "toy-model", data)
    assert not caplog.records  # the error is the one line; no warning repeats it
    with pytest.raises(InputError, match="no stored HR and LR predictions"):
        matching_records(store, "toy-model", data, where=parse_where(["limit=5"]))
