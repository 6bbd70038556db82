"""The Python API (lr0fm/api.py, docs/api.md): same cells and numbers as the CLI, the LR view as a
transform equal to the evaluator's, results as a DataFrame, metrics within one evaluation."""
import argparse
import importlib
import math
import operator
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

import lr0fm
from lr0fm.cli import build_parser, main
from lr0fm.errors import InputError
from lr0fm.protocol import Protocol
from lr0fm.records import COLUMN_NAMES, flat
from lr0fm.report import robustness
from lr0fm.store import ResultsStore

from conftest import make_image
from fake_records import put_fake


def without_run(records):
    """Records minus what differs between two runs of one cell (timing, where it was run)."""
    return sorted(({k: v for k, v in r.items() if k not in ("run", "data_root")} for r in records),
                  key=lambda r: r["cell"])


@pytest.fixture(scope="module")
def tiny_model(tiny_open_clip):
    return lr0fm.create_model(tiny_open_clip[0])


def test_public_names_and_cheap_import():
    assert lr0fm.__all__ == sorted(["list_models", "create_model", "list_datasets", "get_dataset", "evaluate",
                                    "load_results", "gamma", "Gamma", "sar", "war", "effective_resolution",
                                    "LowResolution"])
    from lr0fm.datasets import get_dataset
    from lr0fm.models import create_model
    assert lr0fm.create_model is create_model and lr0fm.get_dataset is get_dataset  # the CLI's own objects
    assert "conse-effnet-lite0" in lr0fm.list_models() and lr0fm.list_models("conse-*") == \
        [m for m in lr0fm.list_models() if m.startswith("conse-")]
    assert {"tuxpaint", "imagefolder", "csv"} <= set(lr0fm.list_datasets())
    # importing lr0fm imports neither torch nor pandas (a fresh interpreter)
    code = "import sys, lr0fm; assert not {'torch', 'pandas', 'lr0fm.api'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
    # the evaluator module (lr0fm.evaluation), once imported, leaves the function alone
    evaluator = importlib.import_module("lr0fm.evaluation")
    assert lr0fm.evaluate is lr0fm.api.evaluate and evaluator.EvalConfig
    with pytest.raises(AttributeError):
        lr0fm.no_such_name


def test_api_and_cli_make_the_same_cells_and_numbers(tiny_open_clip, image_folder, tmp_path, capsys):
    spec = tiny_open_clip[0]
    argv = ["--out", str(tmp_path / "cli"), "eval", "--model", spec, "--dataset", "imagefolder", "--data-root",
            str(image_folder), "--workers", "0", "--batch-size", "5", "--no-progress"]
    assert main([*argv, "--resolutions", "16,24,hr"]) == 0
    printed = capsys.readouterr().out
    cli = ResultsStore(tmp_path / "cli").records()
    data = lr0fm.get_dataset("imagefolder", root=image_folder)
    by_name = lr0fm.evaluate(spec, data, [16, 24, "hr"], out=tmp_path / "name", workers=0, batch_size=5,
                             progress=False)
    model = lr0fm.create_model(spec)
    model.train()
    by_object = lr0fm.evaluate(model, data, "16,24,hr", out=tmp_path / "object", workers=0, batch_size=5,
                               progress=False)
    assert model.training  # evaluated in eval mode, handed back as it came
    assert len(cli) == 3 and [r["resolution"] for r in by_name] == [16, 24, "hr"]
    assert without_run(by_name) == without_run(cli) == without_run(by_object)
    assert without_run(ResultsStore(tmp_path / "object").records()) == without_run(cli)
    # the report `lr0fm eval` printed shows the API's numbers
    from lr0fm.report import text_report
    assert text_report(by_object) in printed
    # and the DataFrames of both folders agree
    frames = [lr0fm.load_results(tmp_path / d).drop(columns=["views"]) for d in ("cli", "object")]
    pd.testing.assert_frame_equal(*frames)
    # protocol overrides: the same cells too, and the model object keeps its own preprocessing
    assert main([*argv, "--resolutions", "16", "--resize-mode", "squash"]) == 0
    preprocess = model.preprocess
    squash = lr0fm.evaluate(model, data, [16], out=tmp_path / "object", workers=0, progress=False,
                            resize_mode="squash")
    assert model.preprocess is preprocess and squash[0]["identity"]["protocol"]["mode"] == "squash"
    assert squash[0]["cell"] in {r["cell"] for r in ResultsStore(tmp_path / "cli").records()}


def test_evaluate_refuses_an_unknown_option_as_typeerror_before_writing(tiny_model, image_folder, tmp_path):
    data = lr0fm.get_dataset("imagefolder", root=image_folder)
    with pytest.raises(TypeError, match="batchsize"):
        lr0fm.evaluate(tiny_model, data, [16], tmp_path / "out", batchsize=8)
    assert not (tmp_path / "out").exists()


def test_one_declaration_gives_eval_sweep_and_api_the_same_options():
    """A RunOptions field is an option of lr0fm eval (unless cli=False), a sweep key (unless
    sweep=False) and an evaluate() keyword: the three front ends cannot drift apart."""
    from dataclasses import fields

    from lr0fm.options import SWEEP_KEYS, RunOptions
    from lr0fm.sweep import CONFIG_KEYS

    eval_parser = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["eval"]
    dests = {a.dest for a in eval_parser._actions}
    for f in fields(RunOptions):
        assert (f.name in dests) == f.metadata["cli"], f.name
        assert (f.name in CONFIG_KEYS) == (f.metadata["sweep"] or f.name in ("lr_tokens", "sr")), f.name  # grid axes
    assert set(SWEEP_KEYS) <= CONFIG_KEYS


def test_evaluate_checks_options_before_writing(tiny_model, image_folder, tmp_path):
    data = lr0fm.get_dataset("imagefolder", root=image_folder)
    for bad in ({"limit": 0}, {"batch_size": 0}, {"amp": "fp8"}, {"views": "gpu"}, {"decoder": "nvjpeg"}):
        with pytest.raises(InputError):
            lr0fm.evaluate(tiny_model, data, [16], out=tmp_path / "r", **bad)
    with pytest.raises(ValueError, match="resolution"):
        lr0fm.evaluate(tiny_model, data, "16,x", out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_model_changed_between_calls_is_another_evaluation(tiny_open_clip, image_folder, tmp_path):
    # randomly initialised weights have no file digest: the state dict identifies them
    model = lr0fm.create_model(f"open_clip:{tiny_open_clip[1]}:random")
    data = lr0fm.get_dataset("imagefolder", root=image_folder)
    options = dict(out=tmp_path / "r", workers=0, progress=False, limit=4)
    before = lr0fm.evaluate(model, data, ["hr"], **options)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    after = lr0fm.evaluate(model, data, ["hr"], **options)
    assert before[0]["evaluation"] != after[0]["evaluation"]
    assert lr0fm.evaluate(model, data, ["hr"], **options) == after  # unchanged: read back, not recomputed


# -- load_results ----------------------------------------------------------------------------
def test_load_results_columns_and_rows(tiny_model, image_folder, tmp_path):
    (tmp_path / "nothing").mkdir()
    empty = lr0fm.load_results(tmp_path / "nothing")
    assert list(empty.columns) == [*COLUMN_NAMES, "model_label", "dataset_label", "effective_resolution"]
    assert len(empty) == 0
    pd.testing.assert_frame_equal(lr0fm.load_results([]), empty)
    data = lr0fm.get_dataset("imagefolder", root=image_folder)
    records = lr0fm.evaluate(tiny_model, data, [24, 16, "hr"], out=tmp_path / "r", workers=0, progress=False)
    frame = lr0fm.load_results(tmp_path / "r")
    assert list(frame.columns) == list(empty.columns)
    assert frame["resolution"].tolist() == [16, 24, "hr"]  # sorted by resolution, HR last
    by_cell = {r["cell"]: flat(r) for r in records}
    for row in frame.to_dict("records"):
        expected = by_cell.pop(row["cell"])
        assert {k: (None if pd.isna(v) else v) for k, v in row.items() if k in COLUMN_NAMES} == expected
        assert (row["model_label"], row["dataset_label"]) == (expected["model"], expected["dataset"])
    assert not by_cell
    assert str(frame["limit"].dtype) == "Int64" and frame["limit"].isna().all()
    # the records evaluate() returned give the same frame
    pd.testing.assert_frame_equal(lr0fm.load_results(records), frame)


# -- metrics ---------------------------------------------------------------------------------
def test_metrics_of_accuracies():
    assert lr0fm.gamma(0.4, 0.8) == 0.5
    for fn, args in ((lr0fm.gamma, ()), (lr0fm.Gamma, (10,))):  # undefined at A(HR) = 0: an error, not NaN
        for hr in (0.0, 0, float("nan")):
            with pytest.raises(ValueError, match=r"undefined when the HR accuracy is .*above 0"):
                fn(0.4, hr, *args)
    assert lr0fm.Gamma(0.4, 0.8, num_classes=10) == pytest.approx(0.5 * (1 - math.exp(-200 * 0.7 ** 2)))
    assert lr0fm.Gamma(0.1, 0.1, num_classes=10) == 0.0  # HR at chance
    assert lr0fm.sar([0.5, 1.0]) == lr0fm.sar({"a": 0.5, "b": 1.0}) == 0.75
    # published weights by default; a dataset without one weighs 1
    from lr0fm.catalog import war_weights
    w = war_weights()["imagenet1k"]
    assert lr0fm.war({"imagenet1k": 0.5, "mine": 1.0}) == pytest.approx((w * 0.5 + 1.0) / (w + 1))
    assert lr0fm.war({"a": 0.5, "b": 1.0}, weights={"a": 3.0}) == pytest.approx(0.625)
    with pytest.raises(TypeError):
        lr0fm.gamma(0.4)
    with pytest.raises(TypeError):
        lr0fm.Gamma(0.4, 0.8)


def test_metrics_of_a_frame_never_divide_across_evaluations(tmp_path):
    store = ResultsStore(tmp_path)
    # one model, tuxpaint evaluated twice (--limit 40 and all images) with very different numbers
    for r, full, limited in ((16, 0.40, 0.30), (32, 0.60, 0.90), ("hr", 0.80, 0.60)):
        put_fake(store, "m", "tuxpaint", r, full, num_classes=11, n_images=230, finished=1.0)
        put_fake(store, "m", "tuxpaint", r, limited, num_classes=11, n_images=40, limit=40, finished=2.0)
    for r, acc in ((16, 0.5), ("hr", 0.5)):
        put_fake(store, "m", "pets", r, acc, num_classes=37)
    frame = lr0fm.load_results(tmp_path)
    assert sorted(set(frame["dataset_label"])) == ["pets", "tuxpaint [limit=40]", "tuxpaint [limit=all]"]
    g = lr0fm.gamma(frame)
    assert g[("m", "tuxpaint [limit=all]", 16)] == pytest.approx(0.40 / 0.80)
    assert g[("m", "tuxpaint [limit=all]", 32)] == pytest.approx(0.60 / 0.80)
    assert g[("m", "tuxpaint [limit=40]", 16)] == pytest.approx(0.30 / 0.60)
    assert g[("m", "tuxpaint [limit=40]", 32)] == pytest.approx(0.90 / 0.60)
    assert g[("m", "pets", 16)] == 1.0 and len(g) == 5
    G = lr0fm.Gamma(frame)
    assert G[("m", "tuxpaint [limit=40]", 32)] == pytest.approx(lr0fm.Gamma(0.90, 0.60, num_classes=11))
    # SAR/WAR: one evaluation per dataset (the full run), as the text report; a warning names it
    with pytest.warns(UserWarning, match=r"tuxpaint \[limit=all\]"):
        s = lr0fm.sar(frame)
    assert s[("m", 16)] == pytest.approx((0.40 / 0.80 + 1.0) / 2) and s[("m", 32)] == pytest.approx(0.60 / 0.80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = lr0fm.war(frame)
    report = {(x.model, x.resolution): x for x in robustness(store.records())}
    assert set(s.index) == set(w.index) == set(report)
    for key, x in report.items():
        assert s[key] == pytest.approx(x.SAR) and w[key] == pytest.approx(x.WAR)
    # selecting rows chooses the evaluation
    limited = frame[frame["dataset_label"] != "tuxpaint [limit=all]"]
    assert lr0fm.sar(limited)[("m", 32)] == pytest.approx(0.90 / 0.60)


def test_metrics_refuse_frames_that_would_mix_evaluations(tmp_path):
    for name, top1 in (("a", 0.5), ("b", 0.7)):
        put_fake(ResultsStore(tmp_path / name), "m", "pets", "hr", top1, n_images=10 if name == "a" else 20)
    frames = [lr0fm.load_results(tmp_path / name) for name in ("a", "b")]
    with pytest.raises(InputError, match="two evaluations"):
        lr0fm.gamma(pd.concat(frames))
    with pytest.raises(InputError, match="no column"):
        lr0fm.sar(frames[0].drop(columns=["top1"]))


def test_metrics_of_a_plain_accuracy_table():
    table = pd.DataFrame({"model": ["m"] * 3, "dataset": ["pets"] * 3, "resolution": ["16", "32", "hr"],
                          "top1": [0.2, 0.4, 0.8], "num_classes": [37] * 3})
    assert lr0fm.gamma(table).tolist() == [0.25, 0.5]
    assert lr0fm.sar(table)[("m", 32)] == 0.5


# -- argument checks (docs/api.md: TypeError, ValueError, FileNotFoundError) -------------------
NAN, INF = float("nan"), float("inf")
BAD_CALLS = [  # (public function, how it is called, error, what its one line says)
    ("list_models", lambda f: f(42), TypeError, r"list_models\(\) argument 'pattern' must be text"),
    ("create_model", lambda f: f(42), TypeError, r"create_model\(\) argument 'name' must be a model name"),
    ("create_model", lambda f: f("conse-effnet-lite0", device=0), TypeError, r"'device' must be a device"),
    ("create_model", lambda f: f("conse-effnet-lite0", trust_checkpoint="yes"), TypeError, r"'trust_checkpoint'"),
    ("get_dataset", lambda f: f(42), TypeError, r"get_dataset\(\) argument 'key' must be a dataset key"),
    ("get_dataset", lambda f: f("imagefolder", root=3), TypeError, r"'root' must be a folder path"),
    ("get_dataset", lambda f: f("imagefolder", classnames=7), TypeError, r"'classnames' must be a file path or a list"),
    ("evaluate", lambda f: f(42, "tuxpaint"), TypeError, r"evaluate\(\) argument 'model'"),
    ("load_results", lambda f: f("/nonexistent/res"), FileNotFoundError, r"folder /nonexistent/res does not exist"),
    ("load_results", lambda f: f(42), TypeError, r"load_results\(\) argument 'out' must be a results folder"),
    ("load_results", lambda f: f([{"cell": "x"}]), ValueError, r"record 0 is not an lr0fm record"),
    ("load_results", lambda f: f(["a"]), TypeError, r"record 0 must be a record \(a dict"),
    ("gamma", lambda f: f(1.5, 0.5), ValueError, r"gamma\(\) argument 'acc' is 1.5, outside \[0, 1\]"),
    ("gamma", lambda f: f(-0.1, 0.5), ValueError, r"'acc' is -0.1, outside \[0, 1\]"),
    ("gamma", lambda f: f(0.4, 67), ValueError, r"'acc_hr' is 67, outside \[0, 1\].*divide a percentage by 100"),
    ("gamma", lambda f: f(NAN, 0.5), ValueError, r"'acc' is nan; give a finite number"),
    ("gamma", lambda f: f("0.4", 0.5), TypeError, r"'acc' must be an accuracy \(a fraction in \[0, 1\]\), not str"),
    ("gamma", lambda f: f(0.4, True), TypeError, r"'acc_hr' must be an accuracy"),
    ("Gamma", lambda f: f(1.2, 0.5, num_classes=10), ValueError, r"Gamma\(\) argument 'acc' is 1.2"),
    ("Gamma", lambda f: f(0.4, 0.5, num_classes=2.5), TypeError, r"'num_classes' must be the number of classes"),
    ("Gamma", lambda f: f(0.4, 0.5, num_classes=1), ValueError, r"'num_classes' is 1; it must be at least 2"),
    ("Gamma", lambda f: f(0.4, 0.5, num_classes=10, alpha=-1), ValueError, r"'alpha' is -1; it must be above 0"),
    ("sar", lambda f: f([]), ValueError, r"sar\(\) of no γ values is undefined"),
    ("sar", lambda f: f({}), ValueError, r"sar\(\) of no γ values is undefined"),
    ("sar", lambda f: f(42), TypeError, r"sar\(\) argument 'gammas' must be a mapping dataset -> γ or a list of γ"),
    ("sar", lambda f: f("0.5"), TypeError, r"'gammas' must be a mapping"),
    ("sar", lambda f: f([0.5, NAN]), ValueError, r"gammas\[1\] is nan; give a finite number"),
    ("sar", lambda f: f({"pets": -0.2}), ValueError, r"gammas\['pets'\] is -0.2; γ is a ratio of accuracies"),
    ("sar", lambda f: f([0.5, None]), TypeError, r"gammas\[1\] must be a γ value"),
    ("war", lambda f: f({}), ValueError, r"war\(\) of no Γ values is undefined"),
    ("war", lambda f: f([0.5, 0.7]), TypeError, r"'Gammas' must be a mapping dataset -> Γ \(or a results DataFrame"),
    ("war", lambda f: f({"d": 0.5}, weights={"d": -1}), ValueError, r"weights\['d'\] is -1; it must be above 0"),
    ("war", lambda f: f({"d": 0.5}, weights={"d": 0}), ValueError, r"weights\['d'\] is 0; it must be above 0"),
    ("war", lambda f: f({"d": 0.5}, weights={"d": INF}), ValueError, r"weights\['d'\] is inf; give a finite"),
    ("war", lambda f: f({"d": 0.5}, weights={"d": None}), TypeError, r"weights\['d'\] must be a weight"),
    ("war", lambda f: f({"d": 0.5}, weights=[1.0]), TypeError, r"'weights' must be a mapping dataset -> weight"),
    ("war", lambda f: f({"d": 0.5}, default_weight=0), ValueError, r"'default_weight' is 0; it must be above 0"),
    ("war", lambda f: f({"d": NAN}), ValueError, r"Gammas\['d'\] is nan"),
    ("LowResolution", lambda f: f(16.5, size=224), TypeError, r"'resolution' must be pixels \(an int\) or 'hr'"),
    ("LowResolution", lambda f: f(16, size="224"), TypeError, r"'size' must be the model's input size"),
    ("LowResolution", lambda f: f(16, size=224, rgb_order="never"), ValueError, r"--rgb-order 'never' unknown"),
    ("LowResolution", lambda f: f(16, size=224, hr_via=-1), ValueError, r"--hr-via -1 must be a size in px"),
    ("LowResolution", lambda f: f(16, size=224, hr_via="224"), TypeError, r"'hr_via' must be a size in px"),
    ("LowResolution.for_model", lambda f: f("conse-effnet-lite0", 16), TypeError, r"'model' must be a model from"),
    ("effective_resolution", lambda f: f([0.5, 0.9]), TypeError, r"takes γ per resolution"),
    ("effective_resolution", lambda f: f({16: 0.5}, keeps="0.9"), TypeError, r"keeps='0.9' must be a number"),
    ("effective_resolution", lambda f: f({16: 0.5}, keeps=1.5), ValueError, r"keeps=1.5 must be a fraction"),
]


@pytest.mark.parametrize("name,call,error,match", BAD_CALLS, ids=[m[:40] for *_, m in BAD_CALLS])
def test_public_functions_refuse_bad_arguments_in_one_line(name, call, error, match):
    with pytest.raises(error, match=match) as raised:
        call(operator.attrgetter(name)(lr0fm))
    assert len(str(raised.value).splitlines()) == 1


def test_every_public_function_is_checked():
    checked = {name.split(".")[0] for name, *_ in BAD_CALLS}
    assert checked == set(lr0fm.__all__) - {"list_datasets"}  # list_datasets takes no arguments
    # a frame's accuracies are fractions as well
    frame = pd.DataFrame({"model": ["m"] * 2, "dataset": ["pets"] * 2, "resolution": ["16", "hr"],
                          "top1": [40.0, 80.0], "num_classes": [37] * 2})  # percentages
    with pytest.raises(ValueError, match=r"top1 40.0 at resolution 16, outside \[0, 1\]"):
        lr0fm.gamma(frame)


# -- LowResolution ---------------------------------------------------------------------------
ODD_SIZES = [(37, 91), (91, 37), (300, 7), (64, 64)]


def images(rng):
    return [make_image(rng, size, color=(200, 30, 90)) for size in ODD_SIZES]


@pytest.mark.parametrize("mode", ["shortest", "squash"])
def test_low_resolution_equals_the_evaluators_views(mode):
    rng = np.random.default_rng(1)
    protocol = Protocol(input_size=40, mean=(0.5,) * 3, std=(0.25,) * 3, mode=mode)
    resolutions = [7, 16, 33, "hr"]
    for image in images(rng):
        expected = protocol.views_uint8(image, resolutions)  # [R, S, S, 3], what `lr0fm eval` feeds
        chw = torch.from_numpy(np.array(image)).permute(2, 0, 1)
        for j, r in enumerate(resolutions):
            t = lr0fm.LowResolution(r, size=40, mode=mode)
            want = torch.from_numpy(expected[j]).permute(2, 0, 1)
            view = t(image)
            assert isinstance(view, Image.Image) and np.array_equal(np.asarray(view), expected[j])
            out = t(chw)
            assert out.dtype == torch.uint8 and torch.equal(out, want)
            batched = t(torch.stack([chw, chw]))
            assert batched.shape == (2, 3, 40, 40) and torch.equal(batched[1], want)
            # tensors on a GPU are viewed there (lr0fm.tensor_views); the same path on the CPU here
            assert torch.equal(t._device_views(torch.stack([chw, chw])), batched)
            f = t(chw.float() / 255)  # what v2.ToDtype(torch.float32, scale=True) makes
            assert f.dtype == torch.float32 and torch.equal(f, want.float() * (1 / 255))
            grey_image = image.convert("L")  # one channel in, one out: the evaluator's view of it
            grey = t(torch.from_numpy(np.array(grey_image))[None])
            grey_expected = protocol.views_uint8(grey_image, [r])[0][..., 0]
            assert grey.shape == (1, 40, 40) and np.array_equal(grey[0].numpy(), grey_expected)
            assert torch.equal(t._device_views(torch.from_numpy(np.array(grey_image))[None, None])[0], grey)
            rgba = image.copy()  # alpha composited on white, as the evaluator does: RGB out
            rgba.putalpha(Image.fromarray(np.arange(image.width * image.height, dtype=np.uint8)
                                          .reshape(image.height, image.width)))
            out = t(torch.from_numpy(np.array(rgba)).permute(2, 0, 1))
            assert torch.equal(out, torch.from_numpy(protocol.views_uint8(rgba, [r])[0]).permute(2, 0, 1))


def test_low_resolution_for_model_and_in_a_torchvision_pipeline(tiny_model, image_folder):
    data = lr0fm.get_dataset("imagefolder", root=image_folder)
    protocol = tiny_model.protocol([16, "hr"])
    t = lr0fm.LowResolution.for_model(tiny_model, 16)
    assert (t.size, t.mode, t.interpolation) == (protocol.input_size, protocol.mode, protocol.interpolation)
    # a paper protocol's quirks (RGB after resizing, HR through a down step) come along
    paper = Protocol(48, (0.5,) * 3, (0.5,) * 3, mode="squash", rgb_last=True, hr_via=32)
    rgba = make_image(np.random.default_rng(2), (45, 29)).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(45, dtype=np.uint8) * 5, (29, 1))))
    for r in (16, "hr"):
        squash = lr0fm.LowResolution.for_model(paper, r)
        assert (squash.size, squash.mode) == (48, "squash") and "hr_via=32" in repr(squash)
        assert np.array_equal(np.asarray(squash(rgba)), paper.views_uint8(rgba, [r])[0])
        rgb = rgba.convert("RGB")
        expected = torch.from_numpy(paper.views_uint8(rgb, [r])[0]).permute(2, 0, 1)
        chw = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)
        assert torch.equal(squash(chw), expected) and torch.equal(squash._device_views(chw[None])[0], expected)
    pipeline = v2.Compose([v2.PILToTensor(), t, v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(mean=list(protocol.mean), std=list(protocol.std))])
    for i in range(len(data)):
        image = data.load_image(i)  # decoded as the evaluator decodes
        x = pipeline(image)
        assert torch.allclose(x, torch.from_numpy(protocol.views(image, [16])[0]), atol=1e-6)
        pil = v2.Compose([t, v2.PILToTensor()])(image)
        assert torch.equal(pil, torch.from_numpy(protocol.views_uint8(image, [16])[0]).permute(2, 0, 1))
    wrapped = t(tv_tensors.Image(v2.functional.pil_to_tensor(data.load_image(0))))
    assert isinstance(wrapped, tv_tensors.Image) and wrapped.shape[-2:] == (64, 64)
    assert repr(t) == f"LowResolution(16, size={protocol.input_size}, mode='shortest', interpolation='bicubic')"


def test_low_resolution_rejects_what_it_cannot_view_exactly():
    t = lr0fm.LowResolution(16, size=32)
    for bad in (torch.rand(3, 20, 20) * 2, torch.zeros(2, 20, 20, dtype=torch.uint8),
                torch.zeros(3, 20, 20, dtype=torch.int32), torch.zeros(20, 20, dtype=torch.uint8)):
        with pytest.raises(InputError):
            t(bad)
    with pytest.raises(TypeError):
        t(np.zeros((20, 20, 3), np.uint8))
    for kwargs in ({"mode": "stretch"}, {"interpolation": "cubic"}):
        with pytest.raises(ValueError):
            lr0fm.LowResolution(16, size=32, **kwargs)
    with pytest.raises(ValueError):
        lr0fm.LowResolution(0, size=32)


TUX_STAMPS = Path("/usr/share/tuxpaint/stamps")


def _transparent_and_palette_images() -> list[Image.Image]:
    """RGBA with graded alpha, palette (with and without a transparent index) and grey+alpha
    images, generated; and TuxPaint stamps of each of those modes where they are installed."""
    rng = np.random.default_rng(5)
    rgba = make_image(rng, (83, 47), color=(20, 200, 60)).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 83).astype(np.uint8), (47, 1))))
    palette = make_image(rng, (50, 71), color=(240, 10, 10)).quantize(16)
    see_through = palette.copy()
    see_through.info["transparency"] = 3
    grey_alpha = rgba.convert("LA")
    generated = [rgba, palette, see_through, grey_alpha]
    stamps = sorted(TUX_STAMPS.rglob("*.png")) if TUX_STAMPS.is_dir() else []
    by_mode: dict[str, list] = {}
    for path in stamps:
        image = Image.open(path)
        if len(by_mode.setdefault(image.mode, [])) < 3 and image.mode != "RGB":
            image.load()
            by_mode[image.mode].append(image)
    return generated + [image for same in by_mode.values() for image in same]


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")  # Pillow, on some stamps
def test_low_resolution_with_the_papers_rgb_order_is_the_paper_protocols_view(tiny_open_clip):
    """A user of the transform alone makes the pixels `--protocol paper:OpenCLIP` feeds a model:
    the paper's RGB order (convert after resizing) and HR route are arguments, and the transform's
    repr is the call that makes it."""
    from lr0fm.models import choose_protocol

    model = choose_protocol(lr0fm.create_model(tiny_open_clip[0]), "paper:OpenCLIP")
    images = _transparent_and_palette_images()
    differs = 0
    for r in (16, 32, "hr"):
        paper = lr0fm.LowResolution.for_model(model, r)
        assert paper.rgb_order == "last" and paper.hr_via == 224  # the authors' chain for a 64 px model
        plain = lr0fm.LowResolution(r, size=paper.size, mode=paper.mode, interpolation=paper.interpolation,
                                    rgb_order="last", hr_via=224)
        assert repr(plain) == repr(paper) and "rgb_order='last', hr_via=224" in repr(plain)
        assert repr(eval(repr(paper), {"LowResolution": lr0fm.LowResolution})) == repr(paper)
        native = lr0fm.LowResolution(r, size=paper.size, mode=paper.mode, interpolation=paper.interpolation)
        for image in images:
            want = np.asarray(paper(image))
            assert np.array_equal(np.asarray(plain(image)), want), (r, image.mode, image.size)
            differs += not np.array_equal(np.asarray(native(image)), want)
    assert differs >= len(images)  # without the paper's RGB order these images give other pixels
