"""Every metric against hand-computed values, and `lr0fm metrics --accuracies`."""
import json
import math

import pytest

from lr0fm.catalog import class_counts, war_weights
from lr0fm.cli import main
from lr0fm.metrics import gamma, improved_gamma, robustness_table, sar, war


def test_gamma_and_Gamma_hand_computed():
    assert gamma(0.3, 0.6) == pytest.approx(0.5)
    # eps = 0.6 - 1/10 = 0.5 -> 1 - exp(-200 * 0.25) = 1 - exp(-50)
    assert improved_gamma(0.3, 0.6, 10) == pytest.approx(0.5 * (1 - math.exp(-50)))
    # near chance: A_hr = 0.11 with 10 classes -> eps = 0.01 -> factor 1 - exp(-0.02) = 0.0198...
    assert improved_gamma(0.10, 0.11, 10) == pytest.approx((0.10 / 0.11) * (1 - math.exp(-0.02)))
    assert improved_gamma(0.10, 0.11, 10) < 0.02
    assert gamma(0.1, 0.0) == 0.0


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
