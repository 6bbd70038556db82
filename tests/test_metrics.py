"""Every metric against hand-computed values, and `lr0fm metrics --accuracies`."""
import json
import math

import pytest

from lr0fm.catalog import class_counts, war_weights
from lr0fm.cli import main
from lr0fm.metrics import AGGREGATE_NAMES, gamma, improved_gamma, ranked, robustness_table, sar, war


def test_gamma_and_Gamma_hand_computed():
    assert gamma(0.3, 0.6) == pytest.approx(0.5)
    # eps = 0.6 - 1/10 = 0.5 -> 1 - exp(-200 * 0.25) = 1 - exp(-50)
    assert improved_gamma(0.3, 0.6, 10) == pytest.approx(0.5 * (1 - math.exp(-50)))
    # near chance: A_hr = 0.11 with 10 classes -> eps = 0.01 -> factor 1 - exp(-0.02) = 0.0198...
    assert improved_gamma(0.10, 0.11, 10) == pytest.approx((0.10 / 0.11) * (1 - math.exp(-0.02)))
    assert improved_gamma(0.10, 0.11, 10) < 0.02
    # exactly at chance (A_hr = 1/C): eps = 0, so Gamma = 0 however good gamma looks
    assert gamma(0.25, 0.25) == 1.0 and improved_gamma(0.25, 0.25, 4) == 0.0


def test_gamma_edge_cases_hand_computed():
    # LR above HR: gamma exceeds 1 and is kept (upsampled small images can beat "HR")
    assert gamma(0.5, 0.4) == pytest.approx(1.25)
    assert improved_gamma(0.5, 0.4, 10) == pytest.approx(1.25 * (1 - math.exp(-200 * 0.3 ** 2)))
    # HR = 0 or NaN: gamma = A(r)/A(HR) is undefined -> NaN, never a made-up 0 or a ZeroDivisionError
    for lr, hr in ((0.1, 0.0), (0.0, 0.0), (0.1, math.nan)):
        assert math.isnan(gamma(lr, hr)) and math.isnan(improved_gamma(lr, hr, 10))
    # HR below chance: eps = 0.02 - 0.1 = -0.08 is squared, as in the paper's code -> factor 1 - exp(-1.28)
    assert improved_gamma(0.01, 0.02, 10) == pytest.approx(0.5 * (1 - math.exp(-1.28)))
    assert improved_gamma(0.01, 0.02, 10) == pytest.approx(0.36098, abs=1e-5)  # 0.5 * (1 - 0.27804)
    with pytest.raises(ValueError, match="num_classes"):
        improved_gamma(0.3, 0.6, 0)


def test_sar_war_hand_computed():
    assert sar({"a": 0.5, "b": 1.0}) == pytest.approx(0.75)
    assert war({"a": 0.5, "b": 1.0}, {"a": 3.0, "b": 1.0}) == pytest.approx((1.5 + 1.0) / 4.0)
    # datasets without a weight weigh 1.0
    assert war({"a": 0.5, "x": 1.0}, {"a": 3.0}) == pytest.approx((1.5 + 1.0) / 4.0)


def test_published_weights_and_class_counts():
    w, c = war_weights(), class_counts()
    assert len(w) == 15 and w["eurosat"] == 1.0 and w["imagenet_a"] == pytest.approx(0.970498446080589)
    assert [c[k] for k in ["imagenet1k", "imagenet_a", "dtd", "sun397", "cars", "eurosat"]] == [1000, 200, 47, 397, 196, 10]


def test_robustness_table_per_resolution():
    rows = [
        {"model": "m", "dataset": "eurosat", "resolution": "hr", "top1": 0.8},
        {"model": "m", "dataset": "eurosat", "resolution": 16, "top1": 0.4},
        {"model": "m", "dataset": "dtd", "resolution": "hr", "top1": 0.5},
        {"model": "m", "dataset": "dtd", "resolution": 16, "top1": 0.25},
        {"model": "m", "dataset": "dtd", "resolution": 32, "top1": 0.45},
    ]
    out = robustness_table(rows, war_weights(), class_counts())
    assert [(x.model, x.resolution) for x in out] == [("m", 16), ("m", 32)]
    r16 = out[0]
    g_e, g_d = 0.4 / 0.8, 0.25 / 0.5
    G_e = g_e * (1 - math.exp(-200 * (0.8 - 0.1) ** 2))
    G_d = g_d * (1 - math.exp(-200 * (0.5 - 1 / 47) ** 2))
    assert r16.SAR == pytest.approx((g_e + g_d) / 2)
    assert r16.WAR == pytest.approx((1.0 * G_e + 0.505922498560715 * G_d) / (1.0 + 0.505922498560715))
    # 32 px exists only for dtd: SAR/WAR over that one dataset, never averaged across resolutions
    assert out[1].SAR == pytest.approx(0.9) and set(out[1].gamma) == {"dtd"}


def test_robustness_table_undefined_hr_is_nan_and_ranked_last():
    rows = [
        {"model": "good", "dataset": "eurosat", "resolution": "hr", "top1": 0.8},
        {"model": "good", "dataset": "eurosat", "resolution": 16, "top1": 0.2},
        {"model": "nan_hr", "dataset": "eurosat", "resolution": "hr", "top1": None},  # a failed evaluation
        {"model": "nan_hr", "dataset": "eurosat", "resolution": 16, "top1": 0.5},
        {"model": "zero_hr", "dataset": "eurosat", "resolution": "hr", "top1": 0.0},
        {"model": "zero_hr", "dataset": "eurosat", "resolution": 16, "top1": 0.3},
    ]
    out = {x.model: x for x in robustness_table(rows, war_weights(), class_counts())}
    assert out["good"].SAR == pytest.approx(0.25)
    assert out["good"].WAR == pytest.approx(0.25 * (1 - math.exp(-200 * 0.7 ** 2)))
    for model in ("nan_hr", "zero_hr"):
        assert math.isnan(out[model].SAR) and math.isnan(out[model].WAR) and math.isnan(out[model].gamma["eurosat"])
    for key in AGGREGATE_NAMES:  # the undefined ones last, whatever their place in the input
        order = [x.model for x in ranked(reversed(list(out.values())), key)]
        assert order[0] == "good" and set(order[1:]) == {"nan_hr", "zero_hr"}


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_metrics_cli_json(tmp_path, capsys):
    f = _write(tmp_path / "acc.csv", "model,dataset,resolution,top1,num_classes\n"
               "a,mine,hr,80,4\na,mine,16,40,4\nb,mine,hr,60,4\nb,mine,16,54,4\n")
    assert main(["metrics", "--accuracies", f, "--percent", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by = {(d["model"], d["resolution"]): d for d in data}
    assert set(by) == {("a", 16), ("b", 16)}
    assert by[("a", 16)]["SAR"] == pytest.approx(0.5)
    assert by[("b", 16)]["gamma"]["mine"] == pytest.approx(0.9)
    assert by[("b", 16)]["Gamma"]["mine"] == pytest.approx(0.9 * (1 - math.exp(-200 * 0.35 ** 2)))
    assert by[("a", 16)]["WAR"] == pytest.approx(0.5 * (1 - math.exp(-200 * 0.55 ** 2)))
    # the table form ranks b above a
    assert main(["metrics", "--accuracies", f, "--percent"]) == 0
    table = capsys.readouterr().out
    assert table.index(" b ") < table.index(" a ")


@pytest.mark.parametrize("content,match", [
    ("model,dataset,top1\na,b,0.5\n", "lacks column"),
    ("model,dataset,resolution,top1\na,eurosat,-16,0.5\n", "integer px|positive"),
    ("model,dataset,resolution,top1\na,eurosat,16,55\n", "--percent"),
    ("model,dataset,resolution,top1\na,unknownset,16,0.5\na,unknownset,hr,0.6\n", "num_classes"),
])
def test_metrics_cli_bad_input(tmp_path, capsys, content, match):
    import re
    f = _write(tmp_path / "acc.csv", content)
    assert main(["metrics", "--accuracies", f]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(match, err)


def test_metrics_cli_below_chance_above_hr_and_identical_duplicates(tmp_path, capsys):
    """HR below chance and LR above HR are computed, not rejected; identical repeated rows count once."""
    f = _write(tmp_path / "acc.csv", "# a comment line\nmodel,dataset,resolution,top1,num_classes\n"
               "m,mine,hr,2,10\nm,mine,16,1,10\nm,mine,16,1,10\n"  # below chance (10 %), 16 px given twice
               "m,eurosat,hr,40,\nm,eurosat,16,50,\n")  # eurosat: 10 classes from the catalog
    assert main(["metrics", "--accuracies", f, "--percent", "--json"]) == 0
    (r16,) = json.loads(capsys.readouterr().out)
    assert r16["gamma"] == pytest.approx({"mine": 0.5, "eurosat": 1.25})
    G_mine = 0.5 * (1 - math.exp(-200 * (0.02 - 0.1) ** 2))  # = 0.36098
    G_euro = 1.25 * (1 - math.exp(-200 * (0.4 - 0.1) ** 2))
    assert r16["Gamma"] == pytest.approx({"mine": G_mine, "eurosat": G_euro})
    assert r16["SAR"] == pytest.approx((0.5 + 1.25) / 2)
    # mine has no published weight (1.0), eurosat weighs 1.0
    assert r16["WAR"] == pytest.approx((G_mine + G_euro) / 2)
    # --weights overrides: mine 3, eurosat 1
    w = _write(tmp_path / "w.json", '{"mine": 3}')
    assert main(["metrics", "--accuracies", f, "--percent", "--json", "--weights", w]) == 0
    assert json.loads(capsys.readouterr().out)[0]["WAR"] == pytest.approx((3 * G_mine + G_euro) / 4)


@pytest.mark.parametrize("rows,match", [
    ("m,mine,hr,nan,4\nm,mine,16,0.5,4\n", r"acc.csv:2: top1 'nan' is not a finite number"),
    ("m,mine,hr,0,4\nm,mine,16,0.5,4\n", r"acc.csv:2: model m, dataset mine has HR top1 0, so gamma .* undefined"),
    ("m,mine,hr,0.5,4\nm,mine,16,0.25,4\nm,mine,16,0.3,4\n",
     r"acc.csv:4: model m, dataset mine, resolution 16 has top1 0.3 here but 0.25 on line 3; keep one row"),
], ids=["nan_hr", "zero_hr", "conflicting_duplicates"])
def test_metrics_cli_undefined_hr_and_conflicting_rows(tmp_path, capsys, rows, match):
    import re
    f = _write(tmp_path / "acc.csv", "model,dataset,resolution,top1,num_classes\n" + rows)
    assert main(["metrics", "--accuracies", f]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1 and re.search(match, err), err
