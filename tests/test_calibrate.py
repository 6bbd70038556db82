"""lr0fm calibrate: measured pass speeds in RESULTS/calibration.json, and the sweep plan using them."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from lr0fm import speeds
from lr0fm.cli import main
from lr0fm.datasets import get_dataset
from lr0fm.store import ResultsStore

from conftest import make_image


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    """An imagefolder of 160 photo-sized JPEGs in 2 classes."""
    root = tmp_path_factory.mktemp("calibrate") / "jpegs"
    rng = np.random.default_rng(0)
    for i in range(160):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        make_image(rng, (200 + i % 7, 150), (255 * (i % 2), 0, 0)).save(root / f"c{i % 2}" / f"{i:03d}.jpg", quality=90)
    return root


def _config(tmp_path, folder, models):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(json.dumps({"models": models, "datasets": ["imagefolder"], "data_root": str(folder),
                               "batch_size": 8, "workers": 0, "progress": False, "resolutions": [16, 32, 64, "hr"]}))
    return cfg


def _speed(**changes) -> speeds.Speed:
    base = speeds.Speed("m", "cuda", "GPU A", "bf16", 256, 1000.0, 2.0, 500.0, 4096, 5, 15, "0.1", "2.14",
                        "2026-01-01T00:00:00Z")
    return replace(base, **changes)


@pytest.fixture()
def one_thread():
    """One torch thread: two on a loaded 2-core machine spin against each other and run a tiny
    model several times slower at random moments (docs/performance.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_calibrate_writes_the_speeds_and_the_plan_uses_them(tiny_open_clip, jpeg_folder, tmp_path, capsys,
                                                             one_thread):
    spec = tiny_open_clip[0]
    out = tmp_path / "results"
    cfg = _config(tmp_path, jpeg_folder, [spec, "clip-rn50"])
    assert main(["calibrate", str(cfg), "--models", spec, "--images", str(jpeg_folder), "--seconds", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "calibrating 1 model(s)" in printed and "pairs/s" in printed and "calibration.json" in printed
    (speed,) = speeds.load(out)
    assert (speed.model, speed.device, speed.amp, speed.batch_size, speed.resolutions, speed.workers) == \
        (spec, "cpu", "fp32", 8, 4, 0)
    assert speed.pairs_per_s > 0 and speed.fixed_s >= 0 and speed.prompts_per_s > 0 and speed.images > 16
    assert speed.device_name == speeds.device_name("cpu")

    # the estimate: the measured model from its speed, the other from its catalog GFLOPs, each labelled
    assert main(["sweep", str(cfg), "--estimate", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "speeds: 1 of 2 models measured" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("  ") and
            line.split()[0] in (spec, "clip-rn50")}
    assert rows[spec][6] == "measured" and rows["clip-rn50"][6] == "assumed"
    data = get_dataset("imagefolder", root=jpeg_folder)
    prompts = len(data.spec.classnames) * len(data.spec.templates)
    expected = speed.fixed_s + 160 * 4 / speed.pairs_per_s + prompts / speed.prompts_per_s
    assert float(rows[spec][5].replace(",", "")) == pytest.approx(expected, rel=0.05, abs=0.01)
    assert main(["sweep", str(cfg), "--estimate", "--gpus", "2", "--json", "--out", str(out)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["passes_measured"], plan["passes_assumed"]) == (1, 1)
    assert main(["sweep", str(cfg), "--estimate", "--gpus", "2", "--out", str(out)]) == 0
    assert "pass times: 1 measured (lr0fm calibrate), 1 assumed" in capsys.readouterr().out

    # the pass itself: on a shared 2-core machine only a loose bound (docs/performance.md has the
    # figures): within 3x, and half a second more for a stall of the machine
    assert main(["sweep", str(cfg), "--models", spec, "--out", str(out)]) == 0
    capsys.readouterr()
    ran = ResultsStore(out).records()[0]["run"]["seconds"]
    assert expected / 3 <= ran <= expected * 3 + 0.5, (expected, ran)


def test_calibrate_of_named_models_with_generated_images(tiny_open_clip, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["--out", str(out), "calibrate", "-m", tiny_open_clip[0], "--seconds", "0.5", "-r", "16,hr",
                 "--batch-size", "4", "--workers", "0"]) == 0
    assert "generated JPEGs" in capsys.readouterr().out
    (speed,) = speeds.load(out)
    assert (speed.resolutions, speed.batch_size) == (2, 4)
    # calibrating again replaces the entry of the same key and keeps the others
    speeds.save(out, [replace(speed, batch_size=64)])
    assert main(["--out", str(out), "calibrate", "-m", tiny_open_clip[0], "--seconds", "0.5", "-r", "16,hr",
                 "--batch-size", "4", "--workers", "0"]) == 0
    assert sorted(s.batch_size for s in speeds.load(out)) == [4, 64]


@pytest.mark.parametrize("argv,match", [
    (["calibrate"], "give the models to calibrate"),
    (["calibrate", "sweep.yaml", "-m", "x"], "give the models to calibrate"),
    (["calibrate", "-m", "x", "--models", "family=CLIP"], "--models filters a sweep config's"),
    (["calibrate", "-m", "x", "--seconds", "0"], "--seconds 0.0 must be a positive number"),
    (["calibrate", "-m", "x", "--images", "/nonexistent/folder"], "--images /nonexistent/folder: not a folder"),
    (["calibrate", "-m", "x", "--batch-size", "0"], "--batch-size 0 must be at least 1"),
])
def test_bad_input_is_one_line(argv, match, tmp_path, capsys):
    assert main(argv + ["--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err
    assert not (tmp_path / "r").exists()


def test_lookup_matches_model_device_amp_and_batch_and_prefers_this_device():
    here, elsewhere, older = (_speed(device_name="GPU A", measured_at="2026-01-02T00:00:00Z"),
                              _speed(device_name="GPU B", measured_at="2026-01-03T00:00:00Z"),
                              _speed(device_name="GPU A", batch_size=128))
    found = [here, elsewhere, older]
    assert speeds.lookup(found, "m", "cuda:1", "bf16", 256, "GPU A") is here
    assert speeds.lookup(found, "m", "cuda", "bf16", 256, None) is elsewhere  # no such device here: the latest
    assert speeds.lookup(found, "m", "cuda", "bf16", 128, "GPU B") is older
    assert speeds.lookup(found, "m", "cuda", None, 256, "GPU A") is None  # fp32 was not measured
    assert speeds.lookup(found, "other", "cuda", "bf16", 256, "GPU A") is None
    assert _speed().seconds(1000, 5, 500) == pytest.approx(2.0 + 5.0 + 1.0)


def test_the_engines_cost_units_as_the_dry_run_does(jpeg_folder, tmp_path):
    """An engine orders and splits a run's units by the estimate --dry-run --gpus N shows: a
    model's measured speed where lr0fm calibrate measured one, else its catalog GFLOPs."""
    from lr0fm.engines.lifecycle import plan_units
    from lr0fm.groups import Group
    from lr0fm.sweep import load_config
    from lr0fm.sweep_plan import DEFAULT_TFLOPS, measured_speeds, pass_estimates, plan_datasets

    out = tmp_path / "results"
    config = load_config(_config(tmp_path, jpeg_folder, ["clip-vit-b32", "clip-rn50"]))
    measured = _speed(model="clip-vit-b32", device="cpu", device_name="elsewhere", amp="fp32", batch_size=8)
    speeds.save(out, [measured])
    store = ResultsStore(out)

    data = get_dataset("imagefolder", root=jpeg_folder)
    groups = [Group(model, data) for model in config.models]
    units = plan_units(groups, config.resolutions, store, "cpu", None, config.options)
    rows = pass_estimates(config, plan_datasets(config), None, DEFAULT_TFLOPS["fp32"],
                          measured=measured_speeds(config.models, config.options, out))
    assert [r["measured"] for r in rows] == [True, False]
    assert [u.seconds for u in units] == pytest.approx([r["seconds"] for r in rows], rel=1e-9)
    prompts = len(data.spec.classnames) * len(data.spec.templates)
    assert units[0].seconds == pytest.approx(measured.seconds(160, len(config.resolutions), prompts), rel=1e-9)


def test_a_damaged_calibration_file_is_one_line(tmp_path):
    from lr0fm.errors import InputError

    speeds.path(tmp_path).write_text("{not json")
    with pytest.raises(InputError, match="calibration.json cannot be read.*rerun lr0fm calibrate"):
        speeds.load(tmp_path)
